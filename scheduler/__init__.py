"""Corral: a scheduler for GPU training clusters.

    from scheduler import Client, NotFound, PermissionDenied, InvalidSpec, Unreachable

The client is imported on first use, so `import scheduler` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from scheduler.client import (
        Client,
        CorralError,
        InvalidSpec,
        Job,
        JobArray,
        JobSpec,
        JobState,
        NotFound,
        PermissionDenied,
        ServerError,
        Unreachable,
    )

__all__ = [
    "Client",
    "CorralError",
    "InvalidSpec",
    "Job",
    "JobArray",
    "JobSpec",
    "JobState",
    "NotFound",
    "PermissionDenied",
    "ServerError",
    "Unreachable",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        import scheduler.client

        return getattr(scheduler.client, name)
    raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
