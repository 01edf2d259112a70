"""`corral serve`: the controller and the API in the foreground (what `corral up` starts in the
background, and what a deployment runs).

Secrets never pass through argv (which every user of the machine can read) or logs: the database URL
(it may hold a password) comes from CORRAL_DB_URL or --db-url-file, the bootstrap admin token from
CORRAL_ADMIN_TOKEN or --admin-token-file (e.g. a mounted Kubernetes Secret); both are removed from
this process's environment once read, so nothing it starts inherits them. Ray's token
authentication is left as the environment configures it.

Jobs: when Corral runs as root, each job runs as the unprivileged --job-user (created if missing),
in its own directory under --work-root, never inside the controller's state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from scheduler.api.limits import DEFAULT_BURST, DEFAULT_FOLLOWERS, DEFAULT_RATE
from scheduler.cli.client import token_problem
from scheduler.cli.errors import EXIT_USAGE, fail
from scheduler.cli.local_cmd import url_for_humans
from scheduler.config.cluster_file import ClusterFileError

__all__ = ["serve"]

MIN_ADMIN_TOKEN = 16
DEFAULT_JOB_USER = "corral-job"


def _secret_file(path: Path, option: str, what: str) -> str:
    """One secret from a file (e.g. a mounted Kubernetes Secret): its one line, without the newline."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        fail(f"{option}: cannot read {path} ({reason}): give a readable file holding {what}", EXIT_USAGE)
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        fail(f"{option}: {path} must hold {what} on one line (found {len(lines)} lines)", EXIT_USAGE)
    return lines[0].strip()


def _check_admin_token(token: str, where: str) -> str:
    problem = token_problem(token)
    if problem is not None:
        fail(f"{where}: the admin token holds {problem}: use printable ASCII without spaces", EXIT_USAGE)
    if len(token) < MIN_ADMIN_TOKEN:
        fail(
            f"{where}: the admin token is {len(token)} characters: use at least {MIN_ADMIN_TOKEN} random "
            "characters (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            EXIT_USAGE,
        )
    return token


