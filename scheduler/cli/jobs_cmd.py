"""Job commands: submit, jobs, describe, cancel, logs, history (all through the HTTP API)."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from scheduler.cli import arrays
from scheduler.cli.client import ApiClient, client
from scheduler.cli.errors import EXIT_JOB_FAILED, EXIT_OK, fail
from scheduler.cli.output import (
    Column,
    OutputOpt,
    check_format,
    duration,
    emit,
    note,
    render_table,
    safe,
    stdout,
)
from scheduler.cli.spec_input import SpecInput
from scheduler.model.job import JobSpec

__all__ = ["cancel", "describe", "history", "jobs", "logs", "submit"]

WAIT_POLL_S = 0.5
WATCH_S = 2.0
MAX_LIMIT = 1_000_000
_TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}


# --- submit ---------------------------------------------------------------------------------------


def _split_args(args: list[str]) -> tuple[Path | None, list[str]]:
    """(job file, command): everything after `--` is the command."""
    argv = sys.argv[1:]
    after = len(argv) - argv.index("--") - 1 if "--" in argv else 0
    if after and argv[-after:] == args[-after:]:
        files, command = args[:-after], args[-after:]
    else:
        files, command = args, []
    if len(files) > 1:
        fail(f"give one job file, then the command after --: corral submit JOB.yaml -- {' '.join(files[1:])}")
    return (Path(files[0]) if files else None), command


def _build_spec(
    args: list[str],
    flags: dict[str, Any],
    gpus: int | None,
    time_limit: str | None,
    env: list[str],
    dry_run: bool = False,
) -> JobSpec:
    job_file, command = _split_args(args)
    spec_in = SpecInput.from_file(job_file) if job_file else SpecInput()
    for key, value in flags.items():
        spec_in.set_flag(key, value)
    if command:
        spec_in.set_flag("command", command)
    if env:
        merged = dict(spec_in.data.get("env") or {}) if isinstance(spec_in.data.get("env"), dict) else {}
        for item in env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                fail(f"--env: {item!r} is not NAME=VALUE — write e.g. --env WANDB_MODE=offline")
            merged[name] = value
        spec_in.set_flag("env", merged)
    if dry_run and not command and not spec_in.data.get("command"):
        # A dry run asks where the shape would go: it never runs, so no command is needed.
        spec_in.set_flag("command", ["true"])
    spec_in.resolve_time(time_limit)
    spec_in.resolve_gpus(gpus)
    return spec_in.build()


def job_path(job_id: str, suffix: str = "") -> str:
    """The URL path of a job: the id percent-encoded, so no argument can reach another route."""
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def _describe_allocation(allocation: list[dict[str, Any]] | None) -> str:
    if not allocation:
        return "-"
    return ", ".join(f"{a['node']} (GPUs {','.join(str(g) for g in a['gpus'])})" for a in allocation)


def _wait(api: ApiClient, job_id: str) -> dict[str, Any]:
    try:
        while True:
            job: dict[str, Any] = api.get(job_path(job_id))
            if job["state"] in _TERMINAL:
                return job
            time.sleep(WAIT_POLL_S)
    except KeyboardInterrupt:
        note(f"stopped waiting; job {job_id} goes on (`corral cancel {job_id}` stops it)")
        raise SystemExit(130) from None


def _finish(job: dict[str, Any]) -> None:
    code = job.get("exit_code")
    detail = f" (exit {code})" if code is not None else ""
    note(f"job {job['id']} {job['state']}{detail}")
    raise SystemExit(EXIT_OK if job["state"] == "SUCCEEDED" else EXIT_JOB_FAILED)


def _stream_logs(api: ApiClient, job_id: str, follow: bool) -> None:
    out = sys.stdout.buffer
    try:
        for chunk in api.stream(job_path(job_id, "/logs"), follow=str(follow).lower()):
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:  # `corral logs 7 | head` closed the pipe: not an error
        raise SystemExit(0) from None


def submit(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[JOB.yaml] [-- CMD ...]: a job file and/or the command after --."),
    ] = None,
    gpus: Annotated[
        int | None, typer.Option("--gpus", "-g", help="Total GPUs (≤ 8: one node; more: whole 8-GPU nodes).")
    ] = None,
    nodes: Annotated[int | None, typer.Option("--nodes", "-N", help="Nodes of a multi-node gang.")] = None,
    gpus_per_node: Annotated[int | None, typer.Option("--gpus-per-node", help="GPUs on each node.")] = None,
    gpu_type: Annotated[
        str | None, typer.Option("--gpu-type", help="GPU model, e.g. H100 (default any).")
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue", help="Queue (default: default).")] = None,
    priority: Annotated[
        str | None, typer.Option("--priority", "-p", help="Priority class: low, normal, high.")
    ] = None,
    time_limit: Annotated[
        str | None, typer.Option("--time", "-t", help="Time limit: 90s, 30m, 2h, 1h30m, HH:MM:SS.")
    ] = None,
    region: Annotated[str | None, typer.Option("--region", help="Data region the job must run in.")] = None,
    checkpoint_dir: Annotated[
        str | None, typer.Option("--checkpoint-dir", help="Checkpoint directory.")
    ] = None,
    grace: Annotated[
        float | None, typer.Option("--grace", help="Seconds to checkpoint when preempted.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Job name.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE (repeatable).")] = None,
    array: Annotated[
        str | None,
        typer.Option("--array", "-a", help="A job array, one job per index: 0-15, 1,3,5-9:2, 0-15%4 (cap)."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Submitting again with this key returns the same job."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Wait until the job ends; exit 1 unless it succeeded.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the job's log, then exit like --wait.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the job id.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the spec and show where it would go now.")
    ] = False,
) -> None:
    """Submit a job from a YAML file and/or a command: corral submit [JOB.yaml] [--gpus N] -- CMD ..."""
    flags = {
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "gpu_type": gpu_type,
        "queue": queue,
        "priority": priority,
        "data_region": region,
        "checkpoint_dir": checkpoint_dir,
        "grace_period_s": grace,
        "name": name,
        "idempotency_key": idempotency_key,
        "array": array,
    }
    spec = _build_spec(list(args or []), flags, gpus, time_limit, list(env or []), dry_run)
    body = spec.model_dump(mode="json", exclude_defaults=True)
    api = client()
    if dry_run:
        result = api.post("/v1/jobs", body, params={"dry_run": "true"}).json()
        _print_dry_run(spec, result)
        return
    headers = {}
    if spec.idempotency_key is None and api.ctx.fallback_urls:
        # Several controllers: a submission that times out on one is sent to the next under the
        # same key, so it can never make two jobs.
        headers["Idempotency-Key"] = f"cli-{uuid.uuid4().hex}"
    if spec.array is not None and follow:
        fail("--follow: follows one job — for an array use --wait, or `corral logs ARRAY_INDEX -f`")
    response = api.post("/v1/jobs", body, headers=headers)
    if spec.array is not None:
        arrays.submitted(api, response.json(), response.status_code == 200, quiet, wait)
        return
    job = response.json()
    print(job["id"], flush=True)
    if not quiet:
        again = response.status_code == 200
        what = "already submitted as job" if again else "submitted job"
        note(f"{what} {job['id']} to queue {job['queue']}")
    if follow:
        _stream_logs(api, job["id"], follow=True)
        _finish(_wait(api, job["id"]))
    if wait:
        _finish(_wait(api, job["id"]))


def _print_dry_run(spec: JobSpec, result: dict[str, Any]) -> None:
    shape = f"{spec.nodes}×{spec.gpus_per_node}" if spec.nodes > 1 else f"{spec.gpus_per_node}"
    head = f"dry run: {shape} GPUs in queue {result['queue']}"
    if result.get("rejected"):
        fail(f"{head}: would be rejected: {safe(result['rejected'])}")
    if result.get("allocation"):
        print(safe(f"{head}: would start now on {_describe_allocation(result['allocation'])}"))
    else:
        print(safe(f"{head}: would wait: {result.get('pending_reason') or 'Priority'}"))


# --- jobs -----------------------------------------------------------------------------------------


def reason(job: dict[str, Any]) -> str:
    """Slurm's NODELIST(REASON): why it waits (and the first change that would start it now),
    where it runs, or how it ended."""
    state = job["state"]
    if state == "PENDING":
        why = str(job.get("pending_reason") or "-")
        suggestions = job.get("suggestions") or []
        return f"{why} (fits now with {suggestions[0]['flag']})" if suggestions else why
    if state in ("STARTING", "RUNNING", "PREEMPTING"):
        return ",".join(a["node"] for a in job.get("allocation") or []) or "-"
    if job.get("exit_code") is not None:
        return f"exit {job['exit_code']}"
    return {"CANCELLED": "cancelled", "TIMEOUT": "time limit reached"}.get(state, str(state).lower())


JOB_COLUMNS: list[Column] = [
    ("ID", lambda j: str(j["id"])),
    ("NAME", lambda j: str(j["name"])),
    ("QUEUE", lambda j: str(j["queue"])),
    ("STATE", lambda j: str(j["state"])),
    ("GPUS", lambda j: str(j["gpus"])),
    ("NODES", lambda j: str(j["nodes"])),
    ("TIME", lambda j: duration(j.get("run_time_s"))),
    ("REASON", reason),
]


def start(job: dict[str, Any]) -> str:
    """squeue --start's START_TIME: a pending job's estimated start (N/A: unknown), else its start."""
    if job["state"] == "PENDING":
        estimate = job.get("estimated_start")
        return "N/A" if estimate is None else _when(estimate)
    return _when(job.get("started_at"))


WIDE_COLUMNS: list[Column] = [
    *JOB_COLUMNS[:-1],
    ("PRIORITY", lambda j: str(j["priority"])),
    ("START", start),
    JOB_COLUMNS[-1],
]


def jobs(
    all_jobs: Annotated[bool, typer.Option("--all", "-a", help="Also finished jobs.")] = False,
    queue: Annotated[str | None, typer.Option("--queue", help="Only this queue.")] = None,
    state: Annotated[
        list[str] | None, typer.Option("--state", "-s", help="Only this state (repeatable).")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every 2 s until Ctrl-C.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most this many jobs.")] = 1000,
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Output format: table, wide (adds PRIORITY and START), json or yaml."
        ),
    ] = "table",
) -> None:
    """List your jobs (not finished ones unless --all), as Slurm's squeue."""
    wide = output.lower() == "wide"
    fmt = "table" if wide else check_format(output)
    columns = WIDE_COLUMNS if wide else JOB_COLUMNS
    if watch and fmt != "table":
        fail("--watch: works with -o table only")
    _check_limit(limit)
    api = client()
    states = [s.strip().upper() for item in state or [] for s in item.split(",") if s.strip()]
    more = False

    def fetch() -> list[dict[str, Any]]:
        nonlocal more
        rows, more = api.pages(
            "/v1/jobs", limit, all="true" if all_jobs else None, queue=queue, state=states or None
        )
        return rows

    if not watch:
        rows = fetch()
        emit(rows, fmt, lambda: render_table(arrays.fold(rows), columns))
        if more:
            note(
                f"showing the first {len(rows)} jobs; more exist: raise --limit, or filter with "
                "--state or --queue"
            )
        return
    try:
        with Live(render_table(arrays.fold(fetch()), columns), console=stdout, auto_refresh=False) as live:
            while True:
                time.sleep(WATCH_S)
                live.update(render_table(arrays.fold(fetch()), columns), refresh=True)
    except KeyboardInterrupt:
        return


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        fail(f"--limit: must be 1 to {MAX_LIMIT} (got {limit})")


