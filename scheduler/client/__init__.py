"""The Corral Python client: `Client` and its typed errors (also exported by `scheduler`)."""

from __future__ import annotations

from scheduler.client.client import Client
from scheduler.client.context import ContextError
from scheduler.client.errors import (
    BadApiUrl,
    CorralError,
    InvalidSpec,
    NotFound,
    PermissionDenied,
    ServerError,
    Unreachable,
)
from scheduler.client.models import Job, JobArray, JobState, Node, NodeAllocation, Queue
from scheduler.model.job import JobSpec

__all__ = [
    "BadApiUrl",
    "Client",
    "ContextError",
    "CorralError",
    "InvalidSpec",
    "Job",
    "JobArray",
    "JobSpec",
    "JobState",
    "Node",
    "NodeAllocation",
    "NotFound",
    "PermissionDenied",
    "Queue",
    "ServerError",
    "Unreachable",
]
