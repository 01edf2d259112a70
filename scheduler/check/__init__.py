"""`corral check`: recompute from the store and from Ray what must always hold, and name each
violation with the ids involved. Pure checks in invariants.py, reading in read.py, the second
reading that tells an operation in flight from a violation in run.py."""

from scheduler.check.invariants import (
    KINDS,
    RayActor,
    RayGroup,
    RayState,
    StoreState,
    Violation,
    find_violations,
)
from scheduler.check.run import Report, check, run_check

__all__ = [
    "KINDS",
    "RayActor",
    "RayGroup",
    "RayState",
    "Report",
    "StoreState",
    "Violation",
    "check",
    "find_violations",
    "run_check",
]
