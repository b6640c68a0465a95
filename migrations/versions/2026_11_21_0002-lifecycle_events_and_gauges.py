"""lifecycle: session events, fleet gauges, broker state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "session_events",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("data", postgresql.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_session_events"),
    )
    op.create_index("ix_session_events_tenant_position", "session_events", ["tenant", "position"])
    op.create_index("ix_session_events_occurred_at", "session_events", ["occurred_at"])
    op.create_table(
        "fleet_gauges",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("live", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "kind", name="pk_fleet_gauges"),
    )
    op.create_table(
        "broker_state",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_broker_state"),
    )


def downgrade() -> None:
    op.drop_table("broker_state")
    op.drop_table("fleet_gauges")
    op.drop_index("ix_session_events_occurred_at", table_name="session_events")
    op.drop_index("ix_session_events_tenant_position", table_name="session_events")
    op.drop_table("session_events")
