"""Simulation speed: replay a 100,000-job trace on a 10,000-GPU cluster (target ≤ 60 s wall),
and the contended full Philly trace on 448 GPUs under corral and las (target ≤ 120 s each).

    .venv/bin/python bench/sim.py [--jobs 100000] [--gpus 10000] [--policy corral] [--load 0.9]
                                  [--contended-jobs N] [--json] [--profile N]

The trace is built from the real Philly trace (examples/traces/philly_jobs.csv.gz, 82,247 jobs,
read with scheduler.sim.traces.load_trace), so job sizes, durations, queues (the 15 virtual
clusters) and the burstiness of arrivals are real:
  1. Repeat: job i of the bench trace is Philly job i mod 82,247 (in arrival order), copy
     k = i // 82,247 arriving k periods later, where a period is the Philly span plus one mean
     inter-arrival gap (so copies do not overlap); copies get ids `<id>-r<k>`. With --jobs below
     82,247 this is simply the first --jobs Philly arrivals.
  2. Rescale submit times: multiply every submit time by one factor so that the average offered
     load, total work / (arrival span × cluster GPUs) = Σ duration·GPUs / (span × --gpus), equals
     --load (0.9). Durations are not touched; only the gaps between arrivals shrink or grow, by the
     same factor everywhere, so the weekly bursts of the real trace stay (some stretches ask for
     more than the cluster, others for much less).
The cluster is one region ("sim") of V100 nodes, 8 GPUs each, in racks of 32 nodes (the last rack
holds the remainder); the trace's queues get equal quotas in one cohort (ensure_queues).

wall_s is the wall time of Simulator.run() (time.perf_counter), as RunResult.wall_s reports it;
setup_s (reading the trace, building cluster and simulator) is reported apart.

Contended: the whole Philly trace, as read by `corral sim`, on examples/philly-cluster.yaml
(56 nodes × 8 V100 = 448 GPUs, the 15 VCs as 15 queues in one cohort) with default knobs, once
under corral and once under las: `contended_philly_corral_s` and `contended_philly_las_s` are
the wall times of Simulator.run(), with its CPU time (`_cpu_s`, what a busy shared machine
leaves comparable), cycles, average JCT and preemptions beside them
(`corral sim -c examples/philly-cluster.yaml -t examples/traces/philly_jobs.csv.gz -p corral`
replays the same). `--contended-jobs N` replays only the first N jobs (0: skip both).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import REPO, emit_json, fmt_s

from scheduler.compiled import build_name
from scheduler.config.cluster_file import ensure_queues, load_cluster, parse_cluster
from scheduler.model.queue import ClusterConfig
from scheduler.policy.config import POLICY_NAMES, PolicyConfig
from scheduler.sim.records import TraceJob
from scheduler.sim.report import allocation_rate, summarize
from scheduler.sim.runner import SimOptions, Simulator
from scheduler.sim.traces import load_trace

PHILLY = REPO / "examples" / "traces" / "philly_jobs.csv.gz"
PHILLY_CLUSTER = REPO / "examples" / "philly-cluster.yaml"
CONTENDED_POLICIES = ("corral", "las")
RACK_NODES = 32
GPUS_PER_NODE = 8
GPU_TYPE = "V100"


def repeat_trace(base: Sequence[TraceJob], jobs: int) -> list[TraceJob]:
    """`base` (in arrival order) repeated to `jobs` jobs, copy k one period later, ids `<id>-r<k>`."""
    n = len(base)
    span = base[-1].submit_time - base[0].submit_time
    period = span + (span / (n - 1) if n > 1 else 1.0)
    out: list[TraceJob] = []
    for i in range(jobs):
        k, j = divmod(i, n)
        job = base[j]
        job_id = job.job_id if k == 0 else f"{job.job_id}-r{k}"
        out.append(
            TraceJob(job_id, job.submit_time - base[0].submit_time + k * period, job.duration, job.spec)
        )
    return out


def offered_load(trace: Sequence[TraceJob], total_gpus: int) -> float:
    """ρ = λ·E[work] / capacity = Σ duration·GPUs / (arrival span × total GPUs)."""
    span = trace[-1].submit_time - trace[0].submit_time
    work = math.fsum(j.duration * j.spec.gpus for j in trace)
    return work / (span * total_gpus) if span > 0 else math.inf


def rescale(trace: Sequence[TraceJob], total_gpus: int, load: float) -> tuple[list[TraceJob], float]:
    """(trace, factor): every submit time × one factor, so that offered_load(trace) == `load`."""
    factor = offered_load(trace, total_gpus) / load
    return [TraceJob(j.job_id, j.submit_time * factor, j.duration, j.spec) for j in trace], factor


def bench_cluster(gpus: int) -> ClusterConfig:
    nodes, per_node = gpus // GPUS_PER_NODE, GPUS_PER_NODE
    racks = []
    for r in range(math.ceil(nodes / RACK_NODES)):
        count = min(RACK_NODES, nodes - r * RACK_NODES)
        rack = f"{{name: r{r:04d}, nodes: {count}, gpu_type: {GPU_TYPE}, gpus_per_node: {per_node}}}"
        racks.append(f"      - {rack}")
    text = "regions:\n  - name: sim\n    racks:\n" + "\n".join(racks) + "\n"
    return parse_cluster(text, source="<bench cluster>")


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_start = time.perf_counter()
    base = load_trace(args.trace).jobs
    jobs, scale = rescale(repeat_trace(base, args.jobs), args.gpus, args.load)
    cluster = ensure_queues(bench_cluster(args.gpus), sorted({j.spec.queue for j in jobs}))
    sim = Simulator(cluster, jobs, PolicyConfig(name=args.policy), SimOptions())
    setup_s = time.perf_counter() - setup_start

    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    result = sim.run()
    if profiler is not None:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.profile)
        sys.stderr.write(out.getvalue())

    summary = summarize(result)
    return {
        "jobs": len(jobs),
        "gpus": cluster.total_gpus,
        "policy": args.policy,
        "decision_code": build_name(),
        "wall_s": result.wall_s,
        "setup_s": setup_s,
        "cycles": result.cycles,
        "avg_jct_s": summary.avg_jct_s,
        "p99_jct_s": summary.p99_jct_s,
        "avg_wait_s": summary.avg_wait_s,
        "makespan_s": summary.makespan_s,
        "gpu_allocation_rate": summary.gpu_allocation_rate,
        "arrival_window_s": jobs[-1].submit_time,
        "arrival_window_allocation_rate": allocation_rate(
            result.timeline, cluster.total_gpus, 0.0, jobs[-1].submit_time
        ),
        "finished": summary.jobs,
        "rejected": summary.rejected,
        "preemptions": summary.preemptions,
        "offered_load": offered_load(jobs, cluster.total_gpus),
        "time_scale": scale,
        "trace": str(Path(args.trace)),
        "profiled": bool(args.profile),
    }


def contended(jobs: int | None) -> dict[str, Any]:
    """The full (or first `jobs`) Philly trace on the 448-GPU Philly cluster, under corral and las."""
    workload = load_trace(PHILLY, limit=jobs)
    cluster = ensure_queues(load_cluster(PHILLY_CLUSTER), workload.queues)
    out: dict[str, Any] = {
        "contended_philly_jobs": len(workload.jobs),
        "contended_philly_gpus": cluster.total_gpus,
    }
    for policy in CONTENDED_POLICIES:
        sim = Simulator(cluster, list(workload.jobs), PolicyConfig(name=policy), SimOptions())
        cpu = time.process_time()
        result = sim.run()
        summary = summarize(result)
        out[f"contended_philly_{policy}_s"] = result.wall_s
        out[f"contended_philly_{policy}_cpu_s"] = time.process_time() - cpu  # apart from the neighbours
        out[f"contended_philly_{policy}_cycles"] = result.cycles
        out[f"contended_philly_{policy}_avg_jct_s"] = summary.avg_jct_s
        out[f"contended_philly_{policy}_preemptions"] = summary.preemptions
    return out


def report(r: dict[str, Any]) -> None:
    verdict = "OK" if r["wall_s"] <= 60.0 else "MISSED"
    print(
        f"Replay of {r['jobs']} jobs (Philly-based, offered load {r['offered_load']:.0%}, "
        f"submit times ×{r['time_scale']:.4f}) on {r['gpus']} {GPU_TYPE} GPUs, policy {r['policy']}"
        + (" (under cProfile)" if r["profiled"] else "")
        + f"; decision code {r['decision_code']}"
    )
    print(f"  setup                {fmt_s(r['setup_s'])}")
    print(f"  simulation wall      {fmt_s(r['wall_s'])}  {verdict} (target ≤ 60 s)")
    print(f"  cycles               {r['cycles']}  ({fmt_s(r['wall_s'] / max(1, r['cycles']))} per cycle)")
    print(f"  finished / rejected  {r['finished']} / {r['rejected']}, {r['preemptions']} preemptions")
    print(
        f"  avg JCT              {r['avg_jct_s']:.0f} s (p99 {r['p99_jct_s']:.0f} s), "
        f"avg wait {r['avg_wait_s']:.0f} s"
    )
    print(
        f"  GPU allocation rate  {r['gpu_allocation_rate']:.1%} over the makespan ({r['makespan_s']:.0f} s), "
        f"{r['arrival_window_allocation_rate']:.1%} while jobs arrive ({r['arrival_window_s']:.0f} s)"
    )
    if "contended_philly_jobs" in r:
        print(
            f"Contended: {r['contended_philly_jobs']} Philly jobs on {r['contended_philly_gpus']} V100 GPUs "
            "(examples/philly-cluster.yaml)"
        )
        for policy in CONTENDED_POLICIES:
            wall = r[f"contended_philly_{policy}_s"]
            verdict = "OK" if wall <= 120.0 else "MISSED"
            print(
                f"  {policy:<6} wall          {fmt_s(wall)}  {verdict} (target ≤ 120 s), "
                f"CPU {fmt_s(r[f'contended_philly_{policy}_cpu_s'])}, "
                f"{r[f'contended_philly_{policy}_cycles']} cycles, "
                f"avg JCT {r[f'contended_philly_{policy}_avg_jct_s'] / 3600:.1f} h, "
                f"{r[f'contended_philly_{policy}_preemptions']} preemptions"
            )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--gpus", type=int, default=10_000, help="a multiple of 8")
    p.add_argument("--policy", choices=POLICY_NAMES, default="corral")
    p.add_argument("--load", type=float, default=0.9, help="average offered load (fraction of the GPUs)")
    p.add_argument("--trace", default=str(PHILLY), help="a trace load_trace reads (default: Philly)")
    p.add_argument(
        "--contended-jobs",
        type=int,
        default=None,
        metavar="N",
        help="contended replays: only the first N Philly jobs (default: all; 0: skip them)",
    )
    p.add_argument("--json", action="store_true", help="print only JSON")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile the run; top N to stderr")
    args = p.parse_args(argv)
    if args.jobs < 2:
        p.error("--jobs must be ≥ 2")
    if args.gpus < GPUS_PER_NODE or args.gpus % GPUS_PER_NODE:
        p.error(f"--gpus must be a positive multiple of {GPUS_PER_NODE}")
    if args.load <= 0:
        p.error("--load must be > 0")
    if args.contended_jobs is not None and args.contended_jobs < 0:
        p.error("--contended-jobs must be ≥ 0")
    result = run(args)
    if args.contended_jobs != 0:
        result.update(contended(args.contended_jobs))
    if args.json:
        emit_json(result)
    else:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
