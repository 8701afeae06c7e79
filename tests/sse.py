"""Reading a server-sent event stream over real HTTP, for the stream tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson


@dataclass(frozen=True)
class Message:
    id: int | None
    event: str | None
    data: Any


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """The stream's messages (comments and the `retry:` preamble skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                event_id = fields.get("id")
                yield Message(
                    int(event_id) if event_id else None,
                    fields.get("event"),
                    orjson.loads(fields["data"]),
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


@contextlib.asynccontextmanager
async def open_stream(
    http: httpx.AsyncClient, path: str, key: str, last_event_id: int | None = None
) -> AsyncIterator[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    async with http.stream("GET", path, headers=headers, timeout=30) as response:
        yield response
