"""How good are start-time estimates? Replay public traces, estimate at each submit, compare.

    python bench/estimates.py [--samples 60] [--out bench/estimates.json]

For each scenario the trace is replayed once in the simulator under the `corral` policy: that run
is the truth (each job's actual first start). At the submit of every sampled job (evenly spread
over the trace: `--samples` per scenario, all jobs when the trace is shorter), the simulator's
state at that moment — nodes, running jobs, the pending queue, fair-share usage; never the future
arrivals nor the true runtimes — is handed to the estimators, and each estimate is compared with
the job's actual start:

* `corral`: scheduler/forecast, the whole policy replayed forward (fair share, backfill,
  preemption), each job running for its time limit, else the median runtime of the finished jobs
  of its queue (learned online from the jobs finished so far in the replay).
* `corral, learned`: the same replay, but runtimes learned from finished jobs first, capped by the
  time limit (only differs where jobs have time limits).
* `time limits only` (Slurm's `squeue --start`): every running job ends at its time limit, and the
  queue is served first come first served (`fifo`: a reservation in submit order), each job for
  its time limit. Without a time limit a job never ends, so nothing behind it gets an estimate.

Scenarios (the public traces carry no time limits; in the `+limits` ones each job asks for what a
user would: its runtime rounded up to 1, 2, 4, 8, 12, 24, 48, 72 or 168 h, the truth running with
those limits too):
  tiresias     examples/traces/tiresias_60_job.csv (60 jobs, 15 GPUs of work on average over its
               30 min of arrivals) on 2 x 8 GPUs
  philly       the first 2,000 jobs of examples/traces/philly_jobs.csv.gz (246 GPUs of work on
               average over their 22 days) on 32 x 8 GPUs
  demo         examples/traces/demo.csv (200 jobs, 3 queues, 2 regions, its own time limits) on
               examples/cluster.yaml

Errors are |estimate - actual start| over the sampled jobs that have an estimate; `coverage` is the
share of sampled jobs that got one. Both are given for all sampled jobs and for those that waited
(actual start > submit), where estimating is hard. Runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.config.cluster_file import ensure_queues, load_cluster, parse_cluster
from scheduler.forecast.replay import ForecastOptions, forecast_starts
from scheduler.forecast.runtimes import RuntimeModel
from scheduler.model.job import Job
from scheduler.model.queue import ClusterConfig
from scheduler.policy.config import PolicyConfig
from scheduler.sim.records import TraceJob
from scheduler.sim.runner import SimOptions, Simulator
from scheduler.sim.traces import load_trace
from scheduler.view import SchedulingState

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "examples" / "traces"
ROUND_LIMITS_H = (1, 2, 4, 8, 12, 24, 48, 72, 168)


def small_cluster(nodes: int, gpus_per_node: int) -> ClusterConfig:
    text = (
        "regions:\n  - name: sim\n    racks:\n"
        f"      - {{name: r1, nodes: {nodes}, gpu_type: V100, gpus_per_node: {gpus_per_node}}}\n"
    )
    return parse_cluster(text, source="<bench cluster>")


def with_user_limits(trace: Sequence[TraceJob]) -> list[TraceJob]:
    """Each job's time limit as a user would ask: its runtime rounded up to a round number of hours."""
    out = []
    for j in trace:
        hours = next((h for h in ROUND_LIMITS_H if h * 3600 >= j.duration), ROUND_LIMITS_H[-1])
        limit = max(hours * 3600.0, j.duration)
        out.append(
            TraceJob(j.job_id, j.submit_time, j.duration, j.spec.model_copy(update={"time_limit_s": limit}))
        )
    return out


@dataclass
class Scenario:
    name: str
    cluster: ClusterConfig
    trace: list[TraceJob]


def scenarios(philly_jobs: int, wanted: set[str]) -> list[Scenario]:
    """The scenarios named in `wanted` (all when empty), their traces read only when needed."""

    def trace(name: str) -> list[TraceJob]:
        if name == "philly":
            return list(load_trace(TRACES / "philly_jobs.csv.gz", limit=philly_jobs).jobs)
        return list(load_trace(TRACES / {"tiresias": "tiresias_60_job.csv", "demo": "demo.csv"}[name]).jobs)

    clusters = {
        "tiresias": lambda: small_cluster(2, 8),
        "philly": lambda: small_cluster(32, 8),
        "demo": lambda: load_cluster(REPO / "examples" / "cluster.yaml"),
    }
    out = []
    for name in ("tiresias", "tiresias+limits", "philly", "philly+limits", "demo"):
        if wanted and name not in wanted:
            continue
        base = name.removesuffix("+limits")
        jobs = trace(base)
        jobs = with_user_limits(jobs) if name.endswith("+limits") else jobs
        cluster = ensure_queues(clusters[base](), sorted({j.spec.queue for j in jobs}))
        out.append(Scenario(name, cluster, jobs))
    return out


Estimator = Callable[[SchedulingState, RuntimeModel, str], float | None]


