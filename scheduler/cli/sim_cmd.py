"""`corral sim`: replay a trace on a cluster under several policies and compare them."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scheduler.cli.errors import fail
from scheduler.config import ClusterFileError, PolicyConfigError, ensure_queues, load_cluster, load_policy
from scheduler.policy.config import POLICY_NAMES, PolicyConfig
from scheduler.sim.bounds import compute_bounds
from scheduler.sim.metrics_out import MetricsWriter
from scheduler.sim.placement import PLACEMENTS, apply_placement
from scheduler.sim.records import RunResult
from scheduler.sim.report import comparison_json, comparison_table, summarize
from scheduler.sim.runner import SimObserver, SimOptions, Simulator
from scheduler.sim.traces import FORMATS, TraceError, load_trace


def sim(
    cluster: Annotated[Path, typer.Option("--cluster", "-c", help="Cluster file (YAML).")],
    trace: Annotated[Path, typer.Option("--trace", "-t", help="Workload trace (CSV/TSV, .gz ok).")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help=f"Trace format: {', '.join(FORMATS)} (default: detect)."),
    ] = None,
    policy: Annotated[
        str, typer.Option("--policy", "-p", help=f"Comma-separated policies: {','.join(POLICY_NAMES)}.")
    ] = "corral",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    events_out: Annotated[
        Path | None, typer.Option("--events-out", help="Write one JSON line per allocation span.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Draw JCT CDF, GPUs and queue length (PNG).")
    ] = None,
    policy_config: Annotated[
        Path | None, typer.Option("--policy-config", help="YAML with policy knobs (see README).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Replay only the first N jobs.", min=1)] = None,
    checkpoint_interval: Annotated[
        float, typer.Option("--checkpoint-interval", help="Seconds of work between checkpoints.", min=1)
    ] = 1800.0,
    restart_overhead: Annotated[
        float, typer.Option("--restart-overhead", help="Seconds a restarted job needs to resume.", min=0)
    ] = 60.0,
    node_mtbf: Annotated[
        float | None,
        typer.Option("--node-mtbf", help="Mean seconds between failures per node (off by default)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for node failures.")] = 0,
    metrics_out: Annotated[
        Path | None,
        typer.Option(
            "--metrics-out",
            help="Write the live exporter's metrics over virtual time (OpenMetrics text, a policy label).",
        ),
    ] = None,
    metrics_interval: Annotated[
        float,
        typer.Option("--metrics-interval", help="Virtual seconds between --metrics-out samples.", min=1),
    ] = 300.0,
    placement: Annotated[
        str,
        typer.Option(
            "--placement",
            help="nodes (gangs on whole nodes) or gpu-count (GPUs counted without node boundaries, "
            "as some published simulators do; for comparisons only).",
        ),
    ] = "nodes",
) -> None:
    """Replay a trace under each policy and print a comparison with the lower bounds."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown or not names:
        fail(
            f"--policy: unknown policy {','.join(unknown) or '(none)'}; choose from {','.join(POLICY_NAMES)}"
        )
    if output not in ("table", "json"):
        fail(f"--output: must be table or json, got {output!r}")
    if placement not in PLACEMENTS:
        fail(f"--placement: must be {' or '.join(PLACEMENTS)}, got {placement!r}")
    if fmt is not None and fmt not in FORMATS:
        fail(f"--format: unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    try:
        workload = load_trace(trace, fmt=fmt, limit=limit)
        cluster_config = ensure_queues(load_cluster(cluster), workload.queues)
        cluster_config, jobs = apply_placement(placement, cluster_config, workload.jobs)
    except (TraceError, ClusterFileError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}")
    try:
        base = load_policy(policy_config)
    except PolicyConfigError as exc:
        fail(f"--policy-config: {exc}")
    # Before hours of simulation: every output can be written.
    for option, path in (("--events-out", events_out), ("--plot", plot), ("--metrics-out", metrics_out)):
        if path is not None:
            _check_writable(option, path)
    options = SimOptions(
        checkpoint_interval_s=checkpoint_interval,
        restart_overhead_s=restart_overhead,
        node_mtbf_s=node_mtbf,
        seed=seed,
        record_spans=events_out is not None,
    )
    if metrics_out is None:
        results = [_replay(cluster_config, jobs, base, name, options) for name in names]
    else:
        try:
            with MetricsWriter(metrics_out, metrics_interval) as writer:
                results = [
                    _replay(cluster_config, jobs, base, name, options, writer.recorder(name))
                    for name in names
                ]
        except OSError as exc:
            fail(f"--metrics-out: {exc.filename or metrics_out}: {exc.strerror}")
    summaries = {r.policy: summarize(r) for r in results}
    rejected = set().union(*(set(r.rejected) for r in results))
    bounds = compute_bounds([j for j in jobs if j.job_id not in rejected], cluster_config.total_gpus)
    if output == "json":
        print(json.dumps(comparison_json(summaries, bounds), indent=2))
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=170)  # a pipe or file: keep every column readable
        console.print(
            f"{len(workload.jobs)} jobs from {trace} ({workload.fmt}) on {cluster_config.total_gpus} GPUs, "
            + (
                "GPUs counted without node boundaries"
                if placement == "gpu-count"
                else f"{len(cluster_config.nodes)} nodes"
            )
            + f", {len(cluster_config.queues)} queues"
        )
        console.print(comparison_table(summaries, bounds))
    if events_out is not None:
        try:
            _write_events(events_out, results)
        except OSError as exc:
            fail(f"--events-out: {events_out}: {exc.strerror or exc}; choose another path")
    if metrics_out is not None:
        print(f"wrote {metrics_out}", file=sys.stderr)
    if plot is not None:
        from scheduler.sim.plot import plot_runs

        try:
            plot_runs(results, plot)
        except OSError as exc:
            fail(f"--plot: {plot}: {exc.strerror or exc}; choose another path")
        print(f"wrote {plot}", file=sys.stderr)


def _replay(
    cluster: Any,
    jobs: Any,
    base: PolicyConfig,
    name: str,
    options: SimOptions,
    observer: SimObserver | None = None,
) -> RunResult:
    config = base.model_copy(update={"name": name})
    simulator = Simulator(cluster, jobs, config, replace(options), observer)
    if not sys.stderr.isatty():
        return simulator.run()
    columns = (TextColumn(f"[bold]{name:>6}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(name, total=len(jobs))
        return simulator.run(on_progress=lambda done, total: progress.update(task, completed=done))


def _write_events(path: Path, results: list[RunResult]) -> None:
    with path.open("w") as out:
        for result in results:
            for span in result.spans:
                row = {
                    "policy": result.policy,
                    "job_id": span.job_id,
                    "start": span.start,
                    "end": span.end,
                    "end_reason": span.end_reason,
                    "allocation": [
                        {"node": n, "region": r, "rack": k, "gpu_type": t, "gpus": list(g)}
                        for n, r, k, t, g in span.allocation
                    ],
                }
                out.write(json.dumps(row) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def _check_writable(option: str, path: Path) -> None:
    """Fail (one line) unless a file can be written at `path`: its folder exists and is writable."""
    if path.is_dir():
        fail(f"{option}: {path} is a directory; give a file name")
    folder = path.parent
    if not folder.is_dir():
        fail(f"{option}: {folder} is not a directory; create it or choose another path")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        fail(f"{option}: {path} is not writable; choose another path")