# --- describe -------------------------------------------------------------------------------------


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _last_preemption(history: list[dict[str, Any]]) -> str:
    """Why the job was last preempted (rule and work lost), and by which job when the caller may
    know it (an admin, or the team of that job: the API sends `related_job` only to them)."""
    events = [e for e in history if e.get("kind") == "PREEMPTING"]
    if not events:
        return ""
    last = events[-1]
    by = f"by job {last['related_job']}: " if last.get("related_job") else ""
    return f"{_when(last['time'])}  {by}{last['message']}"


def _residency(audit: dict[str, Any]) -> str:
    """The data region, and the nodes' regions only where they differ from it (a violation): the
    column stays narrow enough for an 80-column terminal."""
    if audit["residency_ok"]:
        return f"ok ({audit['data_region']})"
    regions = ",".join(sorted(set(audit["node_regions"]))) or "-"
    return f"VIOLATED (data {audit['data_region']}, nodes in {regions})"


def _describe_table(job: dict[str, Any]) -> Group:
    spec = job["spec"]
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    kind = "GPUs (any type)" if job["gpu_type"] == "any" else f"{job['gpu_type']} GPUs"
    shape = f"{job['nodes']} node(s) × {job['gpus_per_node']} = {job['gpus']} {kind}"
    rows = [
        ("Job", f"{job['id']}  {job['name']}"),
        *([("Array task", arrays.task_label(job))] if job.get("array_id") is not None else []),
        ("Team / queue", f"{job['team']} / {job['queue']}  (priority {job['priority']})"),
        ("State", job["state"] + ("  (cancel requested)" if job.get("cancel_requested") else "")),
    ]
    if job["state"] == "PENDING":
        rows.append(("Pending reason", job.get("pending_reason") or "-"))
        for i, suggestion in enumerate(job.get("suggestions") or []):
            rows.append(("Would start now" if i == 0 else "", str(suggestion["text"])))
        position = job.get("queue_position")
        rows.append(("Queue position", str(position) if position is not None else "-"))
        estimate = job.get("estimated_start")
        rows.append(("Estimated start", _when(estimate) if estimate is not None else "unknown"))
    rows += [
        ("Shape", shape),
        ("Data region", job["data_region"]),
        ("Allocation", _describe_allocation(job.get("allocation"))),
        ("Submitted", _when(job["submitted_at"])),
        ("Started", _when(job.get("started_at"))),
        ("Finished", _when(job.get("finished_at"))),
        ("Run time", duration(job.get("run_time_s"))),
        ("Time limit", duration(job.get("time_limit_s")) if job.get("time_limit_s") else "none"),
        ("Restarts / preemptions", f"{job['restart_count']} / {job['preemption_count']}"),
        ("Exit code", "-" if job.get("exit_code") is None else str(job["exit_code"])),
        ("Command", " ".join(spec.get("command") or []) or "-"),
        ("Checkpoint dir", spec.get("checkpoint_dir") or "-"),
        ("Preemptible", f"{spec.get('preemptible')} (grace {spec.get('grace_period_s')} s)"),
    ]
    preempted = _last_preemption(job.get("history") or [])
    if preempted:
        rows.append(("Last preempted", preempted))
    for key, value in rows:
        facts.add_row(key, Text(safe(value)))
    events: list[Column] = [
        ("TIME", lambda e: _when(e["time"])),
        ("EVENT", lambda e: str(e["kind"])),
        ("ATTEMPT", lambda e: str(e["attempt"])),
        ("NODE", lambda e: e["node"] or "-"),
        ("MESSAGE", lambda e: " — ".join(filter(None, [str(e["message"]), e.get("private_detail")]))),
    ]
    audit: list[Column] = [
        ("TIME", lambda a: _when(a["time"])),
        ("DECISION", lambda a: str(a["decision"])),
        ("ATTEMPT", lambda a: str(a["attempt"])),
        ("NODES", lambda a: ",".join(a["nodes"]) or "-"),
        ("RESIDENCY", _residency),
        ("DETAIL", lambda a: " — ".join(filter(None, [str(a["detail"]), a.get("private_detail")]))),
    ]
    return Group(
        facts,
        Text(""),
        render_table(job.get("history") or [], events, title="History"),
        Text(""),
        render_table(job.get("audit") or [], audit, title="Audit"),
    )


