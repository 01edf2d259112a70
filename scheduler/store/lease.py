"""Leader election in the store: a lease with a fencing epoch, the same on and off Kubernetes.

Any number of controller processes share one store. One holds the lease and decides; the others
serve the API and try to take the lease when it expires. Each change of holder adds one to
`epoch` (the fencing token), and every write the leader makes checks, inside its own transaction,
that the epoch is still its own (`verify`): a paused or partitioned old leader that comes back
finds a larger epoch and its writes are refused (LockLost), so it steps down without having
changed anything. On PostgreSQL `verify` reads the lease row FOR SHARE, so a takeover waits for a
leader's transaction in flight (or that transaction sees the takeover); on SQLite every write
transaction holds the database's write lock (BEGIN IMMEDIATE), which orders them the same way.

Expiry uses the database's clock, so replicas on machines with skewed clocks agree. A holder also
keeps a local deadline on its monotonic clock: it stops acting once `duration - margin` has passed
since the start of its last successful renewal (`check`), before anyone else may take over.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from scheduler.store import engine as engines
from scheduler.store.errors import LockLost
from scheduler.store.schema import controller_lease
from scheduler.store.store import Store

__all__ = ["DEFAULT_LEASE_S", "Lease", "LeaseInfo", "current_lease", "db_now"]

NAME = "controller"
DEFAULT_LEASE_S = 15.0
_T = controller_lease.c


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Who leads now (as the store says)."""

    holder: str
    epoch: int
    expires_in_s: float  # ≤ 0: expired, the next candidate takes it
    api_url: str
    pid: int


def db_now(connection: Connection) -> float:
    """The database server's clock, in Unix seconds."""
    if connection.dialect.name == "postgresql":
        query = sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")
    else:
        query = sa.text("SELECT (julianday('now') - 2440587.5) * 86400.0")
    return float(connection.execute(query).scalar_one())


def current_lease(store: Store) -> LeaseInfo | None:
    """The lease as the store has it now, or None before any controller ever led."""
    with engines.read(store.engine) as connection:
        row = connection.execute(sa.select(controller_lease).where(_T.name == NAME)).mappings().first()
        if row is None:
            return None
        now = db_now(connection)
    return LeaseInfo(row["holder"], row["epoch"], row["expires_at"] - now, row["api_url"], row["pid"])


