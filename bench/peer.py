"""Against a published peer on its own input: the Tiresias simulator's Philly setup.

    .venv/bin/python bench/peer.py [--policies fifo,las,corral] [--costs default,cheap]
                                   [--jobs 3000] [--json] [--trace-out peer.csv]

The input (issue 12): the first 3,000 jobs of the Philly trace as published with Pollux
(examples/traces/philly_jobs.csv.gz, byte-identical to shared/traces/pollux/philly_jobs.csv),
in a stable sort by submit time (ties keep file order), on one region of 32 nodes × 4 V100 =
128 GPUs (examples/tiresias-peer-cluster.yaml, Tiresias' simulator/n32g4.csv), one queue. A job
of more than 4 GPUs takes whole 4-GPU nodes (8 → 2 × 4, 16 → 4 × 4).

Each policy runs under two cost settings:
  default  30-min checkpoints, 60 s restart overhead (Corral's defaults: preemption costs work);
  cheap    1 s checkpoints, no restart overhead (close to the peer, whose preemption is free;
           the 30 s grace period a preempted job keeps its GPUs for remains).

`--placement gpu-count` replays under the peer's placement (GPUs counted without node
boundaries, scheduler/sim/placement.py); the default, `nodes`, places gangs on whole nodes.

`--trace-out` writes the input as a Corral CSV, so that `corral sim -c
examples/tiresias-peer-cluster.yaml -t peer.csv` replays the same jobs.

The published numbers (SymbioticLab/Tiresias simulator/, commit 959f9b0, Python 3, placement
`count`: GPUs counted without node boundaries, preemption free) are in PEER below.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from _common import REPO, emit_json

from scheduler.config.cluster_file import ensure_queues, load_cluster
from scheduler.model.queue import ClusterConfig
from scheduler.policy.config import POLICY_NAMES, PolicyConfig
from scheduler.sim.placement import PLACEMENTS, Placement, apply_placement
from scheduler.sim.records import TraceJob
from scheduler.sim.report import summarize
from scheduler.sim.runner import SimOptions, Simulator
from scheduler.sim.traces import load_trace

PHILLY = REPO / "examples" / "traces" / "philly_jobs.csv.gz"
CLUSTER = REPO / "examples" / "tiresias-peer-cluster.yaml"
GPUS_PER_NODE = 4
QUEUE = "default"

# Average JCT (s) of the published Tiresias simulator on this input (issue 12).
PEER: dict[str, float] = {
    "fifo": 2_499_415.0,
    "Tiresias-L (dlas-gpu)": 90_047.0,
    "Tiresias-G (gittins)": 87_218.0,
}
TIRESIAS_L = PEER["Tiresias-L (dlas-gpu)"]

COSTS: dict[str, dict[str, float]] = {
    "default": {"checkpoint_interval_s": 1800.0, "restart_overhead_s": 60.0},
    "cheap": {"checkpoint_interval_s": 1.0, "restart_overhead_s": 0.0},
}


def _row(job: TraceJob) -> int:
    return int(job.job_id.rsplit("-", 1)[1])


def peer_trace(path: Path = PHILLY, jobs: int = 3000) -> list[TraceJob]:
    """The first `jobs` Philly jobs by submit time (ties in file order), shaped for 4-GPU nodes."""
    everything = sorted(load_trace(path, fmt="philly").jobs, key=lambda j: (j.submit_time, _row(j)))
    first = everything[:jobs]
    t0 = first[0].submit_time
    out: list[TraceJob] = []
    for j in first:
        gpus = j.spec.gpus
        nodes = 1 if gpus <= GPUS_PER_NODE else gpus // GPUS_PER_NODE
        spec = j.spec.model_copy(update={"queue": QUEUE, "nodes": nodes, "gpus_per_node": gpus // nodes})
        out.append(TraceJob(j.job_id, j.submit_time - t0, j.duration, spec))
    return out


def write_trace(jobs: Sequence[TraceJob], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job_id", "submit_time", "duration", "gpus", "queue", "nodes", "gpus_per_node"])
        for j in jobs:
            s = j.spec
            w.writerow(
                [
                    j.job_id,
                    f"{j.submit_time:.0f}",
                    f"{j.duration:.0f}",
                    s.gpus,
                    s.queue,
                    s.nodes,
                    s.gpus_per_node,
                ]
            )


def run_one(
    cluster: ClusterConfig, jobs: Sequence[TraceJob], policy: str, costs: str, placement: Placement
) -> dict[str, Any]:
    options = SimOptions(**COSTS[costs])
    replay_cluster, replay_jobs = apply_placement(placement, cluster, jobs)
    config = PolicyConfig(name=policy)  # type: ignore[arg-type]
    result = Simulator(replay_cluster, replay_jobs, config, options).run()
    s = summarize(result)
    return {
        "policy": policy,
        "costs": costs,
        "placement": placement,
        "avg_jct_s": s.avg_jct_s,
        "p99_jct_s": s.p99_jct_s,
        "avg_wait_s": s.avg_wait_s,
        "makespan_s": s.makespan_s,
        "preemptions": s.preemptions,
        "jobs": s.jobs,
        "rejected": s.rejected,
        "vs_tiresias_l": s.avg_jct_s / TIRESIAS_L,
        "wall_s": result.wall_s,
    }


def report(rows: Sequence[dict[str, Any]]) -> None:
    print("Peer input: the first 3,000 Philly jobs on 32 × 4 V100 (128 GPUs), one queue; average JCT")
    head = f"{'scheduler':<30} {'preemption':<10} {'placement':<10} {'avg JCT':>10} {'/ Tiresias-L':>12}"
    print(head + f" {'preemptions':>11}")
    for name, jct in PEER.items():
        print(
            f"{'Tiresias sim: ' + name:<30} {'free':<10} {'gpu-count':<10} {jct:>10,.0f} "
            f"{jct / TIRESIAS_L:>11.2f}×"
        )
    for r in rows:
        print(
            f"{'corral sim: ' + r['policy']:<30} {r['costs']:<10} {r['placement']:<10} "
            f"{r['avg_jct_s']:>10,.0f} "
            f"{r['vs_tiresias_l']:>11.2f}× {r['preemptions']:>11,}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policies", default="fifo,las,corral", help=f"comma-separated: {','.join(POLICY_NAMES)}")
    p.add_argument("--costs", default="default,cheap", help=f"comma-separated: {','.join(COSTS)}")
    p.add_argument(
        "--placement",
        default="nodes",
        help=f"comma-separated: {','.join(PLACEMENTS)} (see scheduler/sim/placement.py)",
    )
    p.add_argument("--jobs", type=int, default=3000)
    p.add_argument("--source", type=Path, default=PHILLY, help="the Pollux Philly table (.csv or .csv.gz)")
    p.add_argument("--trace-out", type=Path, help="also write the input as a Corral CSV")
    p.add_argument("--json", action="store_true", help="print only JSON")
    args = p.parse_args(argv)
    policies = [x for x in args.policies.split(",") if x]
    costs = [x for x in args.costs.split(",") if x]
    placements = [x for x in args.placement.split(",") if x]
    for name in placements:
        if name not in PLACEMENTS:
            p.error(f"--placement: unknown placement {name!r}")
    for name in policies:
        if name not in POLICY_NAMES:
            p.error(f"--policies: unknown policy {name!r}")
    for name in costs:
        if name not in COSTS:
            p.error(f"--costs: unknown setting {name!r}")
    jobs = peer_trace(args.source, args.jobs)
    if args.trace_out is not None:
        write_trace(jobs, args.trace_out)
    cluster = ensure_queues(load_cluster(CLUSTER), [QUEUE])
    rows = [
        run_one(cluster, jobs, policy, c, cast(Placement, where))
        for where in placements
        for c in costs
        for policy in policies
    ]
    if args.json:
        emit_json({"input": {"jobs": len(jobs), "gpus": cluster.total_gpus}, "peer": PEER, "runs": rows})
    else:
        report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
