"""A throwaway PostgreSQL server on loopback, for tests and benchmarks.

    server = LocalPostgres.start()
    url = server.create_database("t_1")   # postgresql+psycopg://postgres@127.0.0.1:PORT/t_1
    ...
    server.stop()                         # stops the server and deletes its data directory

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (or `nobody`)
and owns its data directory. `fast=True` turns off fsync: fine for tests, wrong for benchmarks of
durable writes.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

SUPERUSER = "postgres"  # the database role initdb creates, whatever the OS user


class PostgresUnavailable(RuntimeError):
    pass


def find_bindir() -> Path:
    """The directory of initdb and postgres: from PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not candidates:
        raise PostgresUnavailable("no initdb on PATH or in /usr/lib/postgresql/*/bin (run .ci/postgres.sh)")
    newest = max(candidates, key=lambda p: _version_key(Path(p).parent.parent.name))
    return Path(newest).parent


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user to run as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable("running as root and neither user 'postgres' nor 'nobody' exists")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class LocalPostgres:
    root: Path
    port: int
    process: subprocess.Popen[bytes]
    databases: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)  # how it was started: restart() runs it again
    user: Any = None

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(
        cls, *, fast: bool = False, timeout_s: float = 30.0, base_dir: str | None = None
    ) -> LocalPostgres:
        bindir = find_bindir()
        user = _run_as()
        # As root, the data directory must be reachable by the server's user: /tmp, not a 0700 temp dir.
        root = Path(tempfile.mkdtemp(prefix="corral-pg-", dir=base_dir or ("/tmp" if user else None)))
        try:
            data = root / "data"
            data.mkdir()
            if user is not None:
                os.chown(root, user.pw_uid, user.pw_gid)
                os.chown(data, user.pw_uid, user.pw_gid)
            initdb = [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"]
            _check([*initdb, "--no-locale", "--no-sync"], _As(user))
            settings = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}"]
            if fast:
                settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
            for _ in range(3):  # another process may take the free port before the server binds it
                port = _free_port()
                log = open(root / "postgres.log", "ab")  # noqa: SIM115 (the server writes it until stop)
                process = _As(user).popen(
                    [str(bindir / "postgres"), "-D", str(data), "-p", str(port), *settings],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C of the test run does not hit it; stop() does
                )
                log.close()
                argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), *settings]
                server = cls(root=root, port=port, process=process, argv=argv, user=user)
                if server._wait_ready(timeout_s):
                    atexit.register(server.stop)  # no orphaned server if the caller forgets
                    return server
            raise PostgresUnavailable(f"postgres did not start:\n{server.log_tail()}")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        self._kill()
        raise PostgresUnavailable(f"postgres not ready after {timeout_s:g} s:\n{self.log_tail()}")

    def create_database(self, name: str) -> str:
        """Create database `name` (a plain identifier) and return its SQLAlchemy URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(self.admin_dsn, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.databases.append(name)
        return self.url(name)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.root / "postgres.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def halt(self) -> None:
        """Shut the server down (fast shutdown), keeping its data: a store outage, for tests."""
        self._kill()

    def restart(self, timeout_s: float = 30.0) -> None:
        """Start the halted server again on the same port and data."""
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 (the server writes it until stop)
        self.process = _As(self.user).popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        if not self._wait_ready(timeout_s):
            raise PostgresUnavailable(f"postgres did not restart:\n{self.log_tail()}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT), a kill if it hangs, then delete everything."""
        self._kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass(frozen=True)
class _As:
    """Who a child process runs as: unchanged when we are not root, else `user` with root dropped
    entirely (initdb and postgres check both the real and the effective ids)."""

    user: pwd.struct_passwd | None

    def popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        if self.user is None:
            return subprocess.Popen(command, **kwargs)
        return subprocess.Popen(
            command,
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            extra_groups=[],
            env=self._env(self.user),
            **kwargs,
        )

    @staticmethod
    def _env(user: pwd.struct_passwd) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        home = user.pw_dir if os.path.isdir(user.pw_dir) else "/tmp"
        env.update(HOME=home, USER=user.pw_name, LOGNAME=user.pw_name)
        return env


def _check(command: list[str], runner: _As) -> None:
    process = runner.popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/tmp")
    output, _ = process.communicate()
    if process.returncode != 0:
        text = output.decode(errors="replace")
        raise PostgresUnavailable(f"{Path(command[0]).name} failed ({process.returncode}):\n{text}")