def estimators(cluster: ClusterConfig, policy: PolicyConfig) -> dict[str, Estimator]:
    options = ForecastOptions(horizon_s=30 * 86400.0)
    fifo = PolicyConfig(name="fifo")

    def corral(state: SchedulingState, learned: RuntimeModel, job_id: str) -> float | None:
        return forecast_starts(state, cluster, policy, learned, options, follow=[job_id]).starts.get(job_id)

    def learned_first(state: SchedulingState, learned: RuntimeModel, job_id: str) -> float | None:
        model = RuntimeModel(learned.by_queue, learned.pooled, use_time_limits=False)
        return forecast_starts(state, cluster, policy, model, options, follow=[job_id]).starts.get(job_id)

    def limits_only(state: SchedulingState, learned: RuntimeModel, job_id: str) -> float | None:
        return forecast_starts(state, cluster, fifo, RuntimeModel(), options, follow=[job_id]).starts.get(
            job_id
        )

    return {"corral": corral, "corral, learned": learned_first, "time limits only": limits_only}


class Sampler:
    """A SimObserver: at the cycle that follows a sampled job's arrival, asks every estimator."""

    def __init__(self, sampled: set[str], estimate: dict[str, Estimator]) -> None:
        self.sampled = sampled
        self.estimate = estimate
        self.arrived: list[str] = []
        self.estimates: dict[str, dict[str, float | None]] = {name: {} for name in estimate}
        self.submits: dict[str, float] = {}
        self.estimator_s: dict[str, float] = dict.fromkeys(estimate, 0.0)

    def before(self, sim: Simulator, t: float) -> None:
        pass

    def submitted(self, job: Job) -> None:
        if job.id in self.sampled:
            self.arrived.append(job.id)
            self.submits[job.id] = job.submitted_at

    def changed(self, old: Job, new: Job) -> None:
        pass

    def cycled(self, sim: Simulator, seconds: float, plan: object) -> None:
        if not self.arrived:
            return
        now = sim.clock.now()
        state = SchedulingState(
            time=now,
            nodes=tuple(sim.nodes.values()),
            pending=tuple(j for q in sim.pending.values() for j in q),
            running=tuple(sim.running.values()),
            usage={q: u.value_at(now) for q, u in sim.usage.items()},
        )
        learned = RuntimeModel.learn(
            (r.queue, r.duration) for r in sorted(sim.result.records, key=lambda r: r.finish_time)
        )
        for job_id in self.arrived:
            for name, estimate in self.estimate.items():
                t0 = time.perf_counter()
                self.estimates[name][job_id] = estimate(state, learned, job_id)
                self.estimator_s[name] += time.perf_counter() - t0
        self.arrived = []

    def finish(self, sim: Simulator) -> None:
        pass


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


@dataclass
class Errors:
    n: int = 0
    errors: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "jobs": self.n,
            "coverage": len(self.errors) / self.n if self.n else math.nan,
            "median_abs_error_s": percentile(self.errors, 0.5),
            "p90_abs_error_s": percentile(self.errors, 0.9),
        }


def run(scenario: Scenario, samples: int) -> dict[str, Any]:
    policy = PolicyConfig()
    trace = scenario.trace
    step = max(1, len(trace) // samples)
    sampled = {j.job_id for j in trace[::step]}
    sampler = Sampler(sampled, estimators(scenario.cluster, policy))
    wall = time.perf_counter()
    result = Simulator(scenario.cluster, trace, policy, SimOptions(), observer=sampler).run()
    wall = time.perf_counter() - wall
    actual = {r.job_id: r.first_start for r in result.records}
    out: dict[str, Any] = {"trace_jobs": len(trace), "sampled": len(sampled), "wall_s": round(wall, 1)}
    for name, estimates in sampler.estimates.items():
        everyone, waited = Errors(), Errors()
        for job_id, estimate in estimates.items():
            if job_id not in actual:
                continue
            groups = [everyone] + ([waited] if actual[job_id] > sampler.submits[job_id] + 1e-6 else [])
            for g in groups:
                g.n += 1
                if estimate is not None:
                    g.errors.append(abs(estimate - actual[job_id]))
        out[name] = {
            "all": everyone.row(),
            "waited": waited.row(),
            "estimator_s": round(sampler.estimator_s[name], 1),
        }
    return out


def human(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def pct(share: float) -> str:
    return "-" if math.isnan(share) else f"{share:.0%}"


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| scenario | estimator | jobs (waited) | coverage all / waited "
        "| median abs error all / waited | p90 abs error all / waited |",
        "|---|---|---|---|---|---|",
    ]
    for scenario, res in results.items():
        for name in ("corral", "corral, learned", "time limits only"):
            a, w = res[name]["all"], res[name]["waited"]
            lines.append(
                f"| {scenario} | {name} | {a['jobs']} ({w['jobs']}) "
                f"| {pct(a['coverage'])} / {pct(w['coverage'])} | "
                f"{human(a['median_abs_error_s'])} / {human(w['median_abs_error_s'])} | "
                f"{human(a['p90_abs_error_s'])} / {human(w['p90_abs_error_s'])} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=60, help="sampled submits per scenario")
    p.add_argument("--philly-jobs", type=int, default=2000, help="first N jobs of the Philly trace")
    p.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    p.add_argument("--out", default="", help="also write the results as JSON here")
    p.add_argument("--json", action="store_true", help="print only the results as JSON")
    args = p.parse_args(argv)
    wanted = {s for s in args.only.split(",") if s}
    results: dict[str, dict[str, Any]] = {}
    for scenario in scenarios(args.philly_jobs, wanted):
        results[scenario.name] = run(scenario, args.samples)
        print(f"{scenario.name}: {json.dumps(results[scenario.name])}", file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2) if args.json else table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
