"""The delivery loop: lease due deliveries, POST each signed (Standard Webhooks), record
the attempts in batches.

`run_once()` is the production body and what tests drive: it leases as many due
deliveries as there are free slots (WEBHOOK_CONCURRENCY per process) and starts sending
each. Finished attempts are written by one writer task, many per transaction, with the
delivery's next state (app/webhooks/policy.py) and a `webhook.*` event on the job's trail.
A worker killed between a POST and its record leaves the lease to expire; the delivery is
sent again with the same `webhook-id`, which receivers deduplicate on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime, timedelta

import httpx
import structlog

from app.backoff import retry_after_seconds
from app.config import Settings
from app.db import Database, Topic
from app.jobs import repository as jobs_repo
from app.jobs.events import EventType, NewEvent
from app.keyring.models import ServerKey
from app.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_ENDPOINTS_DISABLED
from app.timeutil import utcnow
from app.webhooks import repository as repo
from app.webhooks.guard import ForbiddenTarget, PinnedTarget, Resolver, pin, system_resolve
from app.webhooks.models import DeliveryState
from app.webhooks.policy import MAX_RESPONSE_CHARS, Answer, Rules, excerpt, judge
from app.webhooks.repository import Outgoing, Sent
from app.webhooks.signing import endpoint_secret, owner_secret, signature

log = structlog.get_logger(__name__)

ERROR_PAUSE_SECONDS = 1.0
# Wake-ups closer than this are one claim (every commit of the process wakes the loop).
CLAIM_SPACING_SECONDS = 0.02
# A lease lasts twice the POST's timeout and this much: the attempt is recorded by then
# (a killed worker's deliveries are sent again once their leases end).
LEASE_MARGIN_SECONDS = 5.0
# At most this many connection pools are kept (the least recently used is closed).
MAX_POOLS = 256
# Waiting deliveries are checked for a lost wake-up this often.
STRANDED_CHECK_SECONDS = 30.0


class Deliverer:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        server_key: ServerKey,
        lease_owner: str,
        resolve: Resolver = system_resolve,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.db = db
        self.server_key = server_key
        self.lease_owner = lease_owner
        self.resolve = resolve
        self.transport = transport
        self.allow_private = settings.webhook_allow_private
        self.timeout = settings.webhook_timeout_seconds
        self.slots = settings.webhook_concurrency
        self.per_endpoint = settings.webhook_endpoint_concurrency
        self.poll_seconds = settings.worker_poll_seconds
        self.lease = timedelta(seconds=2 * self.timeout + LEASE_MARGIN_SECONDS)
        self.rules = Rules(
            retry_delays=settings.webhook_retry_delays,
            disable_after=timedelta(seconds=settings.webhook_disable_after_seconds),
        )
        self.name = "webhooks"
        self._pools: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()
        self._next_stranded_check = 0.0
        self._sending: set[asyncio.Task[None]] = set()
        self._done: list[Sent] = []
        self._woken = asyncio.Event()
        self._finished = asyncio.Event()
        db.on_commit(self._woken.set, topic=Topic.WEBHOOKS_DUE)

    # ---- the loop --------------------------------------------------------------------------

    @property
    def free(self) -> int:
        return self.slots - len(self._sending)

    async def run_once(self) -> int:
        """Lease due deliveries for the free slots and start sending each; how many."""
        if self.free <= 0:
            return 0
        async with self.db.write() as conn:
            if time.monotonic() >= self._next_stranded_check:
                self._next_stranded_check = time.monotonic() + STRANDED_CHECK_SECONDS
                await repo.stranded(conn)
            now = utcnow()
            leased = await repo.claim(
                conn,
                owner=self.lease_owner,
                now=now,
                until=now + self.lease,
                limit=self.free,
                per_endpoint=self.per_endpoint,
            )
        for outgoing in leased:
            sending = asyncio.create_task(self._deliver(outgoing))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)
        return len(leased)

    async def record_sent(self) -> int:
        """Write every finished attempt not yet written, in one transaction; how many."""
        batch, self._done = self._done, []
        if not batch:
            return 0
        try:
            async with self.db.write() as conn:
                await repo.record(conn, owner=self.lease_owner, sent=batch)
                await jobs_repo.add_many_events(conn, _job_events(batch), utcnow())
        except BaseException:
            self._done[:0] = batch  # written with the next batch (or the leases expire)
            raise
        for one in batch:
            WEBHOOK_ATTEMPTS.labels(one.outcome.state).inc()
        return len(batch)

    async def serve(self, stopping: asyncio.Event) -> None:
        """Claim whenever a slot is free and something may be due; write attempts as they
        finish. On stop, what is being sent finishes and is written."""
        writer = asyncio.create_task(self._write_until())
        try:
            while not stopping.is_set():
                self._woken.clear()
                if self.free > 0 and await self._pass() >= self.free:
                    continue
                waits: list[asyncio.Future[object]] = [
                    asyncio.ensure_future(stopping.wait()),
                    asyncio.ensure_future(self._woken.wait()),
                ]
                if self._sending:
                    waits.append(asyncio.ensure_future(_first_of(set(self._sending))))
                _done, pending = await asyncio.wait(
                    waits, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                for waiting in pending:
                    waiting.cancel()
                await asyncio.sleep(CLAIM_SPACING_SECONDS)
            await asyncio.gather(*self._sending, return_exceptions=True)
        finally:
            for sending in self._sending:
                sending.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await asyncio.shield(self._final_write())
            await self.aclose()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()

    async def _pass(self) -> int:
        try:
            return await self.run_once()
        except Exception as exc:
            log.warning("webhook_claim_failed", error_type=type(exc).__name__)
            await asyncio.sleep(ERROR_PAUSE_SECONDS)
            return 0

    async def _write_until(self) -> None:
        while True:
            await self._finished.wait()
            self._finished.clear()
            try:
                await self.record_sent()
            except Exception as exc:
                log.warning("webhook_record_failed", error_type=type(exc).__name__)
                await asyncio.sleep(ERROR_PAUSE_SECONDS)

    async def _final_write(self) -> None:
        try:
            await self.record_sent()
        except Exception as exc:
            log.warning("webhook_record_failed", error_type=type(exc).__name__)

    # ---- one attempt ---------------------------------------------------------------------------

    async def _deliver(self, outgoing: Outgoing) -> None:
        started = time.monotonic()
        answer, response = await self._post(outgoing)
        now = utcnow()
        outcome = judge(
            self.rules,
            answer=answer,
            attempts=outgoing.attempts + 1,
            manual=outgoing.manual,
            failing_since=outgoing.failing_since,
            now=now,
        )
        if outcome.disable_reason and outgoing.endpoint_id is None:
            outcome = replace(outcome, disable_reason=None)  # a job's URL is not an endpoint
        if outcome.disable_reason:
            WEBHOOK_ENDPOINTS_DISABLED.inc()
            log.warning(
                "webhook_endpoint_disabled",
                endpoint_id=outgoing.endpoint_id,
                reason=outcome.disable_reason,
            )
        latency = round((time.monotonic() - started) * 1000)
        self._done.append(Sent(outgoing, answer, outcome, latency, response, now))
        self._finished.set()

    async def _post(self, outgoing: Outgoing) -> tuple[Answer, str]:
        try:
            target = await pin(outgoing.url, allow_private=self.allow_private, resolve=self.resolve)
        except ForbiddenTarget as exc:
            return Answer(None, f"target refused: {exc}"), ""
        now = utcnow()
        headers = {
            "content-type": "application/json",
            "user-agent": "poyo-relay-webhooks",
            "webhook-id": outgoing.message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature(
                self._secrets(outgoing, now), outgoing.message_id, now, outgoing.payload
            ),
        }
        pool = self._pool(outgoing, target)
        request = target.request(pool, "POST", content=outgoing.payload.encode(), headers=headers)
        try:
            response = await pool.send(request, stream=True)
            try:
                body = await _read_at_most(response, MAX_RESPONSE_CHARS)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            return Answer(None, f"no answer within {self.timeout:g} s"), ""
        except httpx.HTTPError as exc:
            return Answer(None, f"{type(exc).__name__}: connection failed"), ""
        retry_after = retry_after_seconds(response.headers.get("retry-after", ""))
        return Answer(response.status_code, None, retry_after), excerpt(body)

    def _secrets(self, outgoing: Outgoing, now: datetime) -> list[str]:
        if outgoing.endpoint_id is None:
            return [owner_secret(self.server_key, outgoing.owner)]
        generation = outgoing.secret_generation
        secrets = [endpoint_secret(self.server_key, outgoing.endpoint_id, generation)]
        until = outgoing.previous_secret_until
        if until is not None and now < until and generation > 1:
            secrets.append(endpoint_secret(self.server_key, outgoing.endpoint_id, generation - 1))
        return secrets

    def _pool(self, outgoing: Outgoing, target: PinnedTarget) -> httpx.AsyncClient:
        """Connections kept per endpoint (at most its concurrency: small pools are cheap to
        search), and per host name for jobs' own URLs (a TLS connection belongs to the
        name it was opened for)."""
        key = f"{outgoing.endpoint_id or ''}|{target.sni_hostname or ''}|{target.address}"
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        size = self.per_endpoint if outgoing.endpoint_id else self.slots
        pool = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 5.0)),
            follow_redirects=False,
            transport=self.transport,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        )
        self._pools[key] = pool
        if len(self._pools) > MAX_POOLS:
            _, oldest = self._pools.popitem(last=False)
            self._closing.add(asyncio.get_running_loop().create_task(oldest.aclose()))
            for task in list(self._closing):
                if task.done():
                    self._closing.discard(task)
        return pool


async def _first_of(tasks: set[asyncio.Task[None]]) -> None:
    """Until one of `tasks` (a snapshot: they may all be done by the time this runs) ends."""
    if tasks:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """The start of the answer; the rest is not read (a receiver may answer a lot)."""
    body = b""
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) >= limit:
            break
    return body[:limit]


def _job_events(sent: list[Sent]) -> list[tuple[str, NewEvent]]:
    """Each attempt of a job's message, on that job's trail."""
    events: list[tuple[str, NewEvent]] = []
    for one in sent:
        outgoing = one.outgoing
        if outgoing.job_id is None:
            continue
        data: dict[str, object] = {
            "message_id": outgoing.message_id,
            "event_type": outgoing.event_type.value,
            "endpoint_id": outgoing.endpoint_id,
            "attempt": one.attempt,
        }
        if one.answer.http_status is not None:
            data["http_status"] = one.answer.http_status
        if one.answer.error is not None:
            data["error"] = one.answer.error
        events.append((outgoing.job_id, NewEvent(_EVENT_TYPES[one.outcome.state], data)))
    return events


_EVENT_TYPES = {
    DeliveryState.SUCCEEDED: EventType.WEBHOOK_DELIVERED,
    DeliveryState.PENDING: EventType.WEBHOOK_FAILED,
    DeliveryState.FAILED: EventType.WEBHOOK_ABANDONED,
}
