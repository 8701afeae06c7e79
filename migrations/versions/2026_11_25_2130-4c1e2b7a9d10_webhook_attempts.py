"""client webhooks: count delivery attempts per job

Revision ID: 4c1e2b7a9d10
Revises: 9f652ae56f1d
Create Date: 2026-11-25 21:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4c1e2b7a9d10"
down_revision: str | Sequence[str] | None = "9f652ae56f1d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The server default fills existing rows; the application always sets the value.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("webhook_attempts", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook_attempts")
