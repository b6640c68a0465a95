"""prompt expiry: sessions.check_at (when the purge next looks at a row) replaces purge_after

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Existing rows get check_at = -infinity: every one is due at once, and the purge's first passes end the
expired ones and arm the rest at their real expiry (paced like any purge work), so the upgrade itself
neither rewrites the table nor holds its lock for long. docs/design.md, "Schema" and "Purge".
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    # A constant default fills existing rows without rewriting the table; new rows always set it.
    op.add_column("sessions", sa.Column("check_at", TS, nullable=False, server_default="-infinity"))
    op.alter_column("sessions", "check_at", server_default=None)
    op.add_column("sessions", sa.Column("warned_at", TS, nullable=True))
    op.create_index("ix_sessions_check_at", "sessions", ["check_at"])
    op.drop_index("ix_sessions_purge_after", table_name="sessions")
    op.drop_column("sessions", "purge_after")


def downgrade() -> None:
    op.add_column("sessions", sa.Column("purge_after", TS, nullable=True))
    # The old design's upper bound: expiry plus its 600 s step.
    op.execute("UPDATE sessions SET purge_after = expires_at + interval '600 seconds'")
    op.alter_column("sessions", "purge_after", nullable=False)
    op.create_index("ix_sessions_purge_after", "sessions", ["purge_after"])
    op.drop_index("ix_sessions_check_at", table_name="sessions")
    op.drop_column("sessions", "warned_at")
    op.drop_column("sessions", "check_at")
