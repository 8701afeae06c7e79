"""jobs.checked_at: when the provider was last asked about a job

Revision ID: 7d2f0c3e5a61
Revises: 4c1e2b7a9d10
Create Date: 2026-11-25 23:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db_types import UTCDateTime

revision: str = "7d2f0c3e5a61"
down_revision: str | Sequence[str] | None = "4c1e2b7a9d10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("checked_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("checked_at")
