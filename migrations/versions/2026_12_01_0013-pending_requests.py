"""pending server-to-client requests: session_pending_requests (elicitation, sampling, roots)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01

The replica that sends a request to a client records it here; the client's reply may reach any replica,
which hands it over through this table (docs/design.md, "Pending requests"). Keyed tenant-first by the
session and the JSON-RPC id (as JSON text); rows go with their session (ON DELETE CASCADE) and are
forgotten by the purge a retention period after they ended.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "session_pending_requests",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("request_key", sa.Text(), nullable=False),
        sa.Column("pending_id", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("deadline", Timestamp, nullable=False),
        sa.Column("ended_at", Timestamp, nullable=True),
        sa.Column("response", postgresql.JSON(), nullable=True),
        sa.Column("check_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant", "session_id"],
            ["sessions.tenant", "sessions.id"],
            name="fk_session_pending_requests_tenant_session_id_sessions",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant", "session_id", "request_key", name="pk_session_pending_requests"),
    )
    op.create_index("ix_session_pending_requests_check_at", "session_pending_requests", ["check_at"])


def downgrade() -> None:
    op.drop_index("ix_session_pending_requests_check_at", table_name="session_pending_requests")
    op.drop_table("session_pending_requests")
