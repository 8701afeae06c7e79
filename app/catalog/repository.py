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

_ACTIVE = select(CatalogVersion.version).order_by(CatalogVersion.activated_at.desc()).limit(1)


async def active_version(conn: AsyncConnection) -> str | None:
    return (await conn.execute(_ACTIVE)).scalar_one_or_none()


@dataclass(frozen=True)
class StoredVersion:
    version: str
    source: str
    etag: str | None
    activated_at: datetime
    document: dict[str, Any]


async def active(conn: AsyncConnection) -> StoredVersion | None:
    """The catalog version in use and where it came from."""
    columns = (
        CatalogVersion.version,
        CatalogVersion.source,
        CatalogVersion.etag,
        CatalogVersion.activated_at,
        CatalogVersion.document,
    )
    row = (
        await conn.execute(select(*columns).order_by(CatalogVersion.activated_at.desc()).limit(1))
    ).first()
    return StoredVersion(**row._asdict()) if row is not None else None


async def load(conn: AsyncConnection, version: str) -> tuple[dict[str, Any], str | None] | None:
    """The stored document of `version` and its ETag."""
    row = (
        await conn.execute(
            select(CatalogVersion.document, CatalogVersion.etag).where(
                CatalogVersion.version == version
            )
        )
    ).first()
    return (row.document, row.etag) if row is not None else None


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
