"""LocalRayCluster: a Ray cluster of simulated GPU nodes on this machine, made of `ray start` daemons.

The head node is the control plane (no GPUs); each Corral Node becomes one raylet with logical GPUs
and the node's topology as Ray labels. `ray start` daemonizes, so the cluster outlives the process
that started it (`corral up` returns); a JSON state file under `root` lets any later process find
it again. Every process of the cluster carries the environment marker CORRAL_RAY_ROOT=<root> (and
CORRAL_RAY_NODE=<node id>), inherited by raylets, Ray workers and job processes alike: that is how
stop() and kill_node() find exactly this cluster's processes and never another install's, even
after Ray renamed them with setproctitle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from scheduler.backends.ray_backend import (
    FAST_HEALTH_CHECK,
    LABEL_GPU_TYPE,
    LABEL_NODE,
    LABEL_NVLINK,
    LABEL_RACK,
    LABEL_REGION,
    LABEL_ZONE,
)
from scheduler.model.cluster import Node

log = logging.getLogger("corral.local")

ROOT_ENV = "CORRAL_RAY_ROOT"
NODE_ENV = "CORRAL_RAY_NODE"
HEAD = "head"
STATE_FILE = "cluster.json"
# Ray's unix socket paths (<temp>/<node>/session_<date>_<pid>/sockets/plasma_store) break past
# ~107 characters, so the temp dirs live under a short path.
_MAX_TEMP_ROOT = 40
_LABEL_VALUE = re.compile(r"^$|^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_START_TIMEOUT_S = 90.0
_START_ATTEMPTS = 3


class LocalRayClusterError(RuntimeError):
    pass


def node_labels(node: Node) -> dict[str, str]:
    """The Ray labels that carry a Corral node's identity and topology."""
    labels = {
        LABEL_NODE: node.id,
        LABEL_REGION: node.region,
        LABEL_ZONE: node.zone,
        LABEL_RACK: node.rack.rsplit("/", 1)[-1],  # the backend prefixes the region again
        LABEL_GPU_TYPE: node.gpu_type,
        LABEL_NVLINK: node.nvlink_domain.rsplit("/", 1)[-1],  # ... and the rack
    }
    for key, value in labels.items():
        if not _LABEL_VALUE.match(value):
            raise LocalRayClusterError(f"node {node.id}: {key}={value!r} is not a valid Ray label value")
    return {k: v for k, v in labels.items() if v}


def _free_port() -> int:
    # The kernel's ephemeral range (≥ 32768) lies outside Ray's worker port range (10002-19999).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ray_cli() -> list[str]:
    script = Path(sys.executable).with_name("ray")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


