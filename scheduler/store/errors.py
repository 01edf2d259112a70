"""What the store raises: one base class, so callers can catch every store failure at once."""

from __future__ import annotations


class StoreError(Exception):
    pass


class JobNotFound(StoreError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class IdempotencyConflict(StoreError):
    """The (team, idempotency key) already names a job with a different spec."""

    def __init__(self, team: str, key: str, job_id: str) -> None:
        super().__init__(f"idempotency key {key!r} of team {team!r} names job {job_id}, with another spec")
        self.team = team
        self.key = key
        self.job_id = job_id


class AllocationConflict(StoreError):
    """A batch would give one GPU to two jobs (invariant 1); the whole batch was rolled back."""

    def __init__(self, node: str, gpu: int, job_ids: tuple[str, ...]) -> None:
        holders = " and ".join(job_ids) if job_ids else "another job"
        super().__init__(f"GPU {gpu} of node {node} would be held by job {holders}")
        self.node = node
        self.gpu = gpu
        self.job_ids = job_ids


class LockLost(StoreError):
    """The controller lock (or lease) is no longer this process's: another controller may be
    writing, so this one must stop writing at once."""


class Overloaded(StoreError):
    """More submissions wait for the store than it may queue: refuse (429) instead of piling up."""

    def __init__(self, pending: int) -> None:
        super().__init__(f"{pending} submissions are waiting for the store")
        self.pending = pending


def unavailable(exc: BaseException) -> str | None:
    """If `exc` means the database cannot be reached or used right now (down, restarting, locked,
    the connection pool exhausted), a one-line reason without secrets; else None."""
    import sqlalchemy.exc as sa_exc  # the errors module stays importable without SQLAlchemy's engine

    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ):
        orig = getattr(exc, "orig", None)
        text = " ".join(str(orig if orig is not None else exc).split())
        return (text[:160] or type(exc).__name__).split(" [SQL:")[0]
    return None
