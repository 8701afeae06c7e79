"""The catalog in use, the same for every replica: the database keeps its versions and
which one is active; each process compiles the active one and looks for a newer one at
most every CATALOG_REFRESH_SECONDS. A new catalog (sync from PoYo, or import) needs no
code change and no restart."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog

from app.catalog import repository as repo
from app.catalog.compiled import Catalog
from app.catalog.document import Diff, Document, diff, from_json, load_snapshot, version_of
from app.db import Database, is_unavailable
from app.provider.client import PoyoClient
from app.timeutil import utcnow

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Installed:
    version: str
    diff: Diff
    activated: bool  # False when that version was already the one in use


class CatalogService:
    def __init__(self, *, db: Database, refresh_seconds: float) -> None:
        self.db = db
        self.refresh_seconds = refresh_seconds
        self._catalog: Catalog | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    async def current(self, *, force: bool = False) -> Catalog:
        """The catalog in use (checked against the database at most every few seconds)."""
        now = time.monotonic()
        if self._catalog is not None and not force and now - self._checked < self.refresh_seconds:
            return self._catalog
        async with self._lock:
            if self._catalog is None or force or now - self._checked >= self.refresh_seconds:
                try:
                    await self._refresh()
                except Exception as exc:
                    if self._catalog is None or not is_unavailable(exc):
                        raise
                    # The database is away: keep serving the catalog we have.
                    log.warning("catalog_refresh_failed", error=type(exc).__name__)
                    self._checked = time.monotonic()
        assert self._catalog is not None
        return self._catalog

    async def _refresh(self) -> None:
        active = await self.seeded()
        if self._catalog is None or self._catalog.version != active:
            async with self.db.read_connection() as conn:
                stored = await repo.load(conn, active)
                retired = await repo.model_ids_ever(conn)
            assert stored is not None
            started = time.perf_counter()
            catalog = Catalog(Document.model_validate(stored), retired=retired)
            log.info(
                "catalog_loaded",
                version=catalog.version,
                models=len(catalog.models),
                seconds=round(time.perf_counter() - started, 3),
            )
            self._catalog = catalog
        self._checked = time.monotonic()

    async def seeded(self) -> str:
        """The version in use; on a new database, the snapshot poyo-relay ships, installed."""
        async with self.db.read_connection() as conn:
            active = await repo.active_version(conn)
        if active is not None:
            return active
        snapshot = load_snapshot()
        return (await self.install(snapshot, source="snapshot", unless_one_is_active=True)).version

    async def active(self) -> repo.StoredVersion | None:
        """The version in use, where it came from and PoYo's ETag for it (if synced); its
        models are `current()`'s."""
        async with self.db.read_connection() as conn:
            return await repo.active(conn)

    async def install(
        self,
        document: Document,
        *,
        source: str,
        etag: str | None = None,
        unless_one_is_active: bool = False,
    ) -> Installed:
        """Store `document` and make it the catalog in use (every replica follows within
        CATALOG_REFRESH_SECONDS); what it changes against the one in use before."""
        version = version_of(document)
        async with self.db.write() as conn:
            active = await repo.active_version(conn)
            if unless_one_is_active and active is not None:
                return Installed(active, Diff(), activated=False)
            previous = await repo.load(conn, active) if active else None
            await repo.store(
                conn,
                version=version,
                document=document,
                source=source,
                etag=etag,
                now=utcnow(),
                activate=True,
            )
        before = Document.model_validate(previous) if previous else None
        log.info("catalog_installed", version=version, source=source, previous=active)
        return Installed(version, diff(before, document), activated=active != version)

    async def sync(self, provider: PoyoClient, *, source: str) -> Installed | None:
        """Fetch PoYo's live catalog (every page) and install it; None when PoYo says it
        has not changed since the ETag of the catalog in use. Raises ProviderError or
        CatalogError."""
        await self.seeded()
        active = await self.active()
        fetched = await provider.catalog(active.etag if active else None)
        if fetched is None:
            return None
        body, etag = fetched
        return await self.install(from_json(body), source=source, etag=etag)
