"""`corral whatif`: the live queue replayed under the current and a changed configuration.

The CLI reads the controller's last scheduling state once (`GET /v1/state`, admins, read-only) and
runs both replays here, in its own process (scheduler/forecast/whatif.py): the live cluster is
never asked to do anything, and its controller never waits for a replay.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from scheduler.cli.client import client
from scheduler.cli.errors import fail
from scheduler.cli.output import duration, safe, stdout
from scheduler.cli.spec_input import parse_duration
from scheduler.forecast.arrivals import recent_arrivals, trace_arrivals
from scheduler.forecast.replay import ForecastOptions
from scheduler.forecast.runtimes import RuntimeModel
from scheduler.forecast.settings import SettingError, apply_settings, parse_setting
from scheduler.forecast.whatif import WHATIF_CYCLE_INTERVAL_S, WhatIfInputs, compare
from scheduler.forecast.wire import StateFormatError, decode_state
from scheduler.sim.traces import TraceError, load_trace

SHOWN = (
    ("wait p50", "wait_p50_s", "s"),
    ("wait p95", "wait_p95_s", "s"),
    ("avg JCT", "avg_jct_s", "s"),
    ("GPUs", "gpu_allocation", "n"),
    ("preempt", "preemptions", "n"),
    ("fair share", "fair_share_ratio", "r"),
)


def whatif(
    set_: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="KEY=VALUE as in the cluster file, e.g. queues.research.quota.H100=128 or "
            "policy.backfill=false (repeatable).",
        ),
    ],
    trace: Annotated[
        Path | None,
        typer.Option(
            "--trace", help="Arrivals from this trace (times from now) instead of the last horizon's."
        ),
    ] = None,
    horizon: Annotated[
        str, typer.Option("--horizon", help="How far to replay, e.g. 24h, 90m (default 24h).")
    ] = "24h",
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw the comparison per queue (PNG).")] = None,
    cycle_interval: Annotated[
        float,
        typer.Option(
            "--cycle-interval",
            help="The replays decide at most once per this many seconds of replayed time "
            f"(default {WHATIF_CYCLE_INTERVAL_S:g}; 0: after every event, slower on deep queues).",
        ),
    ] = WHATIF_CYCLE_INTERVAL_S,
) -> None:
    """What if the configuration changed? Replays the live queue under both (nothing live changes)."""
    if output not in ("table", "json"):
        fail(f"--output: must be table or json (got {safe(output)[:40]!r})")
    try:
        horizon_s = parse_duration(horizon)
    except ValueError as exc:
        fail(f"--horizon: {exc}")
    if not horizon_s or horizon_s <= 0:
        fail("--horizon: must be a positive duration, e.g. 24h")
    if not 0 <= cycle_interval <= 3600:
        fail(f"--cycle-interval: must be between 0 and 3600 seconds (got {cycle_interval:g})")
    try:
        settings = [parse_setting(item) for item in set_]
    except SettingError as exc:
        fail(str(exc))
    trace_jobs = None
    if trace is not None:
        try:
            trace_jobs = load_trace(trace).jobs
        except TraceError as exc:
            fail(f"--trace: {exc}")
    data = client().get("/v1/state", recent_s=0 if trace is not None else horizon_s)
    try:
        live = decode_state(data)
    except StateFormatError as exc:
        fail(str(exc), 1)
    try:
        cluster, policy = apply_settings(live.cluster, live.policy, settings)
    except SettingError as exc:
        fail(str(exc))
    runtimes = RuntimeModel.learn(live.finished, use_time_limits=False)
    now = live.state.time
    if trace_jobs is not None:
        arrivals = trace_arrivals(trace_jobs, now)
    else:
        arrivals = recent_arrivals(live.recent, now, horizon_s, runtimes)
    inputs = WhatIfInputs(live.state, live.cluster, live.policy, runtimes, arrivals)
    options = ForecastOptions(cycle_interval_s=cycle_interval)
    result = compare(inputs, cluster, policy, dict(settings), horizon_s, options, parallel=True)
    if output == "json":
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        stdout.print(comparison_table(result))
        head = result["baseline"]["cluster"]
        print(
            f"replayed {duration(horizon_s)} from now: {len(live.state.pending)} pending, "
            f"{len(live.state.running)} running, {len(arrivals)} arrivals; {head['jobs']} jobs followed",
            file=sys.stderr,
        )
    if plot is not None:
        from scheduler.forecast.plot import plot_whatif  # matplotlib: only when asked

        plot_whatif(result, plot)


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "s":
        return _dur(float(value))
    if kind == "r":
        return f"{value:.2f}"
    return f"{value:g}"


def _delta(value: Any, kind: str) -> str:
    if value is None or value == 0:
        return "="
    sign = "+" if value > 0 else "-"
    return sign + _cell(abs(value), kind)


def _dur(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def comparison_table(result: dict[str, Any]) -> Table:
    """Per queue and for the cluster: each metric as `current → changed (difference)`."""
    base, changed, diff = result["baseline"], result["changed"], result["diff"]
    title = "what if " + ", ".join(f"{k}={json.dumps(v)}" for k, v in changed["settings"].items())
    table = Table(title=safe(title), box=None, header_style="bold", pad_edge=False, show_edge=False)
    table.add_column("QUEUE")
    for header, _, _ in SHOWN:
        table.add_column(header.upper(), justify="right")
    rows = [
        (q, base["queues"].get(q, {}), changed["queues"].get(q, {}), diff["queues"][q])
        for q in diff["queues"]
    ]
    rows.append(("(cluster)", base["cluster"], changed["cluster"], diff["cluster"]))
    for name, b, c, d in rows:
        cells = [
            f"{_cell(b.get(key), kind)} → {_cell(c.get(key), kind)} ({_delta(d.get(key), kind)})"
            for _, key, kind in SHOWN
        ]
        table.add_row(Text(safe(name)), *(Text(x) for x in cells))
    return table
