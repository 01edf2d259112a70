"""Fault injection for end-to-end and chaos tests: inert unless CORRAL_FAULTS is set.

Some failures of real parts cannot be produced on demand from outside (a Ray node whose raylet is
alive but never places a bundle). `CORRAL_FAULTS` names them, comma-separated, `name` or
`name=value`; the real code path then meets a real failure (a placement group that really never
becomes ready), so what is tested is the handling, not a stand-in:

    unplaceable_node=NODE   bundles for NODE ask for a node label no node has: starts there time
                            out in Ray, as on a node that cannot start anything
    rank_dies_on_node=NODE  a start's worker actor on NODE is killed as soon as it is created,
                            before it answers (its process OOM-killed, its node gone meanwhile)
    crash_at=POINT[@N]      the process kills itself (SIGKILL) the Nth time (default 1st) it
                            reaches the named crash point — a controller crash at the worst moment:
        after_commit            the step that places a job is committed, its start not yet issued
        after_placement_group   the job's placement group exists, its ranks not yet running
        mid_preemption          a stop (preemption, cancel, timeout) sent SIGTERM, not yet released

`corral serve` logs every active fault at start as a warning. `CORRAL_FAULTS_FILE=PATH` adds the
faults written in that file while the process runs (read at each crash point): a chaos harness arms
a crash point in whichever replica leads by writing the file; the process that crashes removes it
first, so its successor is not armed too.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping

__all__ = ["CRASH_POINTS", "KNOWN", "active", "armed", "crash_point", "parse"]

KNOWN = frozenset({"unplaceable_node", "rank_dies_on_node", "crash_at"})
CRASH_POINTS = frozenset({"after_commit", "after_placement_group", "mid_preemption"})

log = logging.getLogger("corral.faults")
_hits: dict[str, int] = {}
_hits_lock = threading.Lock()


def parse(text: str) -> dict[str, str]:
    """`a=1,b` → {"a": "1", "b": ""}; ValueError naming an unknown fault."""
    faults: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in KNOWN:
            raise ValueError(f"CORRAL_FAULTS: unknown fault {name!r}: use one of {', '.join(sorted(KNOWN))}")
        if name == "crash_at":
            _crash_spec(value)  # validates it
        faults[name] = value
    return faults


def _crash_spec(value: str) -> tuple[str, int]:
    point, _, nth = value.partition("@")
    if point not in CRASH_POINTS:
        raise ValueError(
            f"CORRAL_FAULTS: crash_at: unknown crash point {point!r}: "
            f"use one of {', '.join(sorted(CRASH_POINTS))}"
        )
    if nth and (not nth.isdigit() or int(nth) < 1):
        raise ValueError(f"CORRAL_FAULTS: crash_at={value}: N in POINT@N must be a whole number ≥ 1")
    return point, int(nth or 1)


def armed(point: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `crash_at` names this crash point (cheap: the common case is no faults at all)."""
    if not environ.get("CORRAL_FAULTS") and not environ.get("CORRAL_FAULTS_FILE"):
        return False
    value = active(environ).get("crash_at")
    return value is not None and _crash_spec(value)[0] == point


def crash_point(point: str, environ: Mapping[str, str] = os.environ) -> None:
    """Kill this process (SIGKILL: no cleanup, as a crash) if `crash_at` names `point` and this is
    its Nth arrival; otherwise do nothing."""
    if not armed(point, environ):
        return
    _, nth = _crash_spec(active(environ)["crash_at"])
    with _hits_lock:
        _hits[point] = _hits.get(point, 0) + 1
        hit = _hits[point]
    if hit == nth:
        path = environ.get("CORRAL_FAULTS_FILE")
        if path:
            try:
                os.unlink(path)  # disarm: the replica taking over must not crash at once too
            except OSError:
                return  # another process crashed on it already: this one lives
        log.critical("fault injection: crashing at %s (arrival %d)", point, hit)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def active(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The faults this process injects (empty in normal operation)."""
    faults = parse(environ.get("CORRAL_FAULTS", ""))
    path = environ.get("CORRAL_FAULTS_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                faults.update(parse(f.read()))
        except (OSError, ValueError):
            pass  # no file (nothing armed now), or one being written: read it next time
    return faults
