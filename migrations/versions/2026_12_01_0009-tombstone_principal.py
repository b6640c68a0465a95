"""session_tombstones.principal: whom an ended session was bound to, so only they learn why it ended

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Nullable: tombstones written before this migration have none and keep answering their reason to every
caller of the tenant until they are forgotten (TOMBSTONE_RETENTION_SECONDS).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("session_tombstones", sa.Column("principal", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("session_tombstones", "principal")