def serve(
    config: Annotated[Path, typer.Option(help="Cluster file (queues, priority classes, policy).")],
    ray_address: Annotated[str, typer.Option(help="Ray GCS address host:port.")],
    log_dir: Annotated[Path, typer.Option(help="Directory of the per-job logs.")],
    db: Annotated[
        str | None,
        typer.Option(
            help="Database URL (sqlite:///... or postgresql://...). Prefer CORRAL_DB_URL or --db-url-file "
            "when it holds a password: a process's arguments are visible to every user of the machine."
        ),
    ] = None,
    db_url_file: Annotated[
        Path | None, typer.Option(help="A file holding the database URL (e.g. a mounted Secret).")
    ] = None,
    admin_token_file: Annotated[
        Path | None,
        typer.Option(help="A file holding the bootstrap admin token (default: CORRAL_ADMIN_TOKEN)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port.")] = 8470,
    job_info_metrics: Annotated[
        bool,
        typer.Option(help="Also export corral_job_info{job_id,queue,node} (one series per running job)."),
    ] = False,
    rate_limit: Annotated[
        float, typer.Option(min=0.1, help="Requests per second per token (admin tokens are exempt).")
    ] = DEFAULT_RATE,
    rate_burst: Annotated[
        int, typer.Option(min=1, help="Requests a token may send at once.")
    ] = DEFAULT_BURST,
    max_log_followers: Annotated[
        int, typer.Option(min=1, help="Concurrent `logs -f` streams per token.")
    ] = DEFAULT_FOLLOWERS,
    job_user: Annotated[
        str,
        typer.Option(
            help="When Corral runs as root, jobs run as this unprivileged user (created if missing; "
            "'nobody' if it cannot be). Empty: jobs run as Corral's own user."
        ),
    ] = DEFAULT_JOB_USER,
    work_root: Annotated[
        Path | None,
        typer.Option(
            help="Where each job without a working_dir gets its own directory, and default checkpoints "
            "go (default: <log-dir>/../work). The job user must be able to reach it."
        ),
    ] = None,
    log_cap_mib: Annotated[
        int, typer.Option(min=1, help="A job's log stops growing at this size (MiB), with a note.")
    ] = 1024,
    start_timeout: Annotated[
        float,
        typer.Option(
            min=1.0,
            max=3600.0,
            envvar="CORRAL_START_TIMEOUT_S",
            help="Seconds a start may take before it is retried.",
        ),
    ] = 30.0,
    lease_duration: Annotated[
        float,
        typer.Option(
            min=1.0,
            max=600.0,
            envvar="CORRAL_LEASE_S",
            help="Seconds a leader's lease lasts without renewal: the longest a failover waits for a "
            "dead leader (replicas on one store elect one leader).",
        ),
    ] = 15.0,
    forecast_interval: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=3600.0,
            envvar="CORRAL_FORECAST_INTERVAL_S",
            help="Recompute pending jobs' start-time estimates at most this often, in seconds, in a "
            "background thread (0: no estimates).",
        ),
    ] = 5.0,
    advertise_url: Annotated[
        str,
        typer.Option(
            envvar="CORRAL_ADVERTISE_URL",
            help="How other replicas and clients reach this API (default http://HOST:PORT).",
        ),
    ] = "",
    kubernetes_topology: Annotated[
        bool,
        typer.Option(
            help="Read each Ray node's Kubernetes node (in-cluster): region/zone/rack/GPU labels, "
            "cordons and readiness; a region that disagrees takes the node out of scheduling."
        ),
    ] = False,
    kubernetes_namespace: Annotated[
        str | None,
        typer.Option(envvar="CORRAL_NAMESPACE", help="Namespace of the Ray pods (default: this pod's own)."),
    ] = None,
    rack_label: Annotated[
        str, typer.Option(help="The Kubernetes node label that names its rack.")
    ] = "corral.dev/rack",
    kubernetes_pod_selector: Annotated[
        str, typer.Option(help="Label selector of the Ray pods.")
    ] = "ray.io/is-ray-node=yes",
) -> None:
    """Run the controller and the API in the foreground (what `corral up` starts; Helm runs this too)."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from scheduler.api.deps import ApiSettings
    from scheduler.serve import JobOptions, KubernetesOptions, ServeError, ServeOptions
    from scheduler.serve import serve as run_service

    # Read the secrets, then drop them from the environment: nothing this process starts inherits them.
    env_db = os.environ.pop("CORRAL_DB_URL", None)
    env_token = os.environ.pop("CORRAL_ADMIN_TOKEN", None)
    if db is not None:
        db_url = db
    elif db_url_file is not None:
        db_url = _secret_file(db_url_file, "--db-url-file", "the database URL")
    elif env_db:
        db_url = env_db
    else:
        fail("--db: give the database URL with CORRAL_DB_URL, --db-url-file PATH or --db URL", EXIT_USAGE)
    shown_db = url_for_humans(db_url)
    admin_token: str | None = None
    if admin_token_file is not None:
        where = f"--admin-token-file {admin_token_file}"
        admin_token = _check_admin_token(
            _secret_file(admin_token_file, "--admin-token-file", "a token"), where
        )
    elif env_token:
        admin_token = _check_admin_token(env_token.strip(), "CORRAL_ADMIN_TOKEN")
    options = ServeOptions(
        config,
        db_url,
        ray_address,
        log_dir,
        host,
        port,
        job_info_metrics,
        admin_token=admin_token,
        api=ApiSettings(rate_per_s=rate_limit, burst=rate_burst, max_followers=max_log_followers),
        jobs=JobOptions(job_user or None, work_root, log_cap_mib << 20, start_timeout),
        lease_duration_s=lease_duration,
        forecast_interval_s=forecast_interval,
        advertise_url=advertise_url,
        kubernetes=KubernetesOptions(kubernetes_namespace or None, rack_label, kubernetes_pod_selector)
        if kubernetes_topology
        else None,
    )
    try:
        run_service(options)
    except ClusterFileError as exc:
        fail(f"--config: {exc}", EXIT_USAGE)
    except ServeError as exc:
        fail(str(exc), EXIT_USAGE)
    except ArgumentError:
        fail("--db: not a database URL: use sqlite:///PATH or postgresql://USER@HOST/DB", EXIT_USAGE)
    except DBAPIError as exc:  # the driver's first line names the problem, never the password
        reason = " ".join(str(exc.orig).split())[:200] if exc.orig is not None else type(exc).__name__
        fail(f"--db: cannot open the database at {shown_db}: {reason}", 1)
