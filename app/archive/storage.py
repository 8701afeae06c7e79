"""Where archived outputs live, behind one small interface: a local directory (the
default, so that `make run` needs nothing else) or S3-compatible object storage (AWS S3,
MinIO, Cloudflare R2, GCS interop, …) through boto3.

A file is staged whole in the scratch directory first (downloaded, measured, hashed), then
`put` makes it visible at once: a rename on the same filesystem, or an S3 upload that
only exists once complete (a multipart upload is invisible until completed). A crash at
any moment leaves no half-written object under a key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from app.config import Settings

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client
    from types_boto3_s3.type_defs import ObjectIdentifierTypeDef

READ_CHUNK_BYTES = 1024 * 1024
# Parts in flight during an S3 upload: part size x concurrency bounds its memory.
S3_PART_BYTES = 8 * 1024 * 1024
S3_UPLOAD_CONCURRENCY = 2
SCRATCH_DIR_NAME = ".incoming"


class StorageError(Exception):
    """The storage backend failed (unreachable, refused, out of space)."""


class Storage(Protocol):
    name: str

    @property
    def scratch(self) -> Path:
        """A directory for staging downloads (the local backend's own filesystem)."""
        ...

    async def put(self, key: str, source: Path, content_type: str) -> None:
        """Store the file at `source` (consumed) under `key`, visible only once whole."""
        ...

    async def size(self, key: str) -> int | None:
        """The stored object's size, or None when there is none."""
        ...

    def read(self, key: str, start: int, length: int) -> AsyncIterator[bytes]:
        """`length` bytes of the object from `start`, in chunks."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; how many."""
        ...

    async def presigned_url(self, key: str, *, expires_in: int, filename: str) -> str | None:
        """A URL that serves the object without credentials, or None if not supported."""
        ...

    async def aclose(self) -> None: ...


def open_storage(settings: Settings) -> Storage:
    if settings.archive_backend == "s3":
        return S3Storage(settings)
    return LocalStorage(Path(settings.archive_dir))


class LocalStorage:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._scratch = self.root / SCRATCH_DIR_NAME

    @property
    def scratch(self) -> Path:
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or SCRATCH_DIR_NAME in path.parts:
            raise StorageError(f"key {key!r} is outside the archive")
        return path

    async def put(self, key: str, source: Path, content_type: str) -> None:
        target = self.path(key)
        try:
            await anyio.to_thread.run_sync(_move_into_place, source, target)
        except OSError as exc:
            raise StorageError(f"cannot store {key}: {exc.strerror}") from None

    async def size(self, key: str) -> int | None:
        try:
            return (await anyio.Path(self.path(key)).stat()).st_size
        except FileNotFoundError:
            return None

    async def read(self, key: str, start: int, length: int) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self.path(key), "rb") as file:
            await file.seek(start)
            while length > 0:
                chunk = await file.read(min(READ_CHUNK_BYTES, length))
                if not chunk:
                    raise StorageError(f"{key} is shorter than recorded")
                length -= len(chunk)
                yield chunk

    async def delete_prefix(self, prefix: str) -> int:
        folder = self.path(prefix.rstrip("/"))
        if not folder.is_dir():
            return 0
        count = sum(1 for entry in folder.iterdir() if entry.is_file())
        await anyio.to_thread.run_sync(shutil.rmtree, folder, True)
        return count

    async def presigned_url(self, key: str, *, expires_in: int, filename: str) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def sweep_scratch(scratch: Path, older_than: float) -> int:
    """Delete downloads left in `scratch` by a process that died mid-way (none is younger
    than `older_than` seconds: a live download writes all the time); how many."""
    cutoff = time.time() - older_than
    swept = 0
    for path in scratch.glob("*.part"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                swept += 1
    return swept


def _move_into_place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)  # atomic on one filesystem: the scratch dir is inside root


class S3Storage:
    name = "s3"

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.archive_s3_bucket
        self.prefix = settings.archive_s3_prefix
        self._scratch = Path(settings.archive_dir).resolve() / SCRATCH_DIR_NAME
        key_id = settings.archive_s3_access_key_id.get_secret_value()
        secret = settings.archive_s3_secret_access_key.get_secret_value()
        self.client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.archive_s3_endpoint_url or None,
            region_name=settings.archive_s3_region,
            aws_access_key_id=key_id or None,
            aws_secret_access_key=secret or None,
            config=Config(
                connect_timeout=settings.archive_connect_timeout_seconds,
                read_timeout=settings.archive_read_timeout_seconds,
                retries={"mode": "standard", "total_max_attempts": 2},
                s3={"addressing_style": "path"} if settings.archive_s3_endpoint_url else None,
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=S3_PART_BYTES,
            multipart_chunksize=S3_PART_BYTES,
            max_concurrency=S3_UPLOAD_CONCURRENCY,
        )

    @property
    def scratch(self) -> Path:
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def put(self, key: str, source: Path, content_type: str) -> None:
        try:
            await anyio.to_thread.run_sync(self._upload, source, key, content_type)
        finally:
            await anyio.Path(source).unlink(missing_ok=True)

    def _upload(self, source: Path, key: str, content_type: str) -> None:
        with _storage_errors(f"cannot store {key}"):
            self.client.upload_file(
                str(source),
                self.bucket,
                self._key(key),
                ExtraArgs={"ContentType": content_type},
                Config=self.transfer,
            )

    async def size(self, key: str) -> int | None:
        def head() -> int | None:
            try:
                answer = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise StorageError(f"cannot read {key}: {_code(exc)}") from None
            except botocore.exceptions.BotoCoreError as exc:
                raise StorageError(f"cannot read {key}: {type(exc).__name__}") from None
            return answer["ContentLength"]

        return await anyio.to_thread.run_sync(head)

    async def read(self, key: str, start: int, length: int) -> AsyncIterator[bytes]:
        if length <= 0:
            return
        end = start + length - 1

        def open_body() -> object:
            with _storage_errors(f"cannot read {key}"):
                answer = self.client.get_object(
                    Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end}"
                )
            return answer["Body"]

        body = await anyio.to_thread.run_sync(open_body)
        try:
            while True:
                chunk: bytes = await anyio.to_thread.run_sync(body.read, READ_CHUNK_BYTES)  # type: ignore[attr-defined]
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()  # type: ignore[attr-defined]

    async def delete_prefix(self, prefix: str) -> int:
        def delete_all() -> int:
            deleted = 0
            with _storage_errors(f"cannot delete {prefix}"):
                pages = self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self._key(prefix)
                )
                for page in pages:
                    keys: list[ObjectIdentifierTypeDef] = [
                        {"Key": item["Key"]} for item in page.get("Contents", [])
                    ]
                    if keys:
                        self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
                        deleted += len(keys)
            return deleted

        return await anyio.to_thread.run_sync(delete_all)

    async def presigned_url(self, key: str, *, expires_in: int, filename: str) -> str | None:
        return self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._key(key),
                "ResponseContentDisposition": f'inline; filename="{filename}"',
            },
            ExpiresIn=expires_in,
        )

    async def aclose(self) -> None:
        self.client.close()


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        raise StorageError(f"{what}: {_code(exc)}") from None
    except (botocore.exceptions.BotoCoreError, boto3.exceptions.Boto3Error, OSError) as exc:
        raise StorageError(f"{what}: {type(exc).__name__}") from None