def describe(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    output: OutputOpt = "table",
) -> None:
    """Show a job: spec, state, allocation, why it waits, history and audit."""
    fmt = check_format(output)
    api = client()
    job = api.get(job_path(arrays.task_id(api, job_id)))
    emit(job, fmt, lambda: _describe_table(job))


# --- cancel, logs, history ------------------------------------------------------------------------


def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id; an array's id cancels every task, 12_3 one task.")],
    grace: Annotated[
        float | None,
        typer.Option("--grace", help="Seconds between SIGTERM and SIGKILL (default: the job's)."),
    ] = None,
) -> None:
    """Cancel a job (or every task of a job array): SIGTERM, the grace period, then SIGKILL."""
    if grace is not None and not 0 <= grace <= 3600:
        fail(f"--grace: must be 0 to 3600 seconds (got {grace:g})")
    api = client()
    if arrays.cancel(api, job_id, grace):
        return
    job = api.post(job_path(arrays.task_id(api, job_id), "/cancel"), {"grace_s": grace}).json()
    note(f"cancel requested for job {job['id']} ({job['state']})")


def logs(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")
    ] = False,
) -> None:
    """Print a job's log (stdout and stderr of all its ranks)."""
    api = client()
    _stream_logs(api, arrays.task_id(api, job_id), follow)


HISTORY_COLUMNS: list[Column] = [
    ("ID", lambda j: str(j["id"])),
    ("NAME", lambda j: str(j["name"])),
    ("QUEUE", lambda j: str(j["queue"])),
    ("STATE", lambda j: str(j["state"])),
    ("GPUS", lambda j: str(j["gpus"])),
    ("SUBMITTED", lambda j: _when(j["submitted_at"])),
    ("ELAPSED", lambda j: duration(j.get("run_time_s"))),
    ("RESTARTS", lambda j: str(j["restart_count"])),
    ("EXIT", lambda j: "-" if j.get("exit_code") is None else str(j["exit_code"])),
]


def history(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many finished jobs (newest first).")] = 50,
    output: OutputOpt = "table",
) -> None:
    """Finished jobs, newest first, as Slurm's sacct (-o json/yaml include each job's events)."""
    fmt = check_format(output)
    _check_limit(limit)
    rows, more = client().pages("/v1/history", limit)
    emit(rows, fmt, lambda: render_table(rows, HISTORY_COLUMNS))
    if more:
        note(f"showing the newest {len(rows)} finished jobs; older ones exist: raise --limit to see more")
