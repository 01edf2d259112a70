"""The audit hash chain on SQLite and PostgreSQL: it links over many appends and concurrent writers,
and a record edited, deleted or inserted by hand, or a truncated tail, is caught naming the first
bad seq — by the store's walk and by `corral audit verify --db-url-file` as a subprocess."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.model.audit_chain import GENESIS, ChainError, canonical, digest_of, link
from scheduler.model.queue import Queue
from scheduler.model.records import AuditRecord, Batch
from scheduler.store import audit_log, codec
from scheduler.store import engine as engines
from scheduler.store.store import Store
from tests.store.helpers import spec

ROOT = Path(__file__).resolve().parents[2]


def _records(n: int, start: float = 1.0, region: str = "cn-north") -> list[AuditRecord]:
    return [
        AuditRecord(
            start + i,
            str(i + 1),
            "place",
            nodes=(f"{region}-n{i % 3}",),
            node_regions=(region,),
            data_region=region,
            detail=f"placed é {i}",  # non-ASCII: the canonical form is UTF-8
        )
        for i in range(n)
    ]


def _fill(store: Store, n: int = 20) -> None:
    for i in range(0, n, 4):  # batches of 4, as controller steps write them
        store.append_audit(_records(4, start=float(i))[: n - i])


def _sql(store: Store, statement: str, **params: object) -> None:
    with engines.write(store.engine) as connection:
        connection.execute(sa.text(statement), params)


def _broken(store: Store, head: tuple[int, str] | None = None) -> ChainError:
    with pytest.raises(ChainError) as caught:
        audit_log.verify(store.engine, head)
    return caught.value


def test_the_chain_links_every_append_and_apply(store: Store) -> None:
    job, _ = store.submit(spec(), "team-a", 1.0)
    for i in range(30):
        store.apply(Batch(audit=_records(1 + i % 3, start=float(i))))
    store.append_audit(_records(2))
    store.request_cancel(job.id, None, 50.0, actor="team-a (token 3)")
    checked = audit_log.verify(store.engine)
    head = store.audit_head()
    assert head is not None and checked.count == head[0] == 30 + 30 + 2 + 1 and checked.last_hash == head[1]
    chain = store.audit_chain(limit=None)
    assert [e.seq for e in chain] == list(range(1, head[0] + 1)) and chain[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))
    last = chain[-1]
    assert '"actor":"team-a (token 3)"' in last.canonical and '"decision":"cancel-request"' in last.canonical
    # the hash is the documented recipe over the canonical text
    assert last.hash == link(last.prev_hash, digest_of(last.canonical))
    assert canonical(store.audit(job.id)[-1], last.seq) == last.canonical


def test_concurrent_writers_threads_and_processes_never_fork_the_chain(store: Store) -> None:
    code = (
        "import sys; from scheduler.store.store import Store;"
        "from scheduler.model.records import AuditRecord;"
        "s = Store.open(sys.argv[1])\n"
        "for i in range(40): s.append_audit([AuditRecord(float(i), 'p', 'place')] * (1 + i % 2))\n"
        "s.close()"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", code, store.url], cwd=ROOT, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(25):
                if i % 2:
                    store.append_audit(_records(1 + i % 3))
                else:
                    store.apply(Batch(audit=_records(2)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for child in children:
        assert child.wait(120) == 0, child.stderr.read() if child.stderr else ""
    assert not errors, errors
    per_thread = sum(1 + i % 3 if i % 2 else 2 for i in range(25))
    expected = 6 * per_thread + 2 * sum(1 + i % 2 for i in range(40))
    checked = audit_log.verify(store.engine)
    assert checked.count == checked.last_seq == expected


def test_an_untouched_chain_verifies_and_every_hand_edit_is_caught(db_url: str) -> None:
    cases = {
        "edited detail": ("UPDATE audit SET detail = 'nothing to see' WHERE seq = 10", 10, "was edited"),
        "edited region": ("UPDATE audit SET node_regions = '[\"eu-west\"]' WHERE seq = 10", 10, "was edited"),
        "deleted": ("DELETE FROM audit WHERE seq = 10", 11, "record 10 removed"),
        "first deleted": ("DELETE FROM audit WHERE seq = 1", 2, "record 1 removed"),
    }
    for name, (statement, seq, words) in cases.items():
        store = Store.open(db_url)
        try:
            _sql(store, "DELETE FROM audit")
            _fill(store)
            assert audit_log.verify(store.engine).count == 20, name
            if "node_regions" in statement and store.dialect == "postgresql":
                statement = statement.replace("'[\"eu-west\"]'", "'[\"eu-west\"]'::jsonb")
            _sql(store, statement)
            error = _broken(store)
            assert (error.seq, words in error.message) == (seq, True), (name, error.message)
        finally:
            store.close()


def test_an_inserted_record_is_caught_even_with_a_valid_hash_of_its_own(store: Store) -> None:
    _fill(store)
    # A forger renumbers 11..20 to 12..21 and puts a record of their own at 11, hashed after record 10.
    _sql(store, "UPDATE audit SET seq = seq + 100 WHERE seq > 10")
    _sql(store, "UPDATE audit SET seq = seq - 99 WHERE seq > 100")
    chain = {e.seq: e for e in store.audit_chain(limit=None)}
    forged = AuditRecord(10.5, "99", "place", nodes=("x",), node_regions=("eu-west",), data_region="cn-north")
    with engines.write(store.engine) as connection:
        prev = chain[10].hash
        row = {"seq": 11, "prev_hash": prev, "hash": link(prev, digest_of(canonical(forged, 11)))}
        connection.execute(sa.insert(audit_log.audit), [{**codec.audit_columns(forged), **row}])
    error = _broken(store)
    assert error.seq == 12 and "record 12 was edited" in error.message, error.message  # renumbered
    # appended after the head with a hash of its own over a made-up prev_hash: it does not link
    _sql(store, "DELETE FROM audit WHERE seq > 10")
    with engines.write(store.engine) as connection:
        row = {"seq": 11, "prev_hash": "f" * 64, "hash": link("f" * 64, digest_of(canonical(forged, 11)))}
        connection.execute(sa.insert(audit_log.audit), [{**codec.audit_columns(forged), **row}])
    error = _broken(store)
    assert error.seq == 11 and "does not link to record 10" in error.message, error.message


def test_a_truncated_tail_is_caught_against_the_head(store: Store) -> None:
    _fill(store)
    head = store.audit_head()
    assert head is not None and head[0] == 20
    assert audit_log.verify(store.engine, head).count == 20
    _sql(store, "DELETE FROM audit WHERE seq > 17")
    assert audit_log.verify(store.engine).count == 17  # alone, a shorter chain is a valid chain
    error = _broken(store, head)
    assert error.seq == 18 and "records 18-20 removed from its end" in error.message
    # rewritten after the head was taken: the head's seq now has another hash
    store.append_audit(_records(3))
    error = _broken(store, head)
    assert error.seq == 20 and "not the head given" in error.message


def test_denied_requests_are_batched_and_a_flood_is_dropped_counted_and_recorded(store: Store) -> None:
    writer = audit_log.DeniedWriter(store.engine, max_queue=50, max_batch=20, min_interval_s=0.05)
    denial = AuditRecord(1.0, "", "denied", detail="401 GET /v1/jobs", actor="anonymous")
    accepted = sum(writer.put(denial) for _ in range(500))  # far faster than the writer drains
    writer.flush()
    writer.put(denial)  # the next batch records the gap
    writer.close()
    rows = store.audit(limit=None)
    denied = [r for r in rows if r.decision == "denied"]
    gaps = [r for r in rows if r.decision == "denied-dropped"]
    assert writer.dropped == 500 - accepted > 0 and len(denied) == accepted + 1
    assert sum(int(g.detail.split()[0]) for g in gaps) == writer.dropped
    assert audit_log.verify(store.engine).count == len(rows)


def test_a_config_change_is_audited_once_with_what_changed(store: Store) -> None:
    queues = [Queue(name="a", quota={"H100": 8})]
    config = {"queues": [q.model_dump(mode="json") for q in queues], "policy": {"name": "corral"}}
    assert store.sync_queues(queues, config=config, now=1.0)
    assert not store.sync_queues(queues, config=config, now=2.0)  # a restart with the same config
    assert store.sync_queues(queues, config={**config, "policy": {"name": "fifo"}}, now=3.0)
    first, second = [r for r in store.audit(limit=None) if r.decision == "config"]
    assert "first config" in first.detail and second.detail.endswith("(changed: policy)")
    assert second.private_detail.startswith('{"policy":{"name":"fifo"},"queues":[{"borrowing_limit"')


def test_cli_verify_reads_the_database_itself(store: Store, tmp_path: Path) -> None:
    _fill(store)
    url_file = tmp_path / "db.url"
    url_file.write_text(store.url + "\n")
    run = [sys.executable, "-m", "scheduler.cli", "audit", "verify", "--db-url-file", str(url_file)]
    ok = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 20 audit records"), ok.stderr
    head = f"20:{store.audit_head()[1]}"  # type: ignore[index]
    _sql(store, "UPDATE audit SET detail = 'edited' WHERE seq = 7")
    bad = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 1 and bad.stdout == "", bad
    assert bad.stderr.strip().splitlines() == ["error: audit chain broken at record 7: record 7 was edited: "
                                                "its hash does not match its content"]  # fmt: skip
    _sql(store, "DELETE FROM audit WHERE seq >= 7")
    cut = subprocess.run([*run, "--head", head], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert cut.returncode == 1 and "records 7-20 removed from its end (truncated)" in cut.stderr, cut.stderr
    assert len(cut.stderr.strip().splitlines()) == 1 and "Traceback" not in cut.stderr


def test_records_written_before_the_chain_are_chained_by_the_upgrade(db_url: str) -> None:
    from alembic import command

    from scheduler.store import migrate

    engine = engines.create(db_url)
    with engines.write(engine) as connection:
        command.upgrade(migrate.config(connection), "0004_lease")
        for seq in (1, 2, 5, 9):  # PostgreSQL's sequence skips the values of rolled-back inserts
            connection.execute(
                sa.text(
                    "INSERT INTO audit (seq, time, job_id, decision, attempt, nodes, node_regions,"
                    " data_region, residency_ok, detail, private_detail, related_job)"
                    " VALUES (:seq, 1.5, '7', 'place', 0, '[\"n1\"]', '[\"cn-north\"]', 'cn-north', :ok,"
                    " 'placed', '', '')"
                ),
                {"seq": seq, "ok": True},
            )
    engine.dispose()
    store = Store.open(db_url)
    try:
        assert audit_log.verify(store.engine).count == 4
        assert [(r.seq, r.actor, r.node_regions) for r in store.audit(limit=None)] == [
            (i, "controller", ("cn-north",)) for i in (1, 2, 3, 4)
        ]
        store.append_audit(_records(2))  # new records follow on
        assert audit_log.verify(store.engine).count == 6
    finally:
        store.close()
