"""The harness's test of who holds SQLite's write lock (it decides whether a paused SQLite leader
may be taken over): a real write transaction in another process, seen and then gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scheduler.store.engine import create, write
from tests.chaos.harness import sqlite_write_lock_holder

HOLD = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
c.execute("INSERT INTO t VALUES (1)")
print("holding", flush=True)
sys.stdin.readline()
c.execute("COMMIT")
"""


def test_the_process_inside_a_write_transaction_is_named_and_nobody_after_it_ends(tmp_path: Path) -> None:
    db = tmp_path / "corral.db"
    engine = create(f"sqlite:///{db}")  # Corral's own settings: WAL mode
    with write(engine) as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    assert sqlite_write_lock_holder(db) is None

    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        assert sqlite_write_lock_holder(db) == proc.pid
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    assert sqlite_write_lock_holder(db) is None
    engine.dispose()
