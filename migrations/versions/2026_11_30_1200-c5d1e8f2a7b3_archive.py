"""archive: keep succeeded jobs' outputs before the provider's URLs expire

Revision ID: c5d1e8f2a7b3
Revises: b3a9c2d4e5f6
Create Date: 2026-11-30 12:00:00+00:00

Outputs stored before this revision hold only `url` and `type`; they are read as they are
(app.jobs.models.read_output) and archived by `poyo-relay archive backfill`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db_types import UTCDateTime

revision: str = "c5d1e8f2a7b3"
down_revision: str | Sequence[str] | None = "b3a9c2d4e5f6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("archive_status", sa.String(length=16), nullable=True))
        batch.add_column(
            sa.Column("archive_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("archive_due_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("archive_error", sa.String(length=500), nullable=True))
    op.create_index(
        "ix_jobs_archive_due",
        "jobs",
        ["archive_due_at"],
        postgresql_where=sa.text("archive_due_at IS NOT NULL"),
        sqlite_where=sa.text("archive_due_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_archive_due", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("archive_error")
        batch.drop_column("archive_due_at")
        batch.drop_column("archive_attempts")
        batch.drop_column("archive_status")
