"""`Client`: the API over blocking HTTP (httpx.Client)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Generator, Iterator, Mapping
from contextlib import closing
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from poyo_relay.client import _requests as api
from poyo_relay.client._base import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, BaseClient
from poyo_relay.client._retry import Retrying
from poyo_relay.client._stream import Deadline, StreamSession, Waiting
from poyo_relay.client.types import Estimate, Job, JobEvent, JobStatus, JobUpdate, Model

T = TypeVar("T")


class Client(BaseClient[httpx.Client]):
    """A client of poyo-relay's REST API.

    `Client("https://relay.example.com", "prk_…")`; use it as a context manager, or
    `close()` it. Requests that fail on the way (connection errors, timeouts) or answer
    429/502/503/504 are retried up to `max_retries` times, honouring `Retry-After`; other
    errors raise an `ApiError` subclass at once, and a service still unreachable after the
    retries raises `ConnectionFailed`. `timeout` is in seconds, per connect and per read (a
    long-poll's read timeout adds its wait). Pass `http_client` to bring your own
    `httpx.Client` (proxies, certificates…); it is then yours to close.

    `client.jobs` creates, reads, waits for, lists and streams jobs; `client.models` reads
    the models; `client.stream()` follows every change of your jobs.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
            make_http=httpx.Client,
        )
        self.jobs = Jobs(self)
        self.models = Models(self)

    def close(self) -> None:
        """Close the connections (of an httpx client this client made)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def stream(
        self,
        *,
        status: JobStatus | str | None = None,
        model: str | None = None,
        last_event_id: str | None = None,
        timeout: float | None = None,
    ) -> Generator[JobUpdate, None, None]:
        """Every change of your jobs (`GET /v1/stream`, optionally only those with this
        status or model), as it happens, for as long as you iterate: it never ends by
        itself, and resumes after a dropped connection without losing or repeating an
        update. Pass `last_event_id` (an update's `id`) to resume an earlier stream, and
        `timeout` (seconds) to stop after that long. Close it (`contextlib.closing`) to stop
        early."""
        session = StreamSession(
            self._policy, last_event_id=last_event_id, deadline=Deadline(timeout)
        )
        return self._stream(api.stream_all(status=status, model=model), session)

    def webhook_secret(self) -> str:
        """Your `whsec_…` secret, for `verify_webhook`."""
        return self._call(api.webhook_secret())

    # ---- sending -------------------------------------------------------------------

    def _call(self, call: api.Call[T]) -> T:
        return api.parse_with(call, api.parse_json(self._send(call.spec)))

    def _send(
        self, spec: api.RequestSpec, *, stream: bool = False, read_timeout: float | None = None
    ) -> httpx.Response:
        """The 2xx answer to `spec`, after retries; an open stream if `stream`."""
        retrying = Retrying(self._policy)
        while True:
            request = self._endpoint.build(self._http, spec, read_timeout=read_timeout)
            try:
                response = self._http.send(request, stream=stream)
                if not response.is_success:
                    with closing(response):
                        response.read()
            except httpx.TransportError as exc:
                delay = retrying.after_transport_error(exc)
            else:
                if response.is_success:
                    return response
                delay = retrying.after_error_response(response)
            time.sleep(delay)

    def _pages(self, pages: api.Pages[T]) -> Iterator[T]:
        page = self._call(pages.call())
        yield from page.items
        while page.next_cursor is not None:
            page = self._call(pages.call(page.next_cursor))
            yield from page.items

    def _stream(
        self, spec: api.RequestSpec, session: StreamSession
    ) -> Generator[JobUpdate, None, None]:
        while not session.done:
            timeout = session.read_timeout(self._endpoint.timeout)
            response = self._send(
                spec.with_headers(session.headers()), stream=True, read_timeout=timeout
            )
            error: httpx.TransportError | None = None
            with closing(response):
                session.connected(response)
                try:
                    for chunk in response.iter_bytes():
                        yield from session.feed(chunk)
                        if session.done:
                            return
                except httpx.TransportError as exc:
                    error = exc
            if session.done:
                return
            time.sleep(min(session.dropped(error), session.deadline.remaining()))


class Jobs:
    """`client.jobs`: create, read, wait for, list and stream jobs."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        model: str,
        input: Mapping[str, Any],
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        metadata: Mapping[str, str] | None = None,
        wait: float | None = None,
    ) -> Job:
        """Create a job (`POST /v1/jobs`) and return it.

        The input is validated by the service against the model's schema (`InvalidRequest`
        with `details` if not). Every call carries an Idempotency-Key (a new uuid4 unless
        you give one), so the client's own retries never make a second job; give your own
        key to make retries across processes safe too (the same key and body within 24 h
        return the original job; with another body, `Conflict`). `wait` (seconds, at most
        60) lets the service answer only once the job has ended or that time passed.
        """
        return self._client._call(
            api.create_job(
                model=model,
                input=input,
                idempotency_key=idempotency_key,
                webhook_url=webhook_url,
                metadata=metadata,
                wait=wait,
            )
        )

    def estimate(self, *, model: str, input: Mapping[str, Any]) -> Estimate:
        """What a job with this input would cost (`POST /v1/estimates`), checked as a job's
        would be (`InvalidRequest` if not); nothing is created or sent."""
        return self._client._call(api.estimate_job(model=model, input=input))

    def get(self, id: str, *, wait: float | None = None) -> Job:
        """The job (`GET /v1/jobs/{id}`; `NotFound` if unknown). With `wait` (seconds, at
        most 60), the service answers as soon as the job is terminal, or after `wait`."""
        return self._client._call(api.get_job(id, wait=wait))

    def wait(self, id: str, *, timeout: float | None = None) -> Job:
        """Wait until the job is terminal, or `timeout` seconds (None: no limit) passed.

        One long-poll first (`?wait=`, up to a minute); if the job is still running, its
        event stream until it ends. Returns the job as last seen and does not raise when
        the time is up: check `job.is_terminal` (a job that failed is returned too, with
        its `error`). The timeout is kept to within a heartbeat of the stream."""
        waiting = Waiting(id, timeout, self._client._policy)
        job = self._client._call(waiting.long_poll())
        if waiting.settled(job):
            return job
        with closing(self._client._stream(waiting.stream(), waiting.session)) as updates:
            for update in updates:
                job = update.job
                if job.is_terminal:
                    return job
        last_read = waiting.last_read()
        return job if last_read is None else self._client._call(last_read)

    def stream(
        self, id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> Generator[JobUpdate, None, None]:
        """The job's updates (`GET /v1/jobs/{id}/stream`) as they happen, ending once the
        job is settled (terminal, its outputs archived or archiving given up). A dropped
        connection is resumed where it broke (`Last-Event-ID`): no update is lost or
        repeated. Pass `last_event_id` (an update's `id`) to resume an earlier stream, and
        `timeout` (seconds) to stop after that long even if the job has not ended (to within
        a heartbeat). Close it (`contextlib.closing`) to stop early."""
        session = StreamSession(
            self._client._policy, last_event_id=last_event_id, deadline=Deadline(timeout)
        )
        return self._client._stream(api.stream_job(id), session)

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        model: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        page_size: int = api.MAX_PAGE_SIZE,
    ) -> Iterator[Job]:
        """Every job (of these filters), newest first, reading page after page as you
        iterate (`page_size` jobs a request, at most 100). `created_after` is inclusive,
        `created_before` exclusive; naive datetimes are taken as UTC."""
        return self._client._pages(
            api.list_jobs(
                status=status,
                model=model,
                created_after=created_after,
                created_before=created_before,
                page_size=page_size,
            )
        )

    def events(self, id: str) -> builtins.list[JobEvent]:
        """The job's whole audit trail, oldest first (every page)."""
        return [*self._client._pages(api.list_events(id))]


class Models:
    """`client.models`: the models jobs can use, with their input schemas."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, *, category: str | None = None, q: str | None = None) -> builtins.list[Model]:
        """The models (`GET /v1/models`), optionally of one category (`video`, `image`, …)
        or with all of the words `q` in their id, title, description or tags."""
        return self._client._call(api.list_models(category=category, q=q))

    def get(self, id: str) -> Model:
        """One model (`GET /v1/models/{id}`; ids may contain `/`); `NotFound` if unknown."""
        return self._client._call(api.get_model(id))
