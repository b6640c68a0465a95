"""request analytics: gateway_request_totals

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_request_totals",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("timed", sa.BigInteger(), nullable=False),
        sa.Column("duration_ms_total", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "method", name="pk_gateway_request_totals"),
    )


def downgrade() -> None:
    op.drop_table("gateway_request_totals")
