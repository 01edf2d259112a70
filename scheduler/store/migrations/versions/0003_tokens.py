"""API tokens in the store: hashed, with per-token limits, revocable.

Revision ID: 0003_tokens
Revises: 0002_hardening
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_tokens"
down_revision: str | None = "0002_hardening"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the column types of this revision (schema.py may move on; this file must not).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("queues", JSON, nullable=True),
        sa.Column("max_priority", sa.String(64), nullable=True),
        sa.Column("allow_protection", sa.Boolean(), nullable=False),
        sa.Column("max_gpus_per_job", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.UniqueConstraint("digest", name="uq_tokens_digest"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("tokens")
