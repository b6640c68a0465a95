"""Every primary key starts with `tenant`: session_events (tenant, position), broker_state (tenant, key)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

The property that lets the schema be distributed by tenant (docs/scaling.md, tests/test_sharding.py).

- `session_events`: the key becomes `(tenant, position)`, which is also what a stream reads by (it
  replaces `ix_session_events_tenant_position`); positions stay unique by construction. The retention
  purge walks positions across tenants, so `position` keeps a plain index.
- `broker_state`: rows get a `tenant`; fleet-wide facts (gauge claim, purge backlog) live under the
  empty tenant. The event retention horizon becomes per tenant, so a stream is told of a gap only when
  its own tenant's events were removed. The fleet-wide horizon recorded before this migration stays
  under the empty tenant and keeps counting as every tenant's floor.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("pk_session_events", "session_events", type_="primary")
    op.drop_index("ix_session_events_tenant_position", table_name="session_events")
    op.create_primary_key("pk_session_events", "session_events", ["tenant", "position"])
    op.create_index("ix_session_events_position", "session_events", ["position"])

    op.add_column(
        "broker_state", sa.Column("tenant", sa.Text(), nullable=False, server_default=sa.text("''"))
    )
    op.alter_column("broker_state", "tenant", server_default=None)
    op.drop_constraint("pk_broker_state", "broker_state", type_="primary")
    op.create_primary_key("pk_broker_state", "broker_state", ["tenant", "key"])


def downgrade() -> None:
    # Per-tenant horizons fold into one fleet-wide horizon (the highest: a stream may be told of a gap
    # that only another tenant had, never miss one).
    op.execute(
        """
        WITH highest AS (
            DELETE FROM broker_state WHERE key = 'events_purged_through' RETURNING value, updated_at
        )
        INSERT INTO broker_state (tenant, key, value, updated_at)
        SELECT '', 'events_purged_through', max(value), max(updated_at) FROM highest HAVING count(*) > 0
        """
    )
    op.drop_constraint("pk_broker_state", "broker_state", type_="primary")
    op.drop_column("broker_state", "tenant")
    op.create_primary_key("pk_broker_state", "broker_state", ["key"])

    op.drop_index("ix_session_events_position", table_name="session_events")
    op.drop_constraint("pk_session_events", "session_events", type_="primary")
    op.create_primary_key("pk_session_events", "session_events", ["position"])
    op.create_index("ix_session_events_tenant_position", "session_events", ["tenant", "position"])
