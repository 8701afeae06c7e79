"""catalog_versions: PoYo's capability catalog, versioned; jobs.catalog_version

Revision ID: b3a9c2d4e5f6
Revises: 7d2f0c3e5a61
Create Date: 2026-11-30 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from app.db_types import UTCDateTime

revision: str = "b3a9c2d4e5f6"
down_revision: str | Sequence[str] | None = "7d2f0c3e5a61"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_versions",
        sa.Column("version", sa.String(length=96), nullable=False),
        sa.Column("schema_version", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("document", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("activated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_catalog_versions")),
    )
    op.create_index(
        op.f("ix_catalog_versions_activated_at"), "catalog_versions", ["activated_at"]
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("catalog_version", sa.String(length=96), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("catalog_version")
    op.drop_index(op.f("ix_catalog_versions_activated_at"), table_name="catalog_versions")
    op.drop_table("catalog_versions")
