"""costs: each job's estimate and charge; spend per owner, day and model; budgets; PoYo's balance

Revision ID: f1c2d3e4a5b6
Revises: e7a4b9c1d2f3
Create Date: 2026-11-30 20:00:00+00:00

Credits are kept as integers of 1/1000 credit (every price in the catalog is a whole number
of thousandths), so sums over many jobs are exact on both databases.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db_types import UTCDateTime

revision: str = "f1c2d3e4a5b6"
down_revision: str | Sequence[str] | None = "e7a4b9c1d2f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cost_estimate_millicredits", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("cost_estimate_note", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("cost_charged_millicredits", sa.BigInteger(), nullable=True))
    counter = {"nullable": False, "server_default": "0"}
    op.create_table(
        "usage_daily",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("jobs", sa.Integer(), **counter),
        sa.Column("unestimated_jobs", sa.Integer(), **counter),
        sa.Column("estimated_millicredits", sa.BigInteger(), **counter),
        sa.Column("charged_millicredits", sa.BigInteger(), **counter),
        sa.Column("spent_millicredits", sa.BigInteger(), **counter),
        sa.PrimaryKeyConstraint("owner", "day", "model", name="pk_usage_daily"),
    )
    op.create_index("ix_usage_daily_day", "usage_daily", ["day"])
    op.create_table(
        "budgets",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("daily_millicredits", sa.BigInteger(), nullable=True),
        sa.Column("monthly_millicredits", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("owner", name="pk_budgets"),
    )
    op.create_table(
        "provider_account",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("balance_millicredits", sa.BigInteger(), nullable=False),
        sa.Column("checked_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_provider_account"),
    )
    # Jobs stored before costs existed count as jobs (no estimate, nothing spent).
    sqlite = op.get_bind().dialect.name == "sqlite"
    day = "date(created_at)" if sqlite else "(created_at AT TIME ZONE 'UTC')::date"
    op.execute(
        "INSERT INTO usage_daily (owner, day, model, jobs, unestimated_jobs, "
        "estimated_millicredits, charged_millicredits, spent_millicredits) "
        f"SELECT owner, {day}, model, count(*), count(*), 0, 0, 0 FROM jobs "
        f"GROUP BY owner, {day}, model"
    )


def downgrade() -> None:
    op.drop_table("provider_account")
    op.drop_table("budgets")
    op.drop_index("ix_usage_daily_day", table_name="usage_daily")
    op.drop_table("usage_daily")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cost_charged_millicredits")
        batch.drop_column("cost_estimate_note")
        batch.drop_column("cost_estimate_millicredits")
