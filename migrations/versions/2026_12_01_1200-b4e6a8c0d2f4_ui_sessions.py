"""dashboard: sessions; jobs ended per owner, day and model, by outcome

Revision ID: b4e6a8c0d2f4
Revises: a8d3f5b7c9e1
Create Date: 2026-12-01 12:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db_types import UTCDateTime

revision: str = "b4e6a8c0d2f4"
down_revision: str | Sequence[str] | None = "a8d3f5b7c9e1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ui_sessions"),
    )
    op.create_index("ix_ui_sessions_expires_at", "ui_sessions", ["expires_at"])
    counter = {"nullable": False, "server_default": "0"}
    with op.batch_alter_table("usage_daily") as batch:
        batch.add_column(sa.Column("succeeded_jobs", sa.Integer(), **counter))
        batch.add_column(sa.Column("failed_jobs", sa.Integer(), **counter))
    # Jobs that ended before: counted by outcome, per the day their job was created.
    sqlite = op.get_bind().dialect.name == "sqlite"
    day = "date(created_at)" if sqlite else "(created_at AT TIME ZONE 'UTC')::date"
    for column, status in (("succeeded_jobs", "succeeded"), ("failed_jobs", "failed")):
        op.execute(
            f"UPDATE usage_daily SET {column} = (SELECT count(*) FROM jobs "
            f"WHERE jobs.owner = usage_daily.owner AND jobs.model = usage_daily.model "
            f"AND {day} = usage_daily.day AND jobs.status = '{status}')"
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_daily") as batch:
        batch.drop_column("failed_jobs")
        batch.drop_column("succeeded_jobs")
    op.drop_index("ix_ui_sessions_expires_at", table_name="ui_sessions")
    op.drop_table("ui_sessions")