class LocalRayCluster:
    def __init__(self, root: Path, *, head_cpus: int = 2, node_cpus: int = 2) -> None:
        self.root = Path(root).resolve()
        self.head_cpus = head_cpus
        self.node_cpus = node_cpus
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:10]
        short = len(str(self.root)) <= _MAX_TEMP_ROOT
        self._temp = self.root / "t" if short else Path(tempfile.gettempdir()) / f"corral-{digest}"

    # --- state ------------------------------------------------------------------------------
    @property
    def _state_path(self) -> Path:
        return self.root / STATE_FILE

    def _load(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self._state_path.read_text())
            return state
        except FileNotFoundError:
            return {}

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self._state_path)

    @property
    def address(self) -> str | None:
        address = self._load().get("address")
        return str(address) if address else None

    def nodes(self) -> list[Node]:
        """The simulated nodes this cluster was started with (dead or alive)."""
        return [Node.model_validate(n["spec"]) for n in self._load().get("nodes", {}).values()]

    def is_up(self) -> bool:
        address = self.address
        if address is None or not any(node == HEAD for _, node in self._processes()):
            return False
        host, port = address.rsplit(":", 1)
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
            return True
        return False

    # --- start ------------------------------------------------------------------------------
    def start(self, nodes: Sequence[Node]) -> str:
        """Start the head and one raylet per node; return the GCS address once all are alive."""
        if self.is_up():
            raise LocalRayClusterError(f"a cluster is already running under {self.root}")
        self.stop()  # leftovers of a crashed install under the same root
        self.root.mkdir(parents=True, exist_ok=True)
        self._temp.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        address = f"127.0.0.1:{port}"
        self._save({"address": address, "temp": str(self._temp), "nodes": {}, "sessions": {}})
        if self._run_ray_start([self._head_args(port)], [HEAD]):
            raise LocalRayClusterError(f"`ray start --head` failed; see {self.root / 'logs'}")
        self.add_nodes(nodes)
        return address

    def add_node(self, node: Node) -> None:
        """Join one more simulated node and wait until Ray sees it alive."""
        self.add_nodes([node])

    def add_nodes(self, nodes: Sequence[Node]) -> None:
        state = self._load()
        address = state.get("address")
        if not address:
            raise LocalRayClusterError(f"no cluster under {self.root}: start() it first")
        known: dict[str, Any] = state["nodes"]
        running = {node for _, node in self._processes()}
        dupes = [n.id for n in nodes if n.id in running]
        if dupes:
            raise LocalRayClusterError(f"nodes already running in the cluster: {dupes}")
        todo = list(nodes)
        for attempt in range(_START_ATTEMPTS):
            state = self._load()
            known = state["nodes"]
            for node in todo:  # a killed or failed node comes back under a fresh temp dir
                index = state["next_index"] = state.get("next_index", 0) + 1
                known[node.id] = {"index": index, "spec": node.model_dump(mode="json")}
            self._save(state)
            args = [self._node_args(address, node, known[node.id]["index"]) for node in todo]
            failed = set(self._run_ray_start(args, [n.id for n in todo]))
            if not failed:
                break
            # On a loaded machine a raylet can miss Ray's start-up deadline: clear it, try again.
            log.warning("`ray start` failed for %s (try %d); retrying", sorted(failed), attempt + 1)
            _kill_all([p for p, node in self._processes() if node in failed], signal.SIGKILL)
            todo = [n for n in todo if n.id in failed]
        else:
            raise LocalRayClusterError(
                f"`ray start` failed for {sorted(n.id for n in todo)}; see {self.root / 'logs'}"
            )
        self._wait_alive(address, {n.id for n in nodes})

    def _common_args(self, temp: Path) -> list[str]:
        return [
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
            "--object-store-memory=80000000",  # logical nodes move no data; keep shm use small
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ]

    def _head_args(self, port: int) -> list[str]:
        return [
            "--head",
            f"--port={port}",
            f"--num-cpus={self.head_cpus}",
            "--num-gpus=0",
            "--include-dashboard=false",
            f"--dashboard-port={_free_port()}",
            f"--ray-client-server-port={_free_port()}",
            f"--system-config={json.dumps(FAST_HEALTH_CHECK)}",
            *self._common_args(self._temp / "h"),
        ]

    def _node_args(self, address: str, node: Node, index: int) -> list[str]:
        labels = ",".join(f"{k}={v}" for k, v in node_labels(node).items())
        return [
            f"--address={address}",
            f"--num-cpus={self.node_cpus}",
            f"--num-gpus={node.gpus}",
            f"--labels={labels}",
            *self._common_args(self._temp / f"n{index}"),
        ]

    def _run_ray_start(self, arg_lists: Sequence[list[str]], names: Sequence[str]) -> list[str]:
        """Run `ray start` for several nodes in parallel; each returns once its daemons are up.
        Each runs as a session leader; its session id names the node's processes from then on.
        Returns the names whose `ray start` failed."""
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        procs = []
        for args, name in zip(arg_lists, names, strict=True):
            env = {**os.environ, ROOT_ENV: str(self.root), NODE_ENV: name}
            env.setdefault("RAY_AUTH_MODE", "disabled")
            env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            with open(logs / f"ray-start-{name}.log", "ab") as out:
                cmd = [*_ray_cli(), "start", *args]
                # Own session: the daemons must not die with the caller's terminal.
                procs.append(
                    subprocess.Popen(
                        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        state = self._load()
        sessions = state.setdefault("sessions", {})
        sessions.update({str(proc.pid): name for proc, name in zip(procs, names, strict=True)})
        self._save(state)
        failed = []
        for proc, name in zip(procs, names, strict=True):
            try:
                if proc.wait(timeout=_START_TIMEOUT_S) != 0:
                    failed.append(name)
            except subprocess.TimeoutExpired:
                proc.kill()
                failed.append(name)
        return failed

    def _wait_alive(self, address: str, node_ids: set[str], timeout_s: float = _START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if node_ids <= alive_corral_nodes(address):
                return
            time.sleep(0.2)
        raise LocalRayClusterError(f"nodes {sorted(node_ids)} did not register within {timeout_s:.0f}s")

    # --- failure and teardown ---------------------------------------------------------------
    def kill_node(self, node_id: str) -> None:
        """SIGKILL one node's raylet and every process under it: to Ray, the node failed."""
        victims = [p for p, node in self._processes() if node == node_id]
        if not victims:
            raise LocalRayClusterError(f"no running processes for node {node_id!r}")
        _kill_all(victims, signal.SIGKILL)
        _wait_gone(victims, timeout_s=5)
        # Forget its session ids: once free, the kernel may hand them to unrelated processes.
        state = self._load()
        state["sessions"] = {s: n for s, n in state.get("sessions", {}).items() if n != node_id}
        self._save(state)

    def stop(self) -> None:
        """Stop every process of this cluster (and only this one). Idempotent; any process may call it."""
        procs = [p for p, _ in self._processes()]
        _kill_all(procs, signal.SIGTERM)
        alive = _wait_gone(procs, timeout_s=3)
        _kill_all(alive, signal.SIGKILL)
        _wait_gone(alive, timeout_s=5)
        self._state_path.unlink(missing_ok=True)

    def _processes(self) -> Iterator[tuple[psutil.Process, str | None]]:
        """(process, node id or 'head') for every live process of this cluster."""
        sessions: dict[str, str] = self._load().get("sessions", {})
        me = os.getpid()
        for proc in psutil.process_iter():
            if proc.pid == me:
                continue
            with contextlib.suppress(OSError):
                node = sessions.get(str(os.getsid(proc.pid)))
                if node is not None:
                    yield proc, node
                    continue
            env = _env_of(proc)
            if env.get(ROOT_ENV) == str(self.root):
                yield proc, env.get(NODE_ENV)


def alive_corral_nodes(address: str) -> set[str]:
    """Corral node ids of the alive nodes, straight from the GCS (no ray.init, so a driver in this
    process stays free to connect however it likes)."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # private, but light

    try:
        infos = GcsClient(address=address).get_all_node_info(timeout=2)
    except Exception:  # GCS not up yet
        return set()
    return {
        str(info.labels[LABEL_NODE])
        for info in infos.values()
        if info.state == 0 and LABEL_NODE in info.labels  # 0: ALIVE
    }


def _env_of(proc: psutil.Process) -> dict[str, str]:
    try:
        env: dict[str, str] = proc.environ()
        return env
    except (psutil.Error, OSError):
        return {}


def _kill_all(procs: Sequence[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _wait_gone(procs: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each process exited; return those still running. A zombie counts as gone: in a
    container whose PID 1 does not reap, orphans stay zombies forever."""
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while alive:
        alive = [p for p in alive if _running(p)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return alive


def _running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
