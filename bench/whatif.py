"""How long does `corral whatif` take on a deep queue? (target: under 30 s for 10,000 pending jobs)

    python bench/whatif.py [--pending 10000] [--horizon-h 24] [--set policy.backfill=false ...]

The live state is built from the real Philly trace (examples/traces/philly_jobs.csv.gz) on the
Philly cluster (examples/philly-cluster.yaml: 56 x 8 V100, the trace's 15 virtual clusters as
queues): every GPU busy with trace jobs that started over the last 12 hours, `--pending` further
trace jobs waiting (submitted over the last 24 hours, no time limits, as in the trace), runtimes
learned from 2,000 more that finished. It then does what the CLI does after `GET /v1/state`:
the server's encoding (JSON) and the CLI's decoding of that state, the arrivals of the last horizon
again, and the two replays of `--horizon-h` hours (the current configuration and the changed one),
side by side in two processes and deciding at most once per `--cycle-interval` (60 s), as the CLI.
Wall and CPU seconds are both reported: on a shared machine the wall time includes waiting for a
core, the CPU time is what the same work takes on an idle one.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.api.state_routes import encode
from scheduler.config.cluster_file import ensure_queues, load_cluster
from scheduler.forecast.arrivals import recent_arrivals
from scheduler.forecast.replay import ForecastOptions
from scheduler.forecast.runtimes import RuntimeModel
from scheduler.forecast.settings import apply_settings, parse_setting
from scheduler.forecast.whatif import WHATIF_CYCLE_INTERVAL_S, WhatIfInputs, compare
from scheduler.forecast.wire import decode_state
from scheduler.model.job import Job, JobState
from scheduler.model.plan import Allocation, NodeAllocation
from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.sim.traces import load_trace
from scheduler.view import ReplayInputs, SchedulingState

REPO = Path(__file__).resolve().parents[1]
NOW = 10_000_000.0


def live_state(pending_jobs: int) -> tuple[ReplayInputs, list[list[object]], list[Job]]:
    cluster = load_cluster(REPO / "examples" / "philly-cluster.yaml")
    trace = load_trace(REPO / "examples" / "traces" / "philly_jobs.csv.gz", limit=pending_jobs + 6000).jobs
    cluster = ensure_queues(cluster, sorted({j.spec.queue for j in trace}))
    free = {n.id: list(range(n.gpus)) for n in cluster.nodes}
    nodes = {n.id: n for n in cluster.nodes}
    running: list[RunningJob] = []
    rest = list(trace)
    i = 0
    while i < len(rest) and sum(len(g) for g in free.values()) > 0 and len(running) < 2000:
        t = rest[i]
        spec = t.spec
        hosts = [n for n, g in free.items() if len(g) >= spec.gpus_per_node][: spec.nodes]
        if len(hosts) == spec.nodes:
            parts = []
            for n in hosts:
                parts.append(NodeAllocation(node=n, gpus=tuple(free[n][: spec.gpus_per_node])))
                free[n] = free[n][spec.gpus_per_node :]
            started = NOW - (i % 720) * 60.0
            job = Job(
                id=t.job_id,
                spec=spec,
                team=spec.queue,
                state=JobState.RUNNING,
                submitted_at=started - 60,
                started_at=started,
                first_started_at=started,
            )
            alloc = Allocation(nodes=tuple(parts))
            running.append(RunningJob(job, alloc, nodes[hosts[0]].pool, started))
            rest.pop(i)
        else:
            i += 1
    waiting = rest[:pending_jobs]
    pending = [
        Job(id=t.job_id, spec=t.spec, team=t.spec.queue, submitted_at=NOW - 86400 + k * 86400 / len(waiting))
        for k, t in enumerate(waiting)
    ]
    finished = [[t.spec.queue, t.duration] for t in rest[pending_jobs : pending_jobs + 2000]]
    state = SchedulingState(
        NOW, cluster.nodes, tuple(pending), tuple(running), {q.name: 0.0 for q in cluster.queues}
    )
    return ReplayInputs(state, cluster, PolicyConfig()), finished, [*pending, *(r.job for r in running)]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the forked replay, once it has ended
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pending", type=int, default=10_000)
    p.add_argument("--horizon-h", type=float, default=24.0)
    p.add_argument("--set", dest="sets", action="append", default=[])
    p.add_argument(
        "--cycle-interval",
        type=float,
        default=WHATIF_CYCLE_INTERVAL_S,
        help="decide at most once per this many replayed seconds (as `corral whatif`; 0: every event)",
    )
    p.add_argument("--table", action="store_true", help="also print the comparison as `corral whatif` does")
    p.add_argument("--plot", default="", help="also draw it as `corral whatif --plot` does (PNG)")
    args = p.parse_args(argv)
    sets = args.sets or ["policy.backfill=false", "queues.ee9e8c.quota.V100=64"]
    t0 = time.perf_counter()
    inputs, finished, recent = live_state(args.pending)
    built = time.perf_counter() - t0
    t0, cpu0 = time.perf_counter(), time.process_time()
    wire = json.dumps(encode(inputs, finished, [j.model_dump(mode="json") for j in recent]))
    live = decode_state(json.loads(wire))
    transfer, transfer_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    horizon = args.horizon_h * 3600
    t0, cpu0 = time.perf_counter(), time.process_time() + _children_cpu()
    settings = [parse_setting(s) for s in sets]
    cluster, policy = apply_settings(live.cluster, live.policy, settings)
    runtimes = RuntimeModel.learn(live.finished, use_time_limits=False)
    arrivals = recent_arrivals(live.recent, live.state.time, horizon, runtimes)
    result = compare(
        WhatIfInputs(live.state, live.cluster, live.policy, runtimes, arrivals),
        cluster,
        policy,
        dict(settings),
        horizon,
        ForecastOptions(cycle_interval_s=args.cycle_interval),
        parallel=True,  # as `corral whatif`
    )
    replays = time.perf_counter() - t0
    replays_cpu = time.process_time() + _children_cpu() - cpu0  # both replays' processes
    out = {
        "pending": len(live.state.pending),
        "running": len(live.state.running),
        "arrivals": len(arrivals),
        "gpus": live.cluster.total_gpus,
        "horizon_h": args.horizon_h,
        "cycle_interval_s": args.cycle_interval,
        "settings": sets,
        "state_mib": round(len(wire) / 2**20, 1),
        "build_s": round(built, 2),
        "encode_decode_s": round(transfer, 2),
        "encode_decode_cpu_s": round(transfer_cpu, 2),
        "baseline_replay_s": result["baseline"]["replay_s"],
        "changed_replay_s": result["changed"]["replay_s"],
        "whatif_total_s": round(transfer + replays, 2),
        "replays_cpu_s": round(replays_cpu, 2),  # CPU time: what the wall time is on an idle core
        "target_s": 30,
        "jobs_followed": result["baseline"]["cluster"]["jobs"],
        "started_baseline": result["baseline"]["cluster"]["started"],
        "started_changed": result["changed"]["cluster"]["started"],
    }
    print(json.dumps(out, indent=2))
    if args.table:
        from scheduler.cli.output import stdout
        from scheduler.cli.whatif_cmd import comparison_table

        stdout.print(comparison_table(result))
    if args.plot:
        from scheduler.forecast.plot import plot_whatif

        plot_whatif(result, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