class Lease:
    """This process's candidacy for, and (while `epoch` > 0) tenure of, the controller lease."""

    def __init__(
        self,
        store: Store,
        *,
        duration_s: float = DEFAULT_LEASE_S,
        api_url: str = "",
        holder: str | None = None,
    ) -> None:
        if duration_s <= 0:
            raise ValueError(f"the lease duration must be positive, got {duration_s}")
        self.store = store
        self.duration_s = duration_s
        self.api_url = api_url
        self.holder = holder or f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.epoch = 0  # 0: not the leader
        self._valid_until = 0.0  # monotonic: act as leader only before this
        # Stop acting a little before the store's expiry: a renewal's round trip and a cycle in flight.
        self.margin_s = min(2.0, duration_s / 5)

    @property
    def leading(self) -> bool:
        return self.epoch > 0 and time.monotonic() < self._valid_until

    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired (a new epoch), or renew it if it is ours."""
        started = time.monotonic()
        try:
            with engines.write(self.store.engine) as connection:
                self._bound_by_lease(connection, waiting=True)
                now = db_now(connection)
                row = (
                    connection.execute(sa.select(controller_lease).where(_T.name == NAME).with_for_update())
                    .mappings()
                    .first()
                )
                if row is None:
                    epoch = 1
                    connection.execute(sa.insert(controller_lease).values(**self._columns(epoch, now)))
                elif row["holder"] == self.holder and row["epoch"] == self.epoch and self.epoch > 0:
                    epoch = self.epoch
                    connection.execute(
                        sa.update(controller_lease)
                        .where(_T.name == NAME)
                        .values(expires_at=now + self.duration_s)
                    )
                elif row["expires_at"] <= now:
                    epoch = int(row["epoch"]) + 1
                    connection.execute(
                        sa.update(controller_lease).where(_T.name == NAME).values(**self._columns(epoch, now))
                    )
                else:
                    self.epoch = 0
                    return False
        except IntegrityError:  # two first candidates inserted at once (PostgreSQL): the other won
            self.epoch = 0
            return False
        except OperationalError as exc:
            if not _lock_timed_out(exc):
                raise
            self.epoch = 0  # the holder sits on the row (paused?): its session ends by itself, try again
            return False
        self.epoch = epoch
        self._valid_until = started + self.duration_s - self.margin_s
        return True

    def renew(self) -> None:
        """Extend the lease; LockLost if another controller took it (this one must stop at once)."""
        if self.epoch <= 0:
            raise LockLost("this controller does not hold the lease")
        started = time.monotonic()
        with engines.write(self.store.engine) as connection:
            self._bound_by_lease(connection)
            now = db_now(connection)
            renewed = connection.execute(
                sa.update(controller_lease)
                .where(_T.name == NAME, _T.holder == self.holder, _T.epoch == self.epoch)
                .values(expires_at=now + self.duration_s)
            ).rowcount
        if not renewed:
            epoch, self.epoch = self.epoch, 0
            raise LockLost(f"another controller took the lease (this one held epoch {epoch})")
        self._valid_until = started + self.duration_s - self.margin_s

    def check(self) -> None:
        """The controller's Fence, before it acts: LockLost once the local deadline has passed (a
        pause, a slow store) — by then another controller may be about to lead."""
        if self.epoch <= 0:
            raise LockLost("this controller does not hold the lease")
        if time.monotonic() >= self._valid_until:
            raise LockLost(
                f"the lease (epoch {self.epoch}) was not renewed within {self.duration_s:g} s "
                "(paused, or the store was slow): another controller may lead now"
            )

    def verify(self, connection: Connection) -> None:
        """Inside a write transaction: LockLost unless the epoch is still ours (the fence itself)."""
        self._bound_by_lease(connection)
        row = connection.execute(
            sa.select(_T.holder, _T.epoch).where(_T.name == NAME).with_for_update(read=True)
        ).first()
        if row is None or row.holder != self.holder or row.epoch != self.epoch:
            now_epoch = row.epoch if row is not None else 0
            raise LockLost(
                f"fenced: the store's lease epoch is {now_epoch}, this controller's {self.epoch} "
                "(another controller leads now); the write was refused"
            )

    def release(self) -> None:
        """Give the lease up now (clean shutdown): a follower takes over at its next try."""
        if self.epoch <= 0:
            return
        with engines.write(self.store.engine) as connection:
            connection.execute(
                sa.update(controller_lease)
                .where(_T.name == NAME, _T.holder == self.holder, _T.epoch == self.epoch)
                .values(expires_at=0.0)
            )
        self.epoch = 0
        self._valid_until = 0.0

    def _bound_by_lease(self, connection: Connection, waiting: bool = False) -> None:
        """PostgreSQL: a holder paused inside a transaction (SIGSTOP, a long GC, a frozen VM) would keep
        its lock on the lease row, and with it every takeover waiting, for as long as the pause lasts.
        So the server ends any lease transaction left idle longer than the lease (the paused
        holder's commit then fails: fenced by the database itself), and a candidate stops waiting for
        the row after the lease and tries again. SQLite: one writer at a time, nothing to bound."""
        if connection.dialect.name != "postgresql":
            return
        limit_ms = max(int(self.duration_s * 1000), 100)
        connection.execute(sa.text(f"SET LOCAL idle_in_transaction_session_timeout = {limit_ms}"))
        if waiting:
            connection.execute(sa.text(f"SET LOCAL lock_timeout = {limit_ms}"))

    def _columns(self, epoch: int, now: float) -> dict[str, object]:
        return {
            "name": NAME,
            "holder": self.holder,
            "epoch": epoch,
            "expires_at": now + self.duration_s,
            "acquired_at": now,
            "api_url": self.api_url,
            "pid": os.getpid(),
        }


def _lock_timed_out(exc: OperationalError) -> bool:
    """PostgreSQL's lock_not_available (55P03): lock_timeout passed while waiting for a row."""
    return getattr(exc.orig, "sqlstate", None) == "55P03"
