"""Initial schema: jobs, allocations, events, audit, queues.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the column types of this revision (schema.py may move on; this file must not).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.schema.CreateSequence(sa.Sequence("jobs_change_seq")))
    op.create_table(
        "jobs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.String(64), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("submitted_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("first_started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("restart_count", sa.Integer(), nullable=False),
        sa.Column("preemption_count", sa.Integer(), nullable=False),
        sa.Column("attained_gpu_s", sa.Float(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("allocation", JSON, nullable=True),
        sa.Column("pending_reason", sa.Text(), nullable=True),
        sa.Column("stop_reason", sa.String(16), nullable=True),
        sa.Column("stop_requested_at", sa.Float(), nullable=True),
        sa.Column("cancel_requested_at", sa.Float(), nullable=True),
        sa.Column("cancel_grace_s", sa.Float(), nullable=True),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("team", "idempotency_key", name="uq_jobs_team_idempotency_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_team", "jobs", ["team"])
    op.create_index("ix_jobs_change_seq", "jobs", ["change_seq"], unique=True)

    op.create_table(
        "allocations",
        sa.Column("node", sa.String(256), nullable=False),
        sa.Column("gpu", sa.Integer(), nullable=False),
        sa.Column("job_id", ID, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("node", "gpu", name="pk_allocations"),
    )
    op.create_index("ix_allocations_job_id", "allocations", ["job_id"])

    op.create_table(
        "events",
        sa.Column("seq", ID, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(256), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_job_id", "events", ["job_id", "seq"])

    op.create_table(
        "audit",
        sa.Column("seq", ID, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("decision", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("nodes", JSON, nullable=False),
        sa.Column("node_regions", JSON, nullable=False),
        sa.Column("data_region", sa.String(64), nullable=False),
        sa.Column("residency_ok", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_job_id", "audit", ["job_id", "seq"])

    op.create_table(
        "queues",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("spec", JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("queues", "audit", "events", "allocations", "jobs"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.schema.DropSequence(sa.Sequence("jobs_change_seq")))
