"""initial schema: sessions, tombstones, counters

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("principal", sa.Text(), nullable=True),
        sa.Column("client_id", sa.Text(), nullable=True),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("protocol_version", sa.Text(), nullable=True),
        sa.Column("metadata", postgresql.JSON(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("idle_timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("max_lifetime_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("purge_after", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "id", name="pk_sessions"),
        postgresql_with={
            "fillfactor": 80,
            "autovacuum_vacuum_scale_factor": 0.02,
            "autovacuum_analyze_scale_factor": 0.02,
        },
    )
    op.create_index("ix_sessions_purge_after", "sessions", ["purge_after"])
    op.create_index(
        "ix_sessions_tenant_principal",
        "sessions",
        ["tenant", "principal"],
        postgresql_where=sa.text("principal IS NOT NULL"),
    )
    op.create_index(
        "ix_sessions_tenant_client_id",
        "sessions",
        ["tenant", "client_id"],
        postgresql_where=sa.text("client_id IS NOT NULL"),
    )
    op.create_index(
        "ix_sessions_tenant_owner",
        "sessions",
        ["tenant", "owner"],
        postgresql_where=sa.text("owner IS NOT NULL"),
    )

    op.create_table(
        "session_tombstones",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ended_at", TS, nullable=False),
        sa.Column("forget_after", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "id", name="pk_session_tombstones"),
    )
    op.create_index("ix_session_tombstones_forget_after", "session_tombstones", ["forget_after"])

    op.create_table(
        "session_counters",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "name", "shard", name="pk_session_counters"),
    )


def downgrade() -> None:
    op.drop_table("session_counters")
    op.drop_index("ix_session_tombstones_forget_after", table_name="session_tombstones")
    op.drop_table("session_tombstones")
    op.drop_index("ix_sessions_tenant_owner", table_name="sessions")
    op.drop_index("ix_sessions_tenant_client_id", table_name="sessions")
    op.drop_index("ix_sessions_tenant_principal", table_name="sessions")
    op.drop_index("ix_sessions_purge_after", table_name="sessions")
    op.drop_table("sessions")
