"""sessions.metadata_bytes: the size of a session's metadata as JSON text, for list pages cut by bytes

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Nullable and without a default, so adding it rewrites nothing; every write of metadata sets it, and a
list page measures the rows written before this migration from their metadata instead (docs/design.md,
"Heavy reads").
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("metadata_bytes", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("sessions", "metadata_bytes")
