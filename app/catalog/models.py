"""Catalog versions as the database keeps them: every replica uses the active one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.db_types import JSONType, UTCDateTime


class CatalogVersion(Base):
    __tablename__ = "catalog_versions"

    # `<schema_version>-<hash of the content>` (app/catalog/document.py)
    version: Mapped[str] = mapped_column(String(96), primary_key=True)
    schema_version: Mapped[str] = mapped_column(String(64))
    # Where it came from: "snapshot", "sync <url>", "import <file name>".
    source: Mapped[str] = mapped_column(String(255))
    document: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # PoYo's ETag of the first page, for the next sync's If-None-Match.
    etag: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The active version is the one activated last.
    activated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_catalog_versions_activated_at", "activated_at"),)
