"""Job arrays: each task of an array records the array's id (its first task's id) and its index.

Revision ID: 0006_job_arrays
Revises: 0005_audit_chain
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_job_arrays"
down_revision: str | None = "0005_audit_chain"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("array_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("array_index", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_array_id", "jobs", ["array_id", "array_index"])


def downgrade() -> None:
    op.drop_index("ix_jobs_array_id", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("array_index")
        batch.drop_column("array_id")
