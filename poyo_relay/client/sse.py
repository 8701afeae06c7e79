"""A Server-Sent Events parser, pure: bytes in, events out (WHATWG HTML, "Parsing an event
stream").

Lines end with CRLF, LF or CR, in any mix and split anywhere between chunks. A line that
starts with ":" is a comment (a heartbeat); `field: value` sets `event`, `data` (several
lines joined by "\\n"), `id` (kept across events and reconnections: the `Last-Event-ID` to
resume from) or `retry` (milliseconds); a blank line dispatches the event. An event without
data is not dispatched, except `end`-style events (`event:` set, no data), which are.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: its type (`message` unless named), its data, and the last
    event id in effect when it was dispatched (None if the stream never set one)."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental decoder of one connection's body. `last_event_id` starts as the id to
    resume from and follows every dispatched `id:`; `retry` is the server's reconnection
    delay in milliseconds, if it sent one. A partial event at the end of the body is
    discarded (the connection dropped in the middle of it)."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._started = False
        self._after_cr = False
        self._event = ""
        self._data: list[str] = []
        self._id = last_event_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by `chunk`, in order."""
        text = self._text + self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix(_BOM)
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across chunks
        self._after_cr = False
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END.finditer(text):
            event = self._line(text[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
            self._after_cr = match.group() == "\r" and start == len(text)
        self._text = text[start:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: heartbeats
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\x00" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id
        event, data = self._event, self._data
        self._event, self._data = "", []
        if not data and not event:
            return None
        return ServerSentEvent(
            event=event or "message",
            data="\n".join(data),
            id=self.last_event_id,
            retry=self.retry,
        )
