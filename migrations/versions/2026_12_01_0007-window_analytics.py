"""window analytics: session_lifetime_counters and stats_snapshots

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "session_lifetime_counters",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("ended", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "bucket", "shard", name="pk_session_lifetime_counters"),
    )
    op.create_table(
        "stats_snapshots",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("taken_at", TS, nullable=False),
        sa.Column("live", sa.BigInteger(), nullable=False),
        sa.Column("totals", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "taken_at", name="pk_stats_snapshots"),
    )
    op.create_index("ix_stats_snapshots_taken_at", "stats_snapshots", ["taken_at"])


def downgrade() -> None:
    op.drop_index("ix_stats_snapshots_taken_at", table_name="stats_snapshots")
    op.drop_table("stats_snapshots")
    op.drop_table("session_lifetime_counters")
