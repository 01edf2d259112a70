"""Decision equivalence: fixed, contended replays under every policy, recorded event for event.

Speed work on the simulator and the policy must not change a single decision. Each case below
replays a fixed trace on a fixed cluster under every policy and writes its whole schedule:

  - every decision of every cycle, in order: ``["place", t, job, [[node, [gpus]], ...], borrowed,
    backfilled]``, ``["preempt", t, job, for_job, rule]``, ``["reject", t, job]``;
  - every stretch a job held GPUs: ``["span", start, end, job, end_reason, [[node, [gpus]], ...]]``;
  - every job's record ``["job", job, first_start, finish, preemptions, end_state]``, the rejected
    jobs and the preemption count;
  - a digest of what every cycle tells the jobs it leaves waiting (each pending reason, the
    fallback reason, how many jobs it examined), so explanations stay the same too.

tests/sim/test_equivalence.py replays them and compares with the references in
tests/sim/equivalence/ (one gzipped JSON file per case and policy). Re-record them only when a
change of decisions is on purpose, in the commit that makes it, and say so in its message:

    .venv/bin/python -m tests.sim.equivalence            # re-record every reference
    .venv/bin/python -m tests.sim.equivalence demo las   # only those whose name contains each word

Input traces live next to the references (small Corral CSVs cut from examples/traces), so the
references do not move when a trace loader changes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.config.cluster_file import ensure_queues, load_cluster, parse_cluster
from scheduler.model.job import Job
from scheduler.model.plan import Allocation, Place, Plan, Preempt, Reject
from scheduler.model.queue import ClusterConfig
from scheduler.policy.config import POLICY_NAMES, PolicyConfig
from scheduler.sim.records import RunResult, TraceJob
from scheduler.sim.runner import SimOptions, Simulator
from scheduler.sim.traces import load_trace

HERE = Path(__file__).parent / "equivalence"
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

# 16 nodes x 8 V100 in two racks: a Philly slice from the contended weeks asks for more than this.
_SMALL_V100 = """
regions:
  - name: philly
    racks:
      - {name: r1, nodes: 8, gpu_type: V100, gpus_per_node: 8}
      - {name: r2, nodes: 8, gpu_type: V100, gpus_per_node: 8}
"""
# One node of 8: Tiresias' 60 jobs (up to 8 GPUs each) ask for 15 GPUs on average and queue.
_TINY_V100 = """
regions:
  - name: lab
    racks:
      - {name: r1, nodes: 1, gpu_type: V100, gpus_per_node: 8}
"""


@dataclass(frozen=True)
class Case:
    name: str
    trace: str  # a file in HERE (Corral CSV) or a path relative to the repository
    cluster: str  # YAML text, or a path relative to the repository
    options: SimOptions = field(default_factory=SimOptions)
    limit: int | None = None  # only the first jobs of the trace
    knobs: tuple[tuple[str, Any], ...] = ()  # policy knobs other than the defaults

    def policy(self, name: str) -> PolicyConfig:
        return PolicyConfig.model_validate({**dict(self.knobs), "name": name})

    def load(self) -> tuple[ClusterConfig, list[TraceJob]]:
        local = HERE / self.trace
        jobs = list(load_trace(local if local.exists() else REPO / self.trace, limit=self.limit).jobs)
        if "\n" in self.cluster:
            cluster = parse_cluster(self.cluster, source=f"<{self.name} cluster>")
        else:
            cluster = load_cluster(REPO / self.cluster)
        return ensure_queues(cluster, sorted({j.spec.queue for j in jobs})), jobs


CASES: tuple[Case, ...] = (
    # Regions, GPU types, cohorts with borrowing limits, priority classes, time limits: backfill
    # reservations, reclaim and priority preemption.
    Case("demo", "examples/traces/demo.csv", "examples/cluster.yaml"),
    # The same with random node failures: requeues after node loss, capacity rebuilt on return.
    Case(
        "demo_failures",
        "examples/traces/demo.csv",
        "examples/cluster.yaml",
        SimOptions(node_mtbf_s=40_000.0, node_repair_s=1800.0, seed=3),
        limit=100,
    ),
    Case("tiresias60", "examples/traces/tiresias_60_job.csv", _TINY_V100),
    # 500 Philly jobs (from number 60,500 in arrival order: 11 queues, 49 of 8 GPUs or more)
    # on 128 GPUs, 3.3x what the cluster holds while they arrive: deep backlog, service
    # preemption, reclaim, reservations for gangs.
    Case("philly_slice", "philly_60500_500.csv", _SMALL_V100),
    # The same slice with cheap preemption, as the Tiresias comparison runs.
    Case(
        "philly_slice_cheap",
        "philly_60500_500.csv",
        _SMALL_V100,
        SimOptions(checkpoint_interval_s=1.0, restart_overhead_s=0.0),
    ),
    # A short scan and few preemptors per cycle: the backlog goes past what a cycle examines.
    Case(
        "philly_slice_shallow",
        "philly_60500_500.csv",
        _SMALL_V100,
        knobs=(("scan_depth", 40), ("max_preemptors_per_cycle", 2), ("max_victims", 8)),
    ),
)


class _DecisionLog:
    """A SimObserver that keeps every decision of every cycle, with the cycle's time, and a digest
    of the reasons each cycle gives the jobs that wait."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.reasons = hashlib.sha256()

    def before(self, sim: Simulator, t: float) -> None:
        pass

    def submitted(self, job: Job) -> None:
        pass

    def changed(self, old: Job, new: Job) -> None:
        pass

    def cycled(self, sim: Simulator, seconds: float, plan: Plan) -> None:
        now = sim.clock.now()
        waiting = sorted([job, r.code.value, r.detail] for job, r in plan.pending.items())
        fallback = [plan.fallback.code.value, plan.fallback.detail]
        self.reasons.update(json.dumps([now, plan.examined, fallback, waiting]).encode())
        for d in plan.decisions:
            if isinstance(d, Place):
                self.rows.append(
                    ["place", now, d.job_id, _alloc(d.allocation), d.borrowed_gpus, d.backfilled]
                )
            elif isinstance(d, Preempt):
                self.rows.append(["preempt", now, d.job_id, d.for_job, d.rule])
            elif isinstance(d, Reject):
                self.rows.append(["reject", now, d.job_id])

    def finish(self, sim: Simulator) -> None:
        pass


