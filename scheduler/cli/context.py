"""Where the CLI finds the API: moved to scheduler.client.context (the Python client reads the same
context file without importing the CLI); re-exported here for the CLI's modules."""

from __future__ import annotations

from scheduler.client.context import (
    DEFAULT_API_URL,
    Context,
    ContextError,
    context_path,
    corral_home,
    file_token,
    load_context,
    save_context,
)

__all__ = [
    "DEFAULT_API_URL",
    "Context",
    "ContextError",
    "context_path",
    "corral_home",
    "file_token",
    "load_context",
    "save_context",
]
