"""Hardening: start-failure backoff on jobs, private detail of history and audit, durable fair share,
cordoned nodes.

Revision ID: 0002_hardening
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_hardening"
down_revision: str | None = "0001_initial"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("start_failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_at", sa.Float(), nullable=True))
    for table in ("events", "audit"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("private_detail", sa.Text(), nullable=False, server_default=""))
            batch.add_column(sa.Column("related_job", sa.String(32), nullable=False, server_default=""))
    op.create_table(
        "queue_usage",
        sa.Column("queue", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
    )
    op.create_table(
        "node_cordons",
        sa.Column("node", sa.String(256), primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("by", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("node_cordons")
    op.drop_table("queue_usage")
    for table in ("events", "audit"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("related_job")
            batch.drop_column("private_detail")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("start_failures")
