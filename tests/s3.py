"""A real S3-compatible server on loopback for the archive's tests: moto's server mode
(`moto[server]` from PyPI) in a child process, and a TCP proxy in front of it that can cut
uploads off mid-body (storage failing mid-upload)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import httpx

from bench.common import free_port

REGION = "us-east-1"
ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]

    def client(self, endpoint: str | None = None) -> object:
        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        name = f"outputs-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
        return name

    def keys(self, bucket: str) -> list[str]:
        answer = self.client().list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
        return [item["Key"] for item in answer.get("Contents", [])]

    def get(self, bucket: str, key: str) -> bytes:
        body = self.client().get_object(Bucket=bucket, Key=key)["Body"]  # type: ignore[attr-defined]
        return body.read()  # type: ignore[no-any-return]

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)  # type: ignore[attr-defined]

    def settings(self, bucket: str, endpoint: str | None = None) -> dict[str, object]:
        return {
            "archive_backend": "s3",
            "archive_s3_bucket": bucket,
            "archive_s3_endpoint_url": endpoint or self.endpoint,
            "archive_s3_region": REGION,
            "archive_s3_access_key_id": ACCESS_KEY,
            "archive_s3_secret_access_key": SECRET_KEY,
        }


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint + "/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        yield S3Server(endpoint, process)
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class CuttingProxy:
    """Forwards TCP to `target`; while `cut_after` is set, a connection that sends more
    than that many bytes towards the target is closed mid-request."""

    target_port: int
    cut_after: int | None = None
    cuts: int = 0
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> CuttingProxy:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        down = asyncio.create_task(self._pipe(up_reader, writer, upstream=False))
        self.tasks.add(down)
        down.add_done_callback(self.tasks.discard)
        await self._pipe(reader, up_writer, upstream=True)
        for closing in (writer, up_writer):
            closing.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        sent = 0
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(16384):
                sent += len(data)
                if upstream and self.cut_after is not None and sent > self.cut_after:
                    self.cuts += 1
                    writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
