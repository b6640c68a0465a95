"""stream leases: session_leases, sessions.max_leases and the fencing-token sequence

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

A lease is what a replica holds while it serves a session's live stream (docs/design.md, "Leases"). Leases
live in their own table, keyed tenant-first, so acquiring and renewing them never writes the sessions
table's indexed columns on a touch's behalf; they go with their session (ON DELETE CASCADE). The fencing
tokens come from one sequence: they only grow, across every takeover. `max_leases` has a constant default,
so adding it does not rewrite the sessions table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.add_column(
        "sessions", sa.Column("max_leases", sa.Integer(), nullable=False, server_default=sa.text("1"))
    )
    op.execute("CREATE SEQUENCE session_lease_fencing AS bigint")
    op.create_table(
        "session_leases",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("lease_id", sa.Text(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("fencing_token", sa.BigInteger(), nullable=False),
        sa.Column("ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("acquired_at", Timestamp, nullable=False),
        sa.Column("renewed_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant", "session_id"],
            ["sessions.tenant", "sessions.id"],
            name="fk_session_leases_tenant_session_id_sessions",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant", "session_id", "slot", name="pk_session_leases"),
    )
    op.create_index("ix_session_leases_expires_at", "session_leases", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_session_leases_expires_at", table_name="session_leases")
    op.drop_table("session_leases")
    op.execute("DROP SEQUENCE session_lease_fencing")
    op.drop_column("sessions", "max_leases")
