"""`corral up`, `down`, `status` and `serve`: the embedded local installation under CORRAL_HOME.

`up` starts a local Ray cluster of simulated GPU nodes (declared, logical GPUs with topology
labels), then `corral serve` as a background process (controller + API, SQLite store), and writes
the context (API URL and token) that every other command reads. Everything lives under
CORRAL_HOME, and Ray's files under a short directory derived from it, so two homes never collide.

Secrets stay out of argv (which every user of the machine can read), logs and local.json: `up`
generates one admin token, keeps it only in context.yaml (mode 0600) and hands it — and the
database URL, which may hold a password — to its `serve` child through the environment
(CORRAL_ADMIN_TOKEN, CORRAL_DB_URL). `serve` reads them from there, or from --admin-token-file /
--db-url-file (e.g. a mounted Kubernetes Secret), and removes them from its own environment. Team
tokens are made with `corral token create`. Only `up`, whose Ray cluster is private on 127.0.0.1,
turns Ray's token authentication off (RAY_AUTH_MODE=disabled in its children's environment);
`serve` leaves Ray's authentication as its environment sets it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer

from scheduler.cli.client import token_problem
from scheduler.cli.context import Context, ContextError, corral_home, file_token, save_context
from scheduler.cli.errors import EXIT_UNREACHABLE, EXIT_USAGE, fail
from scheduler.config.cluster_file import ClusterFileError
from scheduler.config.live import default_cluster_yaml, load_live_config

STATE_FILE = "local.json"
MIN_ADMIN_TOKEN = 16


def _digest(home: Path) -> str:
    return hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:10]


def _ray_root(home: Path) -> Path:
    # Ray's unix sockets live under this root: keep it short (socket paths are capped at ~107 bytes).
    return Path(tempfile.gettempdir()) / f"corral-{_digest(home)}"


SHARED_WORK = Path("/var/lib/corral")  # jobs' work and checkpoints when Corral runs as root


def _work_root(home: Path) -> Path:
    """Where jobs get their own directories and default checkpoints, outside CORRAL_HOME (which
    holds the store, the logs and the admin token, readable by Corral's user only).

    As root, jobs run as an unprivileged user that cannot enter CORRAL_HOME (nor, often, its
    parents, e.g. /root): their work goes under /var/lib/corral/<home digest>, which that user can
    traverse but not list. Otherwise jobs run as the user who ran `up`, in CORRAL_HOME/work."""
    if os.geteuid() != 0:
        return home / "work"
    base = SHARED_WORK / _digest(home)
    for path, mode in ((SHARED_WORK, 0o755), (base, 0o711), (base / "work", 0o711)):
        path.mkdir(mode=mode, exist_ok=True)
        path.chmod(mode)
    return base / "work"


def _private_home(home: Path) -> None:
    """CORRAL_HOME and its logs readable by Corral's user only; the SQLite store created 0600."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    logs = home / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    logs.chmod(0o700)
    db = home / "corral.db"
    if not db.exists():  # SQLite would create it (and its -wal, -shm) with the umask's 0644
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_state(home: Path) -> dict[str, Any]:
    try:
        data = json.loads((home / STATE_FILE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _controllers(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The `corral serve` processes `up` started: [{"pid", "api_url"}], the first one first."""
    listed = state.get("controllers")
    if isinstance(listed, list) and listed:
        return [c for c in listed if isinstance(c, dict)]
    return [{"pid": state.get("pid"), "api_url": state.get("api_url")}] if state.get("pid") else []


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and "serve" in proc.cmdline()
    except psutil.Error:
        return False


def _server_alive(state: dict[str, Any]) -> bool:
    """Whether any of the controllers `up` started still runs."""
    return any(_alive(c.get("pid")) for c in _controllers(state))


def _healthz(api_url: str) -> dict[str, Any] | None:
    """The /healthz body (also when not ready: 503), or None if nothing answers."""
    try:
        r = httpx.get(f"{api_url}/healthz", timeout=2.0)
        body = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    return dict(body) if isinstance(body, dict) else None


def _health(api_url: str) -> dict[str, Any] | None:
    """The checks of a ready API, or None (not ready, or not answering)."""
    body = _healthz(api_url)
    if body is None or body.get("status") != "ok":
        return None
    return dict(body.get("checks", {}))


def _hide_password(url: str) -> str | None:
    """The database URL without its password; None if it is not a URL at all."""
    from sqlalchemy.engine import make_url  # SQLAlchemy takes a while to import: only here
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return None


def url_for_humans(url: str, option: str = "--db") -> str:
    """The database URL without its password (for local.json, messages and `corral status`)."""
    shown = _hide_password(url)
    if shown is None:
        fail(f"{option}: not a database URL: use sqlite:///PATH or postgresql://USER@HOST/DB", EXIT_USAGE)
    return shown


def _admin_token() -> str:
    """The admin token `up` hands to `serve`: the one context.yaml holds, else a new one."""
    from scheduler.store.token_store import new_token  # imports SQLAlchemy's schema: only here

    try:
        kept = file_token()
    except ContextError:
        kept = None
    return kept if kept is not None and token_problem(kept) is None else new_token()


def up(
    nodes: Annotated[int, typer.Option(min=1, max=64, help="Simulated GPU nodes to start.")] = 4,
    gpus_per_node: Annotated[int, typer.Option(min=1, max=64, help="Logical GPUs per node.")] = 8,
    regions: Annotated[str, typer.Option(help="Comma-separated regions; nodes are spread over them.")] = (
        "cn-north,cn-east"
    ),
    racks: Annotated[int, typer.Option(min=1, max=64, help="Racks per region.")] = 2,
    gpu_type: Annotated[str, typer.Option(help="GPU type label of the simulated nodes.")] = "H100",
    config: Annotated[
        Path | None, typer.Option(help="Your own cluster file (nodes, queues, priority classes, policy).")
    ] = None,
    port: Annotated[int, typer.Option(help="API port on 127.0.0.1 (0: a free one).")] = 0,
    db: Annotated[
        str | None,
        typer.Option(
            help="Database URL (default: CORRAL_DB_URL, else SQLite in CORRAL_HOME).", show_default=False
        ),
    ] = None,
    replicas: Annotated[
        int,
        typer.Option(
            min=1,
            max=5,
            help="Controllers on the one store: one leads, the others serve the API and take over "
            "if it dies (ports PORT, PORT+1, ... or free ones).",
        ),
    ] = 1,
) -> None:
    """Start the embedded local Corral: a Ray cluster of simulated GPU nodes, the controller and the API."""
    home = corral_home()
    state = _read_state(home)
    if _server_alive(state):
        dead = [c for c in _controllers(state) if not _alive(c.get("pid"))]
        if dead:  # replicas that died (or were killed): start them again on their ports
            _restart_replicas(home, state, dead, db)
        # Never a second controller on the same store: wait for this one to answer instead.
        deadline = time.monotonic() + 60
        while _health(str(state.get("api_url"))) is None:
            if time.monotonic() > deadline or not _server_alive(state):
                fail(f"a controller (pid {state['pid']}) runs but does not answer: see `corral status`", 1)
            time.sleep(0.5)
        print(f"corral is already up at {state['api_url']} (CORRAL_HOME={home})", file=sys.stderr)
        return
    _private_home(home)
    cluster_file = home / "cluster.yaml"
    region_list = [r.strip() for r in regions.split(",") if r.strip()]
    if not region_list:
        fail("--regions: give at least one region name, e.g. --regions cn-north,cn-east", EXIT_USAGE)
    from scheduler.local.ray_cluster import LocalRayCluster, LocalRayClusterError  # imports ray

    ray_cluster = LocalRayCluster(_ray_root(home))
    reuse = ray_cluster.is_up() and ray_cluster.address is not None and cluster_file.exists()
    try:
        if reuse and config is None:
            live = load_live_config(cluster_file)  # the running cluster was started from it
        elif config is not None:
            live = load_live_config(config)
            if config.resolve() != cluster_file.resolve():
                shutil.copyfile(config, cluster_file)
        else:
            cluster_file.write_text(default_cluster_yaml(nodes, gpus_per_node, region_list, racks, gpu_type))
            live = load_live_config(cluster_file)
    except ClusterFileError as exc:
        fail(f"--config: {exc}", EXIT_USAGE)
    db_url = db or os.environ.get("CORRAL_DB_URL") or f"sqlite:///{home / 'corral.db'}"
    shown_db = url_for_humans(db_url)

    root = _ray_root(home)
    t0 = time.monotonic()
    if reuse and ray_cluster.address:
        # Only the controller died (or was stopped): restart it against the running cluster, whose
        # jobs it adopts.
        address = ray_cluster.address
        print(f"reusing the local Ray cluster at {address}", file=sys.stderr)
    else:
        print(
            f"starting a local Ray cluster of {len(live.cluster.nodes)} simulated GPU nodes ...",
            file=sys.stderr,
        )
        try:
            address = ray_cluster.start(list(live.cluster.nodes))
        except LocalRayClusterError as exc:
            ray_cluster.stop()  # nothing half-started is left behind
            fail(f"the local Ray cluster did not start: {exc}", 1)
    ports = [port + i if port else _free_port() for i in range(replicas)]
    api_urls = [f"http://127.0.0.1:{p}" for p in ports]
    logs = home / "logs"
    work_root = _work_root(home)
    # The admin token is in context.yaml before serve stores its digest: a failed start is retried
    # with the same token.
    admin_token = _admin_token()
    save_context(Context(api_url=api_urls[0], token=admin_token, fallback_urls=tuple(api_urls[1:])))
    child_env = {
        **{k: v for k, v in os.environ.items() if k not in ("CORRAL_TOKEN", "CORRAL_API_URL")},
        "CORRAL_ADMIN_TOKEN": admin_token,
        "CORRAL_DB_URL": db_url,
        "RAY_AUTH_MODE": "disabled",  # this Ray cluster listens on 127.0.0.1 only
    }
    controllers: list[dict[str, Any]] = []
    for i, (api_port, api_url) in enumerate(zip(ports, api_urls, strict=True)):
        log_file = logs / ("controller.log" if i == 0 else f"controller-{i + 1}.log")
        proc = _start_serve(cluster_file, address, logs, api_port, work_root, child_env, log_file)
        controllers.append({"pid": proc.pid, "api_url": api_url, "log": str(log_file)})
        if i == 0:  # the first leads: the others start once it has taken the lease
            _wait_healthy(proc, api_url, log_file)
    state = {
        "pid": controllers[0]["pid"],
        "api_url": api_urls[0],
        "controllers": controllers,
        "ray_address": address,
        "ray_root": str(root),
        "db_url": shown_db,  # without its password
        "config": str(cluster_file),
        "work_root": str(work_root),
    }
    (home / STATE_FILE).write_text(json.dumps(state, indent=2))
    for c in controllers[1:]:
        _wait_healthy(psutil.Process(c["pid"]), c["api_url"], Path(c["log"]))
    more = f" (+{replicas - 1} standby: {', '.join(api_urls[1:])})" if replicas > 1 else ""
    print(
        f"corral is up in {time.monotonic() - t0:.0f} s: API {api_urls[0]}{more}, Ray {address}, "
        f"store {shown_db}\n"
        f"  CORRAL_HOME={home}; try: corral submit --gpus 1 -- echo hello; corral jobs; corral down",
        file=sys.stderr,
    )


def _start_serve(
    cluster_file: Path,
    address: str,
    logs: Path,
    port: int,
    work_root: Path,
    env: dict[str, str],
    log_file: Path,
) -> subprocess.Popen[bytes]:
    """One `corral serve` in the background (secrets in `env`, never in argv)."""
    argv = [
        sys.executable, "-m", "scheduler.cli", "serve",
        "--config", str(cluster_file), "--ray-address", address,
        "--log-dir", str(logs / "jobs"), "--port", str(port), "--work-root", str(work_root),
    ]  # fmt: skip
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )


def _restart_replicas(home: Path, state: dict[str, Any], dead: list[dict[str, Any]], db: str | None) -> None:
    """Start the dead replicas of a running install again, each on its own port and log."""
    shown = str(state.get("db_url") or "")
    db_url = db or os.environ.get("CORRAL_DB_URL") or shown
    if not db_url or "***" in db_url:  # local.json keeps the URL without its password
        fail("--db: give the database URL again (--db or CORRAL_DB_URL) to restart a replica", EXIT_USAGE)
    token = file_token()
    if token is None:
        fail(f"{home / 'context.yaml'}: no admin token to restart a replica with: run `corral down` first", 1)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("CORRAL_TOKEN", "CORRAL_API_URL")},
        "CORRAL_ADMIN_TOKEN": token,
        "CORRAL_DB_URL": db_url,
        "RAY_AUTH_MODE": "disabled",
    }
    logs = home / "logs"
    for c in dead:
        port = int(str(c["api_url"]).rsplit(":", 1)[1])
        log_file = Path(c.get("log") or logs / "controller.log")
        proc = _start_serve(
            Path(state["config"]), state["ray_address"], logs, port, Path(state["work_root"]), env, log_file
        )
        c["pid"] = proc.pid
        print(f"restarted the controller at {c['api_url']} (pid {proc.pid})", file=sys.stderr)
    state["pid"] = (state.get("controllers") or dead)[0]["pid"]
    (home / STATE_FILE).write_text(json.dumps(state, indent=2))
    for c in dead:
        _wait_healthy(
            psutil.Process(c["pid"]), str(c["api_url"]), Path(c.get("log") or logs / "controller.log")
        )


def _wait_healthy(proc: subprocess.Popen[bytes] | psutil.Process, api_url: str, log_file: Path) -> None:
    deadline = time.monotonic() + 90
    while _health(api_url) is None:
        exited = proc.poll() is not None if isinstance(proc, subprocess.Popen) else not proc.is_running()
        if exited or time.monotonic() > deadline:
            tail = " | ".join(log_file.read_text(errors="replace").splitlines()[-5:])
            fail(f"the controller did not come up; last lines of {log_file}: {tail}", 1)
        time.sleep(0.2)


def down() -> None:
    """Stop everything `corral up` started under this CORRAL_HOME (jobs included)."""
    home = corral_home()
    state = _read_state(home)
    stopped = False
    running = [psutil.Process(c["pid"]) for c in _controllers(state) if _alive(c.get("pid"))]
    for proc in running:  # standbys first would hand the lease around: all at once instead
        proc.send_signal(signal.SIGTERM)
    for proc in running:
        try:
            proc.wait(15)
        except psutil.TimeoutExpired:
            proc.kill()
        stopped = True
    from scheduler.local.ray_cluster import LocalRayCluster

    root = Path(state["ray_root"]) if state.get("ray_root") else _ray_root(home)
    cluster = LocalRayCluster(root)
    if cluster.is_up():
        stopped = True
    cluster.stop()
    (home / STATE_FILE).unlink(missing_ok=True)
    print("corral is down" if stopped else "nothing was running", file=sys.stderr)


def status(
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
) -> None:
    """What runs under this CORRAL_HOME: Ray, the controller and the API."""
    if output not in ("table", "json"):
        fail("-o/--output: use table or json", EXIT_USAGE)
    home = corral_home()
    state = _read_state(home)
    controllers: list[dict[str, Any]] = []
    for c in _controllers(state):
        alive = _alive(c.get("pid"))
        body = _healthz(str(c.get("api_url"))) if alive and c.get("api_url") else None
        checks = dict(body.get("checks", {})) if body else {}
        controllers.append(
            {
                "pid": c.get("pid") if alive else None,
                "leader": bool(body and body.get("leader")),
                "api_url": c.get("api_url"),
                "epoch": int(body.get("epoch") or 0) if body else 0,
                "state": checks.get("controller", "unknown" if alive else "down"),
                "ready": bool(body and body.get("status") == "ok"),
                "checks": checks,
            }
        )
    # The leader's view of things, else the first controller that answers.
    main = next((c for c in controllers if c["leader"]), None) or next(
        (c for c in controllers if c["ready"]), controllers[0] if controllers else None
    )
    api_url = str(main["api_url"]) if main else str(state.get("api_url") or "")
    health = main["checks"] if main and main["ready"] else None
    from scheduler.local.ray_cluster import LocalRayCluster

    ray_up = LocalRayCluster(Path(state["ray_root"]) if state.get("ray_root") else _ray_root(home)).is_up()
    server = _server_alive(state)
    stored_db = state.get("db_url")
    shown_db = (_hide_password(stored_db) or "(not a database URL)") if isinstance(stored_db, str) else None
    report: dict[str, Any] = {
        "home": str(home),
        "api_url": api_url or None,
        "metrics_url": f"{api_url}/metrics" if api_url else None,
        "ray": {"state": "up" if ray_up else "down", "address": state.get("ray_address")},
        "controller": {
            "state": (health or {}).get("controller", "down" if not server else "unknown"),
            "pid": main["pid"] if main and server else None,
        },
        "controllers": [
            {k: c[k] for k in ("pid", "leader", "api_url", "epoch", "state")} for c in controllers
        ],
        "api": {"state": "up" if health is not None else "down"},
        "store": {"url": shown_db, "state": (health or {}).get("store", "unknown")},
        "work_root": state.get("work_root"),
    }
    if output == "json":
        print(json.dumps(report, indent=2))
    else:
        print(f"home        {home}")
        print(f"api         {report['api']['state']:<6} {api_url or '-'}")
        print(f"controller  {report['controller']['state']}")
        if len(controllers) > 1:
            for c in controllers:
                role = f"leader (epoch {c['epoch']})" if c["leader"] else "standby" if c["pid"] else "down"
                print(f"  pid {c['pid'] or '-':<8} {role:<18} {c['api_url']}")
        print(f"ray         {report['ray']['state']:<6} {state.get('ray_address') or '-'}")
        print(f"store       {shown_db or '-'}")
        print(f"jobs' work  {state.get('work_root') or '-'}")
    all_up = ray_up and health is not None and health.get("controller") == "ok"
    if not all_up:
        raise SystemExit(EXIT_UNREACHABLE)