def _alloc(allocation: Allocation) -> list[list[Any]]:
    return [[na.node, list(na.gpus)] for na in allocation.nodes]


def schedule(case: Case, policy: str) -> dict[str, Any]:
    """Replay `case` under `policy`; its whole schedule as plain JSON data."""
    cluster, jobs = case.load()
    log = _DecisionLog()
    options = SimOptions(**{**_fields(case.options), "record_spans": True, "validate": False})
    result = Simulator(cluster, jobs, case.policy(policy), options, log).run()
    return _as_data(result, log)


def unobserved_schedule(case: Case, policy: str) -> dict[str, Any]:
    """Replay `case` as `corral sim` and the benchmarks do, with no observer: nobody reads why jobs
    wait, so cycles pass over the jobs whose outcome they know and stop once none left can change
    anything (policy/group_walk.py, cycle._Settled). The parts of the schedule this run has: the
    spans, the job records, the rejections and the preemption count."""
    cluster, jobs = case.load()
    options = SimOptions(**{**_fields(case.options), "record_spans": True, "validate": False})
    result = Simulator(cluster, jobs, case.policy(policy), options).run()
    data = _as_data(result, _DecisionLog())
    return {part: data[part] for part in UNOBSERVED_PARTS}


UNOBSERVED_PARTS = ("spans", "jobs", "rejected", "preemptions")


def _fields(options: SimOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in SimOptions.__dataclass_fields__}


def _as_data(result: RunResult, log: _DecisionLog) -> dict[str, Any]:
    spans = [
        ["span", s.start, s.end, s.job_id, s.end_reason, [[n, list(g)] for n, _, _, _, g in s.allocation]]
        for s in result.spans
    ]
    jobs = [
        ["job", r.job_id, r.first_start, r.finish_time, r.preemptions, r.end_state] for r in result.records
    ]
    return {
        "preemptions": result.preemptions,
        "rejected": list(result.rejected),
        "decisions": log.rows,
        "reasons_sha256": log.reasons.hexdigest(),
        "spans": spans,
        "jobs": jobs,
    }


def reference_path(case: Case, policy: str) -> Path:
    return HERE / f"{case.name}.{policy}.json.gz"


def read_reference(case: Case, policy: str) -> dict[str, Any]:
    with gzip.open(reference_path(case, policy), "rt") as f:
        data: dict[str, Any] = json.load(f)
    return data


def write_reference(case: Case, policy: str, data: dict[str, Any]) -> None:
    # mtime=0: the same schedule gives the same bytes, so git shows only real changes.
    raw = json.dumps(data, separators=(",", ":")).encode()
    with reference_path(case, policy).open("wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(raw)


def record(words: Sequence[str] = ()) -> None:
    """Re-record the references whose `<case>.<policy>` name contains every word."""
    for case in CASES:
        for policy in POLICY_NAMES:
            name = f"{case.name}.{policy}"
            if all(w in name for w in words):
                data = schedule(case, policy)
                write_reference(case, policy, data)
                print(f"recorded {name}: {len(data['decisions'])} decisions, {len(data['spans'])} spans")


if __name__ == "__main__":
    record(sys.argv[1:])
