"""`AsyncClient`: the API over asyncio (httpx.AsyncClient), the same surface as `Client`."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
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


class AsyncClient(BaseClient[httpx.AsyncClient]):
    """`Client` for asyncio: the same arguments, methods and errors, awaited
    (`async with AsyncClient(url, key) as client: job = await client.jobs.create(…)`);
    lists and streams are async iterators. Pass `http_client` to bring your own
    `httpx.AsyncClient`; it is then yours to close."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
            make_http=httpx.AsyncClient,
        )
        self.jobs = AsyncJobs(self)
        self.models = AsyncModels(self)

    async def close(self) -> None:
        """Close the connections (of an httpx client this client made)."""
        if self._owns_http:
            await self._http.aclose()

    aclose = close

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def stream(
        self,
        *,
        status: JobStatus | str | None = None,
        model: str | None = None,
        last_event_id: str | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[JobUpdate, None]:
        """Every change of your jobs (`GET /v1/stream`), as `Client.stream`; close it
        (`contextlib.aclosing`) to stop early."""
        session = StreamSession(
            self._policy, last_event_id=last_event_id, deadline=Deadline(timeout)
        )
        return self._stream(api.stream_all(status=status, model=model), session)

    async def webhook_secret(self) -> str:
        """Your `whsec_…` secret, for `verify_webhook`."""
        return await self._call(api.webhook_secret())

    # ---- sending -------------------------------------------------------------------

    async def _call(self, call: api.Call[T]) -> T:
        return api.parse_with(call, api.parse_json(await self._send(call.spec)))

    async def _send(
        self, spec: api.RequestSpec, *, stream: bool = False, read_timeout: float | None = None
    ) -> httpx.Response:
        """The 2xx answer to `spec`, after retries; an open stream if `stream`."""
        retrying = Retrying(self._policy)
        while True:
            request = self._endpoint.build(self._http, spec, read_timeout=read_timeout)
            try:
                response = await self._http.send(request, stream=stream)
                if not response.is_success:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
            except httpx.TransportError as exc:
                delay = retrying.after_transport_error(exc)
            else:
                if response.is_success:
                    return response
                delay = retrying.after_error_response(response)
            await asyncio.sleep(delay)

    async def _pages(self, pages: api.Pages[T]) -> AsyncIterator[T]:
        page = await self._call(pages.call())
        for item in page.items:
            yield item
        while page.next_cursor is not None:
            page = await self._call(pages.call(page.next_cursor))
            for item in page.items:
                yield item

    async def _stream(
        self, spec: api.RequestSpec, session: StreamSession
    ) -> AsyncGenerator[JobUpdate, None]:
        while not session.done:
            timeout = session.read_timeout(self._endpoint.timeout)
            response = await self._send(
                spec.with_headers(session.headers()), stream=True, read_timeout=timeout
            )
            error: httpx.TransportError | None = None
            try:
                session.connected(response)
                async for chunk in response.aiter_bytes():
                    for update in session.feed(chunk):
                        yield update
                    if session.done:
                        return
            except httpx.TransportError as exc:
                error = exc
            finally:
                await response.aclose()
            if session.done:
                return
            await asyncio.sleep(min(session.dropped(error), session.deadline.remaining()))


class AsyncJobs:
    """`client.jobs` of an AsyncClient: as `Jobs`, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        model: str,
        input: Mapping[str, Any],
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        metadata: Mapping[str, str] | None = None,
        wait: float | None = None,
    ) -> Job:
        """Create a job (`POST /v1/jobs`), as `Jobs.create`."""
        return await self._client._call(
            api.create_job(
                model=model,
                input=input,
                idempotency_key=idempotency_key,
                webhook_url=webhook_url,
                metadata=metadata,
                wait=wait,
            )
        )

    async def estimate(self, *, model: str, input: Mapping[str, Any]) -> Estimate:
        """What a job with this input would cost (`POST /v1/estimates`), checked as a job's
        would be (`InvalidRequest` if not); nothing is created or sent."""
        return await self._client._call(api.estimate_job(model=model, input=input))

    async def get(self, id: str, *, wait: float | None = None) -> Job:
        """The job (`GET /v1/jobs/{id}`, a long-poll with `wait`), as `Jobs.get`."""
        return await self._client._call(api.get_job(id, wait=wait))

    async def wait(self, id: str, *, timeout: float | None = None) -> Job:  # noqa: ASYNC109
        """Wait until the job is terminal or `timeout` passed, as `Jobs.wait`: returns the
        job as last seen, without raising when the time is up (check `job.is_terminal`)."""
        waiting = Waiting(id, timeout, self._client._policy)
        job = await self._client._call(waiting.long_poll())
        if waiting.settled(job):
            return job
        async with aclosing(self._client._stream(waiting.stream(), waiting.session)) as updates:
            async for update in updates:
                job = update.job
                if job.is_terminal:
                    return job
        last_read = waiting.last_read()
        return job if last_read is None else await self._client._call(last_read)

    def stream(
        self, id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> AsyncGenerator[JobUpdate, None]:
        """The job's updates until it is settled, as `Jobs.stream`; close it
        (`contextlib.aclosing`) to stop early."""
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
    ) -> AsyncIterator[Job]:
        """Every job (of these filters), newest first, page after page, as `Jobs.list`."""
        return self._client._pages(
            api.list_jobs(
                status=status,
                model=model,
                created_after=created_after,
                created_before=created_before,
                page_size=page_size,
            )
        )

    async def events(self, id: str) -> builtins.list[JobEvent]:
        """The job's whole audit trail, oldest first (every page)."""
        return [event async for event in self._client._pages(api.list_events(id))]


class AsyncModels:
    """`client.models` of an AsyncClient: as `Models`, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(
        self, *, category: str | None = None, q: str | None = None
    ) -> builtins.list[Model]:
        """The models (`GET /v1/models`), as `Models.list`."""
        return await self._client._call(api.list_models(category=category, q=q))

    async def get(self, id: str) -> Model:
        """One model (`GET /v1/models/{id}`), as `Models.get`."""
        return await self._client._call(api.get_model(id))
