"""Following a Server-Sent Events stream across dropped connections, and deadlines, pure:
the sync and async clients connect, read and sleep; `StreamSession` decides the rest.

A connection's body goes through `SSEDecoder`; every `message` becomes a `JobUpdate`, an
`end` event ends the stream, other event types are skipped (a newer server's). When the
connection drops (or the server closes it without `end`), the next one carries
`Last-Event-ID: <the last id seen>`, so the server resumes after the last complete message:
nothing is lost, nothing repeated (a message cut off mid-way is discarded and sent again).
It reconnects at once after a connection that delivered something (the server's `retry:`
delay if it sent one); connections that deliver nothing at all count as failures, with
backoff, and after `max_retries` of them in a row the stream fails with ConnectionFailed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import httpx

from poyo_relay.client._requests import MAX_WAIT_SECONDS, Call, RequestSpec, get_job, stream_job
from poyo_relay.client._retry import RetryPolicy, describe_transport_error
from poyo_relay.client.errors import ConnectionFailed, InvalidResponse
from poyo_relay.client.sse import ServerSentEvent, SSEDecoder
from poyo_relay.client.types import Job, JobUpdate

END_EVENT = "end"
MESSAGE_EVENT = "message"


class Deadline:
    """A point in time `seconds` from now (None: never), on the monotonic clock."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds is not None and (math.isnan(seconds) or seconds < 0):
            raise ValueError("a timeout must be a number of seconds, 0 or more")
        self._clock = clock
        self._at = None if seconds is None else clock() + seconds

    def remaining(self) -> float:
        """Seconds left (infinity without a deadline; 0 once passed)."""
        return math.inf if self._at is None else max(0.0, self._at - self._clock())

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self.remaining() <= 0

    def long_poll(self, longest: int) -> int | None:
        """Whole seconds to long-poll for (1 up to `longest`), None once passed."""
        remaining = self.remaining()
        if remaining <= 0:
            return None
        return longest if remaining >= longest else max(1, int(remaining))

    def read_timeout(self, timeout: float) -> float:
        """A read timeout that does not outlast the deadline (`timeout` at most)."""
        return max(0.001, min(timeout, self.remaining()))


def parse_update(message: ServerSentEvent) -> JobUpdate:
    """A stream message as a JobUpdate, or InvalidResponse."""
    try:
        return JobUpdate.from_dict(json.loads(message.data), id=message.id)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidResponse(f"unreadable stream message (id {message.id}): {exc!r}") from exc


class StreamSession:
    """One subscription to an event stream, across as many connections as it takes."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        last_event_id: str | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        self.policy = policy
        self.last_event_id = last_event_id
        self.deadline = deadline or Deadline(None)
        self.ended = False
        self.failures = 0
        self._retry_ms: int | None = None
        self._decoder = SSEDecoder(last_event_id)
        self._delivered = False

    @property
    def done(self) -> bool:
        """True once the stream ended (`end`) or the deadline passed."""
        return self.ended or self.deadline.expired

    def headers(self) -> dict[str, str]:
        """The headers of the next connection (with Last-Event-ID once an id was seen)."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    def read_timeout(self, timeout: float) -> float:
        """The next connection's read timeout: the client's, never past the deadline."""
        return self.deadline.read_timeout(timeout)

    def connected(self, response: httpx.Response) -> None:
        """A connection answered 2xx: it must be an event stream; its body starts afresh."""
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "text/event-stream":
            raise InvalidResponse(
                f"expected an event stream from {response.request.url.path}, got "
                f"{media or 'no content type'} (HTTP {response.status_code})"
            )
        self._decoder = SSEDecoder(self.last_event_id)
        self._delivered = False

    def feed(self, chunk: bytes) -> list[JobUpdate]:
        """The updates completed by `chunk` (stops at `end`)."""
        if chunk:
            self._delivered = True
        updates: list[JobUpdate] = []
        for message in self._decoder.feed(chunk):
            if message.event == END_EVENT:
                self.ended = True
                break
            if message.event == MESSAGE_EVENT:
                updates.append(parse_update(message))
        # Every update is handed over before the next read: the id of the last complete
        # message is where a new connection resumes.
        self.last_event_id = self._decoder.last_event_id
        if self._decoder.retry is not None:
            self._retry_ms = self._decoder.retry
        return updates

    def dropped(self, error: httpx.TransportError | None = None) -> float:
        """The connection ended without `end` (`error` if it broke): the delay before the
        next one, or ConnectionFailed after `max_retries` connections in a row that
        delivered nothing."""
        if self._delivered:
            self.failures = 0
            return 0.0 if self._retry_ms is None else self._retry_ms / 1000
        self.failures += 1
        if self.failures > self.policy.max_retries:
            if error is not None:
                raise ConnectionFailed(describe_transport_error(error)) from error
            raise ConnectionFailed("the event stream keeps closing without delivering anything")
        if self._retry_ms is not None:
            return self._retry_ms / 1000
        return self.policy.backoff(self.failures)


class Waiting:
    """The decisions of `jobs.wait`: one long-poll of up to a minute (what remains of the
    timeout), then, if the job is still not terminal, its event stream until it is or the
    timeout passes. The answer is the last state seen, terminal or not."""

    def __init__(self, job_id: str, timeout: float | None, policy: RetryPolicy) -> None:
        self.job_id = job_id
        self.deadline = Deadline(timeout)
        self.policy = policy
        self.session = StreamSession(policy, deadline=self.deadline)

    def long_poll(self) -> Call[Job]:
        """The first read: a long-poll while there is time left, else a plain read."""
        return get_job(self.job_id, wait=self.deadline.long_poll(MAX_WAIT_SECONDS))

    def settled(self, job: Job) -> bool:
        """True when `job` is the answer: it is terminal, or the time is up."""
        return job.is_terminal or self.deadline.expired

    def stream(self) -> RequestSpec:
        """The job's event stream, followed after the long-poll."""
        return stream_job(self.job_id)

    def last_read(self) -> Call[Job] | None:
        """After the stream stopped without a terminal state seen: a last read if it ended
        (`end` comes after the job ended), none if the timeout passed."""
        return get_job(self.job_id) if self.session.ended else None
