"""The worker actor: one per node of a job, it runs that node's rank of the command as a subprocess.

It is a plain class here (typed, testable without Ray); the backend makes it a detached, threaded
Ray actor placed in the job's placement-group bundle with num_gpus = the bundle's GPUs, so Ray sets
CUDA_VISIBLE_DEVICES in the actor's environment and the child inherits it. The actor outlives the
child and keeps its exit code, so a controller that restarts can still read how the job ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO

_PUMP_JOIN_S = 2.0  # a grandchild that keeps stdout open must not hold the exit report forever


def exit_code_of(returncode: int) -> int:
    """Popen reports a death by signal N as -N; shells (and Slurm) say 128+N."""
    return 128 - returncode if returncode < 0 else returncode


class RankWorker:
    def __init__(self, job_id: str, attempt: int, rank: int) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.rank = rank
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None
        self._code: int | None = None
        self._launched = threading.Event()
        self._done = threading.Event()

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port: rank 0's become MASTER_ADDR / MASTER_PORT."""
        import ray

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("", 0))
            port: int = sock.getsockname()[1]
        return str(ray.util.get_node_ip_address()), port  # type: ignore[no-untyped-call]

    def gpu_env(self) -> dict[str, str]:
        """The GPU environment Ray gave this actor (tests read it)."""
        return {k: v for k, v in os.environ.items() if k == "CUDA_VISIBLE_DEVICES"}

    def launch(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str, log_path: str, prefix: str
    ) -> int:
        """Start the command in its own process group, its output appended to the job's log."""
        with self._lock:
            if self._proc is not None:
                return self._proc.pid
            if self._done.is_set():  # terminated before it was launched
                raise RuntimeError(f"rank {self.rank} of {self.job_id} was terminated before launch")
            for key in ("CORRAL_CHECKPOINT_DIR",):
                if env.get(key):
                    os.makedirs(env[key], exist_ok=True)
            proc = subprocess.Popen(
                list(argv),
                env={**os.environ, **env},
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a stop reaches every process it spawned
            )
            self._proc = proc
            assert proc.stdout is not None
            self._pump = threading.Thread(
                target=_pump_lines, args=(proc.stdout, log_path, prefix.encode()), daemon=True
            )
            self._pump.start()
            threading.Thread(target=self._reap, daemon=True).start()
            self._launched.set()
            return proc.pid

    def launched(self) -> bool:
        return self._launched.is_set()

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def wait(self) -> int:
        """Block until the command ended; return its exit code (128+N for signal N)."""
        self._done.wait()
        return self._code if self._code is not None else 128 + signal.SIGKILL

    def exit_code(self) -> int | None:
        return self._code if self._done.is_set() else None

    def terminate(self, grace_s: float) -> int:
        """SIGTERM the process group, SIGKILL it after `grace_s`; return the exit code."""
        with self._lock:
            proc = self._proc
            if proc is None:
                self._done.set()  # never launched: nothing to stop, and launch() now refuses
                return 128 + signal.SIGTERM
        if self._done.is_set():  # already reaped: its pid may belong to another process by now
            return self.wait()
        _signal_group(proc.pid, signal.SIGTERM)
        if not self._done.wait(timeout=max(grace_s, 0.0)):
            _signal_group(proc.pid, signal.SIGKILL)
        return self.wait()

    def _reap(self) -> None:
        proc = self._proc
        assert proc is not None
        code = exit_code_of(proc.wait())
        # Like torchrun: what the rank's leader left behind in its group goes with it.
        _signal_group(proc.pid, signal.SIGKILL)
        if self._pump is not None:
            self._pump.join(timeout=_PUMP_JOIN_S)
        self._code = code
        self._done.set()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pump_lines(stream: IO[bytes], log_path: str, prefix: bytes) -> None:
    """Append whole lines with O_APPEND, so ranks writing one file interleave line by line."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for line in iter(stream.readline, b""):
            os.write(fd, prefix + (line if line.endswith(b"\n") else line + b"\n"))
    finally:
        os.close(fd)
        stream.close()
