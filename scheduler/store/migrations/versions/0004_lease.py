"""The controller lease (leader election with a fencing epoch) and the leader's published view.

Revision ID: 0004_lease
Revises: 0003_tokens
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_lease"
down_revision: str | None = "0003_tokens"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "controller_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(256), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("api_url", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
    )
    op.create_table(
        "controller_view",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("controller_view")
    op.drop_table("controller_lease")
