"""What if the configuration changed? The live state replayed forward under two configurations.

Both replays start from the same SchedulingState (the controller's last cycle) and see the same
arrivals (the jobs submitted in the last `horizon_s`, again, shifted `horizon_s` later — "the next
day looks like the last one" — or a trace), with the same runtimes: what finished jobs of the
queue took (the median; capped by the job's time limit; scheduler/forecast/runtimes.py). Each
replay runs `horizon_s` of virtual time; per queue it reports, for the jobs pending at the start
and those arriving in the window:

* `wait_p50_s`, `wait_p95_s`: submit → first start; a job still waiting at the end counts with
  what it has waited so far (a lower bound; `waiting_at_end` says how many);
* `avg_jct_s`: submit → finish of the jobs that finished in the window (`finished` of them);
* `gpu_allocation`: GPUs the queue's jobs (the running ones too) held on average over the window;
* `preemptions`: its jobs preempted in the window;
* `fair_share_ratio`: its share of the GPU-time allocated in the window over its entitlement, its
  nominal quota's share of all quotas (its weight's share when no queue has quota): 1 = its share,
  above 1 = it borrowed.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from scheduler.forecast.replay import ForecastOptions, seeded_simulator
from scheduler.forecast.runtimes import RuntimeModel
from scheduler.model.queue import ClusterConfig
from scheduler.policy.config import PolicyConfig
from scheduler.sim.records import TraceJob
from scheduler.sim.runner import Simulator
from scheduler.view import SchedulingState

__all__ = ["METRICS", "WHATIF_CYCLE_INTERVAL_S", "WhatIfInputs", "compare", "replay_window"]

# The replays decide at most once a minute of replayed time (events in between wait for the next
# cycle): on a deep queue a cycle per event costs minutes, and over hours of horizon a minute's
# delay per start moves waits and JCTs by well under a percent (README, What if?).
WHATIF_CYCLE_INTERVAL_S = 60.0

METRICS = (
    "jobs",
    "started",
    "waiting_at_end",
    "wait_p50_s",
    "wait_p95_s",
    "finished",
    "avg_jct_s",
    "gpu_allocation",
    "preemptions",
    "fair_share_ratio",
)


@dataclass(frozen=True, slots=True)
class WhatIfInputs:
    state: SchedulingState
    cluster: ClusterConfig
    policy: PolicyConfig
    runtimes: RuntimeModel  # learned from finished jobs (learned first, capped by time limits)
    arrivals: Sequence[TraceJob]  # submitted at or after state.time


def compare(
    inputs: WhatIfInputs,
    cluster: ClusterConfig,
    policy: PolicyConfig,
    settings: Mapping[str, Any],
    horizon_s: float,
    options: ForecastOptions | None = None,
    parallel: bool = False,
) -> dict[str, Any]:
    """{"baseline": ..., "changed": ..., "diff": ...}: per queue and for the whole cluster.

    `parallel`: the changed replay runs in a forked child process while this one runs the baseline
    (the CLI: a deep what-if takes half the time on two cores; the replays are deterministic, so
    the result is the same). Without fork (not Linux/macOS), one after the other."""
    if parallel and "fork" in multiprocessing.get_all_start_methods():
        baseline, changed = _both_at_once(inputs, cluster, policy, horizon_s, options)
    else:
        baseline = replay_window(inputs, inputs.cluster, inputs.policy, horizon_s, options)
        changed = replay_window(inputs, cluster, policy, horizon_s, options)
    changed["settings"] = dict(settings)
    diff = {
        "queues": {
            q: _diff(baseline["queues"].get(q, {}), changed["queues"].get(q, {}))
            for q in sorted(set(baseline["queues"]) | set(changed["queues"]))
        },
        "cluster": _diff(baseline["cluster"], changed["cluster"]),
    }
    return {"baseline": baseline, "changed": changed, "diff": diff}


_INHERITED: tuple[WhatIfInputs, ClusterConfig, PolicyConfig, float, ForecastOptions | None] | None = None


def _changed_in_child() -> dict[str, Any]:
    assert _INHERITED is not None  # set before the fork: the child inherits it, nothing is pickled
    return replay_window(*_INHERITED)


def _both_at_once(
    inputs: WhatIfInputs,
    cluster: ClusterConfig,
    policy: PolicyConfig,
    horizon_s: float,
    options: ForecastOptions | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    global _INHERITED
    _INHERITED = (inputs, cluster, policy, horizon_s, options)
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
            changed = pool.submit(_changed_in_child)  # the worker forks here, holding _INHERITED
            baseline = replay_window(inputs, inputs.cluster, inputs.policy, horizon_s, options)
            return baseline, changed.result()
    finally:
        _INHERITED = None


def replay_window(
    inputs: WhatIfInputs,
    cluster: ClusterConfig,
    policy: PolicyConfig,
    horizon_s: float,
    options: ForecastOptions | None = None,
) -> dict[str, Any]:
    """One replay of `horizon_s` under this configuration, summarised (see the module's docstring)."""
    wall = time.perf_counter()
    state = inputs.state
    start, end = state.time, state.time + horizon_s
    opts = options or ForecastOptions()
    queues = {q.name for q in cluster.queues}
    pending = [j for j in state.pending if j.spec.queue in queues]
    sim = seeded_simulator(
        state, cluster, policy, inputs.runtimes, pending, opts, arrivals=inputs.arrivals, record_spans=True
    )
    sim.run(until=end)
    followed = [j.id for j in pending] + [a.job_id for a in inputs.arrivals if a.submit_time <= end]
    out = _summary(sim, followed, cluster, start, end)
    out["replay_s"] = round(time.perf_counter() - wall, 3)
    out["cycle_interval_s"] = opts.cycle_interval_s
    return out


def _summary(
    sim: Simulator, followed: Sequence[str], cluster: ClusterConfig, start: float, end: float
) -> dict[str, Any]:
    finished = {r.job_id: r for r in sim.result.records}
    waits: dict[str, list[float]] = {}
    jcts: dict[str, list[float]] = {}
    started: dict[str, int] = {}
    for job_id in followed:
        job = sim.jobs.get(job_id)
        if job is None:
            continue
        q = job.spec.queue
        first = sim.first_start(job_id)
        waits.setdefault(q, []).append((first if first is not None else end) - job.submitted_at)
        started[q] = started.get(q, 0) + (first is not None)
        rec = finished.get(job_id)
        if rec is not None and rec.finish_time <= end:
            jcts.setdefault(q, []).append(rec.finish_time - rec.submit_time)
    gpu_s: dict[str, float] = {}
    preempted: dict[str, int] = {}
    for span in sim.result.spans:
        q = sim.jobs[span.job_id].spec.queue
        gpus = sum(len(n[4]) for n in span.allocation)
        gpu_s[q] = gpu_s.get(q, 0.0) + gpus * max(0.0, min(span.end, end) - max(span.start, start))
        preempted[q] = preempted.get(q, 0) + (span.end_reason == "preempted")
    for r in sim.running.values():  # still holding GPUs at the end
        gpu_s[r.queue] = gpu_s.get(r.queue, 0.0) + r.gpus * max(0.0, end - max(r.started_at, start))
    window = max(end - start, 1e-9)
    total_gpu_s = sum(gpu_s.values())
    entitled = _entitlements(cluster)
    queues: dict[str, dict[str, Any]] = {}
    for q in sorted(set(waits) | set(gpu_s)):
        w = sorted(waits.get(q, []))
        share = gpu_s.get(q, 0.0) / total_gpu_s if total_gpu_s > 0 else 0.0
        queues[q] = {
            "jobs": len(w),
            "started": started.get(q, 0),
            "waiting_at_end": len(w) - started.get(q, 0),
            "wait_p50_s": _pct(w, 0.5),
            "wait_p95_s": _pct(w, 0.95),
            "finished": len(jcts.get(q, [])),
            "avg_jct_s": _mean(jcts.get(q, [])),
            "gpu_allocation": round(gpu_s.get(q, 0.0) / window, 2),
            "preemptions": preempted.get(q, 0),
            "fair_share_ratio": round(share / entitled[q], 3) if entitled.get(q) else None,
        }
    all_waits = sorted(x for w in waits.values() for x in w)
    all_jcts = [x for j in jcts.values() for x in j]
    total = {
        "jobs": len(all_waits),
        "started": sum(started.values()),
        "waiting_at_end": len(all_waits) - sum(started.values()),
        "wait_p50_s": _pct(all_waits, 0.5),
        "wait_p95_s": _pct(all_waits, 0.95),
        "finished": len(all_jcts),
        "avg_jct_s": _mean(all_jcts),
        "gpu_allocation": round(total_gpu_s / window, 2),
        "gpu_allocation_rate": round(total_gpu_s / window / max(1, cluster.total_gpus), 4),
        "preemptions": sum(preempted.values()),
    }
    return {"horizon_s": end - start, "queues": queues, "cluster": total}


def _entitlements(cluster: ClusterConfig) -> dict[str, float]:
    quotas = {q.name: float(sum(q.quota.values())) for q in cluster.queues}
    total = sum(quotas.values())
    if total > 0:
        return {q: v / total for q, v in quotas.items()}
    weights = {q.name: q.weight for q in cluster.queues}
    return {q: w / sum(weights.values()) for q, w in weights.items()}


def _diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in b:
        x, y = a.get(key), b.get(key)
        if isinstance(x, int | float) and isinstance(y, int | float):
            out[key] = round(y - x, 4)
        elif key in a or key in b:
            out[key] = None
    return out


def _pct(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 1)


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None
