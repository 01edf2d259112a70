"""The worker actor: one per node of a job, it runs that node's rank of the command as a subprocess.

It is a plain class here (typed, testable without Ray); the backend makes it a detached, threaded
Ray actor placed in the job's placement-group bundle with num_gpus = the bundle's GPUs, so Ray sets
CUDA_VISIBLE_DEVICES in the actor's environment and the child inherits it. The actor outlives the
child and keeps its exit code and why it ended, so a restarted controller can still read them.

The rank's processes end with the rank: the actor process is a child subreaper (orphans stay its
descendants), a stop signals the rank's process group and every descendant, and what is left when
the rank's leader exits is SIGKILLed, as torchrun does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time

from scheduler.backends.job_log import JobLog, pump
from scheduler.backends.proc_tree import ProcTree, become_subreaper
from scheduler.backends.rank_setup import (
    Launch,
    StartFailure,
    exec_failure,
    job_user,
    open_failure,
    popen_identity,
    prepare_dirs,
)

_PUMP_JOIN_S = 2.0  # a process outside the job that holds stdout must not hold the exit report forever
_ORPHAN_REAP_S = 0.5
_SHELL_CODES = {126: "cannot execute", 127: "command not found"}

RankEnd = tuple[int, str]
"""How a rank ended: its exit code (128+N for signal N) and why, in words ("" for a clean exit)."""


def exit_code_of(returncode: int) -> int:
    """Popen reports a death by signal N as -N; shells (and Slurm) say 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def exit_message(returncode: int) -> str:
    """A Popen returncode in words: "" for 0, "exited with code 3", "killed by signal 9 (SIGKILL)"."""
    if returncode == 0:
        return ""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"killed by signal {-returncode}"
        return f"killed by signal {-returncode} ({name})"
    hint = _SHELL_CODES.get(returncode)
    return f"exited with code {returncode}" + (f" ({hint})" if hint else "")


class RankWorker:
    def __init__(self, job_id: str, attempt: int, rank: int) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.rank = rank
        self.subreaper = become_subreaper()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._tree: ProcTree | None = None
        self._pump: threading.Thread | None = None
        self._leader_reaped = False
        self._stop_by: float | None = None  # monotonic deadline of a stop under way
        self._end: RankEnd | None = None
        self._start_failure: RankEnd | None = None
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

    def launch(self, spec: Launch) -> RankEnd | None:
        """Start the command in its own session, its output appended to the job's log. None when it
        runs; (exit code, why) when it could not start: the rank has then already ended."""
        with self._lock:
            if self._proc is not None or self._start_failure is not None:
                return self._start_failure
            if self._done.is_set():  # terminated before it was launched
                raise RuntimeError(f"rank {self.rank} of {self.job_id} was terminated before launch")
            try:
                job_log = JobLog.open(spec.log_path, spec.log_cap, spec.prefix.encode())
            except OSError as exc:
                return self._failed(open_failure(exc, spec), None)
            try:
                self._start(spec, job_log)
            except StartFailure as failure:
                return self._failed(failure, job_log)
            self._launched.set()
            return None

    def _start(self, spec: Launch, job_log: JobLog) -> None:
        user = job_user(spec)
        prepare_dirs(spec, user)
        identity, user_env = popen_identity(user, spec.cwd)
        self._tree = ProcTree()  # after the directory helpers: their processes are not the job's
        try:
            proc = subprocess.Popen(
                list(spec.argv),
                env={**os.environ, **spec.env, **user_env},
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a stop reaches every process it spawned
                **identity,
            )
        except OSError as exc:
            raise exec_failure(exc, spec, user) from None
        self._proc = proc
        assert proc.stdout is not None
        self._pump = threading.Thread(target=pump, args=(proc.stdout, job_log), daemon=True)
        self._pump.start()
        threading.Thread(target=self._reap, daemon=True).start()
        threading.Thread(target=self._reap_orphans, daemon=True).start()

    def _failed(self, failure: StartFailure, job_log: JobLog | None) -> RankEnd:
        if job_log is not None:
            job_log.write_line(f"corral: {failure.message}".encode())
            job_log.close()
        self._start_failure = self._end = (failure.code, failure.message)
        self._launched.set()  # it ended: a controller adopting it reads how
        self._done.set()
        return self._start_failure

    def launched(self) -> bool:
        return self._launched.is_set()

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def wait(self) -> RankEnd:
        """Block until the rank ended; return its exit code (128+N for signal N) and why."""
        self._done.wait()
        return self._end if self._end is not None else (128 + signal.SIGKILL, "stopped before it started")

    def exit_code(self) -> int | None:
        return self.wait()[0] if self._done.is_set() else None

    def terminate(self, grace_s: float) -> int:
        """SIGTERM the rank's process group and every descendant; SIGKILL what is left after
        `grace_s`. Return the exit code."""
        with self._lock:
            proc = self._proc
            if proc is None:
                self._done.set()  # never launched: nothing to stop, and launch() now refuses
                return self.wait()[0]
            deadline = time.monotonic() + max(grace_s, 0.0)
            self._stop_by = deadline if self._stop_by is None else min(self._stop_by, deadline)
        if self._done.is_set():
            return self.wait()[0]
        self._signal(proc, signal.SIGTERM)
        if not self._done.wait(timeout=max(grace_s, 0.0)):
            self._signal(proc, signal.SIGKILL)
        return self.wait()[0]

    def _signal(self, proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        if not self._leader_reaped:  # once reaped, its pid (and group id) may be another's
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        if self._tree is not None:
            self._tree.signal(sig)  # also those that left the group (setsid) or were orphaned

    def _reap(self) -> None:
        proc, tree = self._proc, self._tree
        assert proc is not None and tree is not None
        returncode = proc.wait()
        with self._lock:
            self._leader_reaped = True
            stop_by = self._stop_by
        # Like torchrun: what the leader left behind goes with it — at once, or, during a stop, once
        # the stop's grace is over (its children may still be writing a checkpoint).
        tree.end(kill_at=stop_by if stop_by is not None else time.monotonic())
        if self._pump is not None:
            self._pump.join(timeout=_PUMP_JOIN_S)
        self._end = (exit_code_of(returncode), exit_message(returncode))
        self._done.set()

    def _reap_orphans(self) -> None:
        proc, tree = self._proc, self._tree
        assert proc is not None and tree is not None
        while not self._done.wait(_ORPHAN_REAP_S):
            if not self._leader_reaped:
                tree.reap(skip=proc.pid)
