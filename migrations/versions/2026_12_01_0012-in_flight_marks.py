"""in-flight marks: session_in_flight, what keeps a session with a request in flight from idle expiry

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01

A mark holds its session's `expires_at` at least until the mark's own expiry (capped by the absolute
lifetime), and ends with an idle timeout counted from the request's end (docs/design.md, "In-flight work").
Marks live in their own table, keyed tenant-first, and go with their session (ON DELETE CASCADE); the purge
removes the ones whose replica stopped renewing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "session_in_flight",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("mark_id", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=True),
        sa.Column("holder", sa.Text(), nullable=True),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant", "session_id"],
            ["sessions.tenant", "sessions.id"],
            name="fk_session_in_flight_tenant_session_id_sessions",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant", "session_id", "mark_id", name="pk_session_in_flight"),
    )
    op.create_index("ix_session_in_flight_expires_at", "session_in_flight", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_session_in_flight_expires_at", table_name="session_in_flight")
    op.drop_table("session_in_flight")
