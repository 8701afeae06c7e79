"""Downloading an output to a scratch file: streamed (memory stays at a few chunks however
large the file), measured against ARCHIVE_MAX_BYTES, hashed as it arrives, checked against
what was announced (status, Content-Type, Content-Length), every hop of a redirect
checked by the same private-address guard as webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpx

from app.archive.rules import ContentTypeMismatch, accepted_content_type
from app.config import Settings
from app.urls import MAX_OUTPUT_URL_CHARS, is_http_url
from app.webhooks.guard import ForbiddenTarget, check_target

MAX_REDIRECTS = 5
# Bytes gathered before one write (and hash) in a worker thread: few thread hops, little memory.
WRITE_BATCH_BYTES = 2 * 1024 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}


class DownloadFailed(Exception):
    """The file could not be fetched as announced; the message says why (no secrets)."""


@dataclass(frozen=True)
class Downloaded:
    path: Path
    content_type: str
    size_bytes: int
    sha256: str


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 0)


class Downloader:
    def __init__(self, settings: Settings, *, trusted_origins: tuple[str, ...] = ()) -> None:
        self.max_bytes = settings.archive_max_bytes
        self.allow_private = settings.archive_allow_private
        # Origins downloads may come from whatever they resolve to (the sandbox's own).
        self.trusted = frozenset(origin(url) for url in trusted_origins)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.archive_read_timeout_seconds,
                connect=settings.archive_connect_timeout_seconds,
            ),
            follow_redirects=False,  # followed by hand, each hop checked
            headers={"User-Agent": "poyo-relay-archive", "Accept-Encoding": "identity"},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def fetch(self, url: str, announced_type: str | None, scratch: Path) -> Downloaded:
        """Download `url` into a new file in `scratch`; the caller owns (and removes) it."""
        try:
            for _ in range(MAX_REDIRECTS + 1):
                await self._check(url)
                async with self.http.stream("GET", url) as response:
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        url = urljoin(url, location)
                        continue
                    return await self._save(response, announced_type, scratch)
            raise DownloadFailed(f"more than {MAX_REDIRECTS} redirects")
        except httpx.TimeoutException as exc:
            raise DownloadFailed(f"timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise DownloadFailed(f"transfer failed ({type(exc).__name__})") from None

    async def _check(self, url: str) -> None:
        if not is_http_url(url, MAX_OUTPUT_URL_CHARS):
            raise DownloadFailed("not an http(s) URL")
        if origin(url) in self.trusted:
            return
        try:
            await check_target(url, allow_private=self.allow_private)
        except ForbiddenTarget as exc:
            raise DownloadFailed(f"target refused: {exc}") from None

    async def _save(
        self, response: httpx.Response, announced_type: str | None, scratch: Path
    ) -> Downloaded:
        if not response.is_success:
            raise DownloadFailed(f"the file server answered HTTP {response.status_code}")
        try:
            content_type = accepted_content_type(
                announced_type, response.headers.get("content-type"), str(response.url)
            )
        except ContentTypeMismatch as exc:
            raise DownloadFailed(f"wrong content type: {exc}") from None
        announced = _content_length(response)
        if announced is not None and announced > self.max_bytes:
            raise DownloadFailed(f"{announced} bytes announced, over ARCHIVE_MAX_BYTES")
        file = tempfile.NamedTemporaryFile(dir=scratch, suffix=".part", delete=False)  # noqa: SIM115
        path = Path(file.name)
        try:
            size, digest = await self._stream_into(response, file)
        except BaseException:
            file.close()
            await anyio.Path(path).unlink(missing_ok=True)
            raise
        file.close()
        if announced is not None and size != announced:
            await anyio.Path(path).unlink(missing_ok=True)
            raise DownloadFailed(f"{size} bytes received, {announced} announced")
        return Downloaded(path, content_type, size, digest)

    async def _stream_into(self, response: httpx.Response, file: IO[bytes]) -> tuple[int, str]:
        """Read the body while a worker thread hashes and writes the previous batch (double
        buffering: the network, the hash and the disk overlap; memory stays at ~2 batches)."""
        hasher = hashlib.sha256()
        size = 0
        batch: list[bytes] = []
        batched = 0
        writing: asyncio.Future[None] | None = None
        try:
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > self.max_bytes:
                    raise DownloadFailed(f"more than ARCHIVE_MAX_BYTES ({self.max_bytes}) sent")
                batch.append(chunk)
                batched += len(chunk)
                if batched >= WRITE_BATCH_BYTES:
                    if writing is not None:
                        await writing
                    data, batch, batched = b"".join(batch), [], 0
                    writing = _in_thread(file, hasher, data)
            if writing is not None:
                await writing
            writing = _in_thread(file, hasher, b"".join(batch))
            await writing
        finally:
            if writing is not None and not writing.done():
                with contextlib.suppress(Exception):
                    await writing  # the file is closed only once the thread is done with it
        return size, hasher.hexdigest()


def _in_thread(file: IO[bytes], hasher: Any, data: bytes) -> asyncio.Future[None]:
    return asyncio.ensure_future(anyio.to_thread.run_sync(_write, file, hasher, data))


def _write(file: IO[bytes], hasher: Any, data: bytes) -> None:
    hasher.update(data)
    file.write(data)


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.isdigit():
        return None
    return int(value)
