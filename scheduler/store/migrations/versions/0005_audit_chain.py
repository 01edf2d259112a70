"""The tamper-evident audit log: who (`actor`) and the hash chain (`prev_hash`, `hash`) on every audit
record, and an index to find the last record of a kind (the last config audited).

Records written before this revision are chained here, in seq order, as if just appended (their
actor: the controller, which wrote them all). Their seqs are renumbered 1, 2, 3, ... first where
they had gaps (PostgreSQL's sequence skips the values of rolled-back inserts): from now on every
record is appended with seq = last + 1, so a gap means a removed record.

Revision ID: 0005_audit_chain
Revises: 0004_lease
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from scheduler.model.audit_chain import GENESIS, canonical, digest_of, link
from scheduler.model.records import AuditRecord

revision = "0005_audit_chain"
down_revision: str | None = "0004_lease"
branch_labels: str | None = None
depends_on: str | None = None

_PAGE = 5000


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("actor", sa.String(256), nullable=False, server_default="controller"))
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=False, server_default=""))
    op.create_index("ix_audit_decision", "audit", ["decision", "seq"])
    _chain_existing(op.get_bind())


def _chain_existing(connection: sa.engine.Connection) -> None:
    audit = sa.table(
        "audit",
        *(
            sa.column(name)
            for name in (
                "seq", "time", "job_id", "decision", "attempt", "nodes", "node_regions", "data_region",
                "residency_ok", "detail", "private_detail", "related_job", "actor", "prev_hash", "hash",
            )
        ),
    )  # fmt: skip
    renumber = sa.update(audit).where(audit.c.seq == sa.bindparam("old")).values(seq=sa.bindparam("new"))
    seqs = [int(s) for (s,) in connection.execute(sa.select(audit.c.seq).order_by(audit.c.seq))]
    # Ascending: the new seq (≤ the old) is always free, as every lower row already moved below it.
    moves = [{"old": old, "new": new} for new, old in enumerate(seqs, start=1) if old != new]
    for move in moves:
        connection.execute(renumber, move)
    prev, after = GENESIS, 0
    chain = sa.update(audit).where(audit.c.seq == sa.bindparam("b_seq"))
    while True:
        query = sa.select(audit).where(audit.c.seq > after).order_by(audit.c.seq).limit(_PAGE)
        rows = connection.execute(query).mappings().all()
        if not rows:
            return
        updates = []
        for row in rows:
            record = AuditRecord(
                time=row["time"],
                job_id=row["job_id"],
                decision=row["decision"],
                attempt=row["attempt"],
                nodes=tuple(_json_list(row["nodes"])),
                node_regions=tuple(_json_list(row["node_regions"])),
                data_region=row["data_region"],
                residency_ok=bool(row["residency_ok"]),
                detail=row["detail"],
                private_detail=row["private_detail"],
                related_job=row["related_job"],
                actor=row["actor"],
            )
            new = link(prev, digest_of(canonical(record, int(row["seq"]))))
            updates.append({"b_seq": row["seq"], "prev_hash": prev, "hash": new})
            prev = new
        connection.execute(chain, updates)
        after = int(rows[-1]["seq"])


def _json_list(value: object) -> list[str]:
    """A JSON column as read through a plain table (SQLite: text; PostgreSQL: already a list)."""
    import json

    loaded = json.loads(value) if isinstance(value, str) else value
    return [str(v) for v in loaded] if isinstance(loaded, list) else []


def downgrade() -> None:
    op.drop_index("ix_audit_decision", "audit")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("actor")
