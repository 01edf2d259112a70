"""`corral check` as a library call: read, find the violations, confirm the ones that may be in flight.

A finding that compares the store with Ray (`Violation.settles`) can be an operation in flight: a
STARTING job whose placement group is being created, a placement group being removed just after
its job ended, a node's stop after a change of region, Ray's free GPUs sampled a moment late, the
queue usage the controller writes with its next cycle. Such a finding is reported only if a second,
complete reading `settle_s` later (store snapshot and Ray again) finds it again (same kind, same
ids); the others are returned as `cleared`. Findings of the store alone are final at once: every
committed snapshot must hold them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from scheduler.check.invariants import RayState, StoreState, Violation, find_violations

SETTLE_S = 3.0


@dataclass(frozen=True, slots=True)
class Report:
    violations: Sequence[Violation]
    cleared: Sequence[Violation] = ()  # seen once, gone on the second reading (in flight)
    ray_checked: bool = True
    active_jobs: int = 0
    readings: int = 1
    notes: Sequence[str] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "violations": [v.to_json() for v in self.violations],
            "cleared_on_recheck": [v.to_json() for v in self.cleared],
            "ray_checked": self.ray_checked,
            "active_jobs": self.active_jobs,
            "readings": self.readings,
            "notes": list(self.notes),
        }


def check(
    read_store: Callable[[], StoreState],
    read_ray: Callable[[], RayState] | None,
    *,
    settle_s: float = SETTLE_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Report:
    """Read (store first, then Ray), find the violations, and confirm those that may be in flight."""
    store = read_store()
    first = find_violations(store, read_ray() if read_ray is not None else None)
    final = [v for v in first if not v.settles]
    suspicious = [v for v in first if v.settles]
    if not suspicious:
        return Report(final, (), read_ray is not None, len(store.jobs))
    sleep(settle_s)
    store = read_store()
    second = find_violations(store, read_ray() if read_ray is not None else None)
    again = {v.key: v for v in second if v.settles}
    confirmed = [again[v.key] for v in suspicious if v.key in again]
    cleared = [v for v in suspicious if v.key not in again]
    seen = {v.key for v in final}
    final += [v for v in second if not v.settles and v.key not in seen]  # committed meanwhile
    return Report(final + confirmed, cleared, read_ray is not None, len(store.jobs), readings=2)


def run_check(
    store: object,
    *,
    ray: bool = True,
    acknowledged: Sequence[str] = (),
    settle_s: float = SETTLE_S,
) -> Report:
    """Check a live install: `store` a Store; with `ray`, through this process's Ray connection
    (ray.init(address, namespace="corral") done by the caller). `acknowledged`: job ids the API
    acknowledged (e.g. a chaos harness' log), each of which must be in the store."""
    from scheduler.check.read import read_ray, read_store
    from scheduler.store.store import Store

    assert isinstance(store, Store)
    return check(lambda: read_store(store, acknowledged), read_ray if ray else None, settle_s=settle_s)
