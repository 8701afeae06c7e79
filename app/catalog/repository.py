"""Catalog versions in the database. Functions run on the caller's connection."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.catalog.document import Document
from app.catalog.models import CatalogVersion
from app.db import upsert

# The version in use is the one activated last.
_IN_USE = CatalogVersion.activated_at.desc()
_ACTIVE_VERSION = select(CatalogVersion.version).order_by(_IN_USE).limit(1)


@dataclass(frozen=True)
class StoredVersion:
    version: str
    source: str
    etag: str | None
    activated_at: datetime


_ACTIVE = (
    select(
        CatalogVersion.version,
        CatalogVersion.source,
        CatalogVersion.etag,
        CatalogVersion.activated_at,
    )
    .order_by(_IN_USE)
    .limit(1)
)


async def active_version(conn: AsyncConnection) -> str | None:
    return (await conn.execute(_ACTIVE_VERSION)).scalar_one_or_none()


async def active(conn: AsyncConnection) -> StoredVersion | None:
    """The catalog version in use and where it came from (not its document)."""
    row = (await conn.execute(_ACTIVE)).first()
    return StoredVersion(**row._asdict()) if row is not None else None


async def load(conn: AsyncConnection, version: str) -> dict[str, Any] | None:
    """The stored document of `version`."""
    query = select(CatalogVersion.document).where(CatalogVersion.version == version)
    document: dict[str, Any] | None = (await conn.execute(query)).scalar_one_or_none()
    return document


async def store(
    conn: AsyncConnection,
    *,
    version: str,
    document: Document,
    source: str,
    etag: str | None,
    now: datetime,
    activate: bool,
) -> None:
    """Keep `document` as `version` (once: a version is its content) and, with `activate`,
    make it the one in use."""
    await conn.execute(
        upsert(conn, CatalogVersion)
        .values(
            version=version,
            schema_version=document.schema_version,
            source=source[:255],
            document=document.model_dump(mode="json"),
            etag=etag,
            created_at=now,
            activated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["version"])
    )
    if activate:
        await conn.execute(
            update(CatalogVersion)
            .where(CatalogVersion.version == version)
            .values(activated_at=now, etag=etag, source=source[:255])
        )


async def model_ids_ever(conn: AsyncConnection) -> set[str]:
    """Every model id of every stored version (to tell a dropped model from a typo)."""
    ids: set[str] = set()
    for (document,) in await conn.execute(select(CatalogVersion.document)):
        ids.update(item["model_id"] for item in document.get("items", []) if "model_id" in item)
    return ids
