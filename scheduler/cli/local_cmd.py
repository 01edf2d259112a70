"""`corral up`, `down`, `status` and `serve`: the embedded local installation under CORRAL_HOME.

`up` starts a local Ray cluster of simulated GPU nodes (declared, logical GPUs with topology
labels), then `corral serve` as a background process (controller + API, SQLite store), and writes
the context (API URL and token) that every other command reads. Everything lives under
CORRAL_HOME, and Ray's files under a short directory derived from it, so two homes never collide.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
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
import yaml

from scheduler.cli.context import Context, corral_home, save_context
from scheduler.cli.errors import EXIT_UNREACHABLE, EXIT_USAGE, fail
from scheduler.control.config import default_cluster_yaml, load_live_config
from scheduler.sim.cluster_file import ClusterFileError

STATE_FILE = "local.json"


def _ray_root(home: Path) -> Path:
    # Ray's unix sockets live under this root: keep it short (socket paths are capped at ~107 bytes).
    digest = hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"corral-{digest}"


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


def _server_alive(state: dict[str, Any]) -> bool:
    pid = state.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and "serve" in proc.cmdline()
    except psutil.Error:
        return False


def _health(api_url: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(f"{api_url}/healthz", timeout=2.0)
        return dict(r.json().get("checks", {})) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _default_tokens(queues: list[str]) -> dict[str, Any]:
    entries = [{"token": secrets.token_urlsafe(24), "team": "admin", "admin": True}]
    entries += [{"token": secrets.token_urlsafe(24), "team": q, "admin": False} for q in queues]
    return {"tokens": entries}


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
    tokens: Annotated[
        Path | None, typer.Option(help="Tokens file (token → team/admin); default: generated.")
    ] = None,
    port: Annotated[int, typer.Option(help="API port on 127.0.0.1 (0: a free one).")] = 0,
    db: Annotated[str | None, typer.Option(help="Database URL (default: SQLite in CORRAL_HOME).")] = None,
) -> None:
    """Start the embedded local Corral: a Ray cluster of simulated GPU nodes, the controller and the API."""
    home = corral_home()
    state = _read_state(home)
    if _server_alive(state):
        # Never a second controller on the same store: wait for this one to answer instead.
        deadline = time.monotonic() + 60
        while _health(str(state.get("api_url"))) is None:
            if time.monotonic() > deadline or not _server_alive(state):
                fail(f"a controller (pid {state['pid']}) runs but does not answer: see `corral status`", 1)
            time.sleep(0.5)
        print(f"corral is already up at {state['api_url']} (CORRAL_HOME={home})", file=sys.stderr)
        return
    home.mkdir(parents=True, exist_ok=True)
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
    tokens_file = home / "tokens.yaml"
    if tokens is not None:
        if not tokens.is_file():
            fail(f"--tokens: {tokens} does not exist (give a YAML file with tokens: [...])", EXIT_USAGE)
        shutil.copyfile(tokens, tokens_file)
    elif not tokens_file.exists():
        tokens_file.write_text(yaml.safe_dump(_default_tokens([q.name for q in live.cluster.queues])))
    tokens_file.chmod(0o600)
    table = yaml.safe_load(tokens_file.read_text()) or {}
    admin = next((t for t in table.get("tokens", []) if t.get("admin")), None)
    if admin is None:
        fail(f"--tokens: {tokens_file} has no admin token (add one with admin: true)", EXIT_USAGE)

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
    api_port = port or _free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    db_url = db or f"sqlite:///{home / 'corral.db'}"
    argv = [
        sys.executable, "-m", "scheduler.cli", "serve",
        "--config", str(cluster_file), "--tokens", str(tokens_file), "--db", db_url,
        "--ray-address", address, "--log-dir", str(logs / "jobs"), "--port", str(api_port),
    ]  # fmt: skip
    with open(logs / "controller.log", "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    state = {
        "pid": proc.pid,
        "api_url": api_url,
        "ray_address": address,
        "ray_root": str(root),
        "db_url": db_url,
        "config": str(cluster_file),
    }
    (home / STATE_FILE).write_text(json.dumps(state, indent=2))
    deadline = time.monotonic() + 90
    while _health(api_url) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            log_file = logs / "controller.log"
            tail = " | ".join(log_file.read_text(errors="replace").splitlines()[-5:])
            fail(f"the controller did not come up; last lines of {log_file}: {tail}", 1)
        time.sleep(0.2)
    save_context(Context(api_url=api_url, token=str(admin["token"])))
    print(
        f"corral is up in {time.monotonic() - t0:.0f} s: API {api_url}, Ray {address}, store {db_url}\n"
        f"  CORRAL_HOME={home}; try: corral submit --gpus 1 -- echo hello; corral jobs; corral down",
        file=sys.stderr,
    )


def down() -> None:
    """Stop everything `corral up` started under this CORRAL_HOME (jobs included)."""
    home = corral_home()
    state = _read_state(home)
    stopped = False
    if _server_alive(state):
        proc = psutil.Process(int(state["pid"]))
        proc.send_signal(signal.SIGTERM)
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
    api_url = str(state.get("api_url") or "")
    health = _health(api_url) if api_url else None
    from scheduler.local.ray_cluster import LocalRayCluster

    ray_up = LocalRayCluster(Path(state["ray_root"]) if state.get("ray_root") else _ray_root(home)).is_up()
    server = _server_alive(state)
    report = {
        "home": str(home),
        "api_url": api_url or None,
        "metrics_url": f"{api_url}/metrics" if api_url else None,
        "ray": {"state": "up" if ray_up else "down", "address": state.get("ray_address")},
        "controller": {
            "state": (health or {}).get("controller", "down" if not server else "unknown"),
            "pid": state.get("pid") if server else None,
        },
        "api": {"state": "up" if health is not None else "down"},
        "store": {"url": state.get("db_url"), "state": (health or {}).get("store", "unknown")},
    }
    if output == "json":
        print(json.dumps(report, indent=2))
    else:
        print(f"home        {home}")
        print(f"api         {report['api']['state']:<6} {api_url or '-'}")  # type: ignore[index]
        print(f"controller  {report['controller']['state']}")  # type: ignore[index]
        print(f"ray         {report['ray']['state']:<6} {state.get('ray_address') or '-'}")  # type: ignore[index]
        print(f"store       {state.get('db_url') or '-'}")
    all_up = ray_up and health is not None and health.get("controller") == "ok"
    if not all_up:
        raise SystemExit(EXIT_UNREACHABLE)


def serve(
    config: Annotated[Path, typer.Option(help="Cluster file (queues, priority classes, policy).")],
    tokens: Annotated[Path, typer.Option(help="Tokens file.")],
    ray_address: Annotated[str, typer.Option(help="Ray GCS address host:port.")],
    db: Annotated[str, typer.Option(help="Database URL (sqlite:///... or postgresql://...).")],
    log_dir: Annotated[Path, typer.Option(help="Directory of the per-job logs.")],
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port.")] = 8470,
    job_info_metrics: Annotated[
        bool,
        typer.Option(help="Also export corral_job_info{job_id,queue,node} (one series per running job)."),
    ] = False,
) -> None:
    """Run the controller and the API in the foreground (what `corral up` starts; Helm runs this too)."""
    from scheduler.control.service import ServeOptions
    from scheduler.control.service import serve as run_service
    from scheduler.store.controller_lock import ControllerLockHeld

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        run_service(ServeOptions(config, tokens, db, ray_address, log_dir, host, port, job_info_metrics))
    except ClusterFileError as exc:
        fail(f"--config: {exc}", EXIT_USAGE)
    except ControllerLockHeld as exc:
        fail(f"{exc}: stop it first (corral down, or kill that `corral serve`)", EXIT_USAGE)
