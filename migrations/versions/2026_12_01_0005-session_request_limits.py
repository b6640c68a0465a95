"""per-session request limits: sessions.max_requests, max_requests_per_minute and synced counts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Constant defaults (0: unlimited, nothing counted yet), so adding them does not rewrite the table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("max_requests", sa.Integer()),
    ("max_requests_per_minute", sa.Integer()),
    ("request_count", sa.BigInteger()),
    ("rate_window", sa.Integer()),
    ("rate_count", sa.Integer()),
)


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("sessions", sa.Column(name, kind, nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    for name, _ in reversed(COLUMNS):
        op.drop_column("sessions", name)
