"""The wire format of server-sent events and of `Prefer: wait`: pure, no I/O.

https://html.spec.whatwg.org/multipage/server-sent-events.html and RFC 7240.
"""

from __future__ import annotations

import re

# A comment line: ignored by every SSE client, but it keeps proxies from closing an idle
# stream and lets the server notice a reader that has gone.
HEARTBEAT = b": keep-alive\n\n"
# How long a client should wait before reconnecting after the stream is cut.
RETRY_MILLISECONDS = 2000
MAX_WAIT_SECONDS = 60.0
MAX_EVENT_ID = 2**63 - 1  # event ids are signed 64-bit integers
_LAST_EVENT_ID = re.compile(r"^[0-9]{1,19}$")
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?([0-9]{1,6}(?:\.[0-9]{1,3})?)\"?", re.I)


def message(data: bytes, *, event_id: int | None = None, event: str | None = None) -> bytes:
    """One SSE message. `data` is one line of JSON (orjson never writes a newline)."""
    if b"\n" in data or b"\r" in data:
        raise ValueError("SSE data must be a single line")
    head = b""
    if event_id is not None:
        head += b"id: %d\n" % event_id
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


def preamble() -> bytes:
    """What a stream starts with: the reconnection delay."""
    return b"retry: %d\n\n" % RETRY_MILLISECONDS


def last_event_id(header: str | None) -> int | None:
    """The `Last-Event-ID` a reconnecting client sends: an event id of ours, or None (a
    value we never sent is treated as absent, as a new stream)."""
    if header is None or not _LAST_EVENT_ID.match(header.strip()):
        return None
    value = int(header.strip())
    return value if value <= MAX_EVENT_ID else None


def prefer_wait(header: str | None) -> float | None:
    """The seconds of `Prefer: wait=N` (RFC 7240 § 4.3), capped at MAX_WAIT_SECONDS; None
    when the header asks for no wait. An unreadable preference is ignored, as the RFC says."""
    if not header:
        return None
    found = _PREFER_WAIT.search(header)
    if found is None:
        return None
    seconds = float(found.group(1))
    return min(seconds, MAX_WAIT_SECONDS) if seconds > 0 else None
