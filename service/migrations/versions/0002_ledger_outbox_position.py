"""ledger: where each charge sat in its team's outbox (outbox_ms, outbox_seq)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

A counter rebuild reads each counter and the outbox's position in one atomic step, then sums
the ledger rows up to that position; rows written before this revision have no position and,
like charges written straight to the ledger, always count. Both columns are nullable, so the
upgrade is a metadata-only change on PostgreSQL (no table rewrite, no long lock).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("outbox_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("outbox_seq", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("outbox_seq")
        batch.drop_column("outbox_ms")
