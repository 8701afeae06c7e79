"""The composition root: everything a process needs at run time, built once, closed once.

Routers reach services through it (app.web.deps); the worker's loops are built here, each
with the one service method it needs.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import structlog

from app.archive.download import Downloader
from app.archive.links import OutputLinks
from app.archive.service import ArchiveService
from app.archive.storage import open_storage
from app.billing.balance import BalanceCheck
from app.callbacks.credentials import CallbackCredentials
from app.callbacks.service import CallbackService
from app.catalog.service import CatalogService
from app.config import Settings
from app.db import Database, is_unavailable
from app.jobs.confirmation import Confirmation
from app.jobs.leases import Queue
from app.jobs.service import JobService
from app.jobs.states import IN_FLIGHT, JobStatus
from app.keyring.models import ServerKey
from app.keyring.service import load_server_key
from app.provider.client import PoyoClient
from app.streams.feed import ChangeFeed
from app.streams.service import StreamService
from app.webhooks.delivery import Deliverer
from app.webhooks.service import EndpointService
from app.worker.loops import ClaimLoop, Handler
from app.worker.runner import Background, Periodic, Worker

log = structlog.get_logger(__name__)

# The first balance check waits this long (at most): an API the simulator is mounted in is
# serving by then.
BALANCE_FIRST_CHECK_SECONDS = 5.0


def worker_queues(settings: Settings) -> dict[str, Queue]:
    """What each of the worker's loops claims, by loop name (`archive` whether or not
    archiving is on): the worker's, and what `poyo-relay status` counts."""
    in_flight = tuple(sorted(IN_FLIGHT))
    deadline = timedelta(seconds=settings.job_deadline_seconds)
    return {
        "expire": Queue(in_flight, overdue_after=deadline),
        "submit": Queue((JobStatus.PENDING,)),
        "reconcile": Queue(in_flight),
        "archive": Queue((JobStatus.SUCCEEDED,), due_at="archive_due_at"),
    }


class Wakeup:
    """Lets a callback wake the in-process worker's loops at once, not at their next poll."""

    def __init__(self) -> None:
        self._subscribers: list[asyncio.Event] = []

    def subscribe(self) -> asyncio.Event:
        """An event set by every later notify(); its owner clears it before looking for work."""
        event = asyncio.Event()
        self._subscribers.append(event)
        return event

    def notify(self) -> None:
        for event in self._subscribers:
            event.set()


@dataclass
class Runtime:
    settings: Settings
    db: Database
    provider: PoyoClient
    server_key: ServerKey
    credentials: CallbackCredentials
    catalogs: CatalogService
    jobs: JobService
    confirmation: Confirmation
    callbacks: CallbackService
    webhook_endpoints: EndpointService
    archive: ArchiveService
    output_links: OutputLinks
    wakeup: Wakeup
    feed: ChangeFeed
    streams: StreamService
    instance: str

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        db = Database(settings)
        server_key = await load_server_key(settings, db)
        credentials = CallbackCredentials(key=server_key, public_base_url=settings.public_base_url)
        provider = PoyoClient(
            base_url=settings.provider_base_url,
            api_key=settings.poyo_api_key.get_secret_value(),
            timeout=settings.provider_timeout_seconds,
            connect_timeout=settings.provider_connect_timeout_seconds,
            max_connections=settings.provider_max_connections,
        )
        wakeup = Wakeup()
        instance = f"{socket.gethostname()[:40]}:{os.getpid()}"
        catalogs = CatalogService(db=db, refresh_seconds=settings.catalog_refresh_seconds)
        try:
            await catalogs.current()  # compiled once at start; an empty database gets the snapshot
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("catalog_not_loaded", error_type=type(exc).__name__)  # loaded on first use
        confirmation = Confirmation(
            settings=settings, db=db, provider=provider, on_check_requested=wakeup.notify
        )
        feed = ChangeFeed(
            db,
            poll_seconds=settings.stream_poll_seconds,
            max_subscribers=settings.stream_max_clients,
            queue_limit=settings.stream_buffer_events,
        )
        jobs = JobService(
            settings=settings,
            db=db,
            provider=provider,
            callback_url_for=credentials.url,
            catalogs=catalogs,
            confirmation=confirmation,
            instance_id=instance,
        )
        return cls(
            settings=settings,
            db=db,
            provider=provider,
            server_key=server_key,
            credentials=credentials,
            catalogs=catalogs,
            jobs=jobs,
            confirmation=confirmation,
            callbacks=CallbackService(
                db=db,
                credentials=credentials,
                webhook_secret=settings.poyo_webhook_secret.get_secret_value(),
                webhook_tolerance=settings.webhook_tolerance_seconds,
                on_received=wakeup.notify,
            ),
            webhook_endpoints=EndpointService(settings=settings, db=db, server_key=server_key),
            archive=archive_service(settings, db),
            output_links=OutputLinks(server_key),
            wakeup=wakeup,
            feed=feed,
            streams=StreamService(
                db=db,
                feed=feed,
                confirmation=confirmation,
                heartbeat_seconds=settings.stream_heartbeat_seconds,
                progress_refresh_seconds=settings.progress_refresh_seconds,
            ),
            instance=instance,
        )

    async def start_feed(self) -> None:
        """Serve waits and streams (API processes): tail the audit trail, and on
        PostgreSQL listen for other processes' changes."""
        listen = None if self.settings.is_sqlite else self.settings.database_url
        await self.feed.start(listen)

    def worker(self, lease_owner: str | None = None) -> Worker:
        """The worker's loops: expire (in-flight jobs past their deadline: a last check,
        then failure), submit (pending jobs), reconcile (in-flight jobs a callback asked to
        confirm, or silent too long), and, unless ARCHIVE_ENABLED=false, archive (succeeded
        jobs whose outputs are due to be kept). Beside them, the webhook delivery loop sends
        the outbox's due deliveries and, unless BALANCE_CHECK_SECONDS=0, a check reads
        PoYo's balance."""
        owner = lease_owner or f"worker:{self.instance}"
        queues = worker_queues(self.settings)
        loops = [
            self._loop("expire", queues["expire"], self.confirmation.refresh, owner),
            self._loop("submit", queues["submit"], self.jobs.submit_due, owner),
            self._loop("reconcile", queues["reconcile"], self.confirmation.refresh, owner),
        ]
        if self.settings.archive_enabled:
            slots = self.settings.archive_concurrency
            loops.append(
                self._loop("archive", queues["archive"], self.archive.archive, owner, slots)
            )
        background: list[Background] = [
            Deliverer(
                settings=self.settings, db=self.db, server_key=self.server_key, lease_owner=owner
            )
        ]
        if (every := self.settings.balance_check_seconds) > 0:
            check = BalanceCheck(
                db=self.db,
                provider=self.provider,
                warn_below_credits=self.settings.balance_warn_credits,
            )
            first = min(every, BALANCE_FIRST_CHECK_SECONDS)
            background.append(Periodic("balance", check.run_once, seconds=every, first_delay=first))
        return Worker(db=self.db, loops=loops, lease_owner=owner, background=background)

    def _loop(
        self, name: str, queue: Queue, handle: Handler, owner: str, slots: int | None = None
    ) -> ClaimLoop:
        settings = self.settings
        return ClaimLoop(
            name=name,
            db=self.db,
            queue=queue,
            handle=handle,
            lease_owner=owner,
            lease_seconds=settings.worker_lease_seconds,
            slots=slots or min(settings.worker_batch_size, settings.worker_concurrency),
            poll_seconds=settings.worker_poll_seconds,
            woken=self.wakeup.subscribe(),
        )

    async def close(self) -> None:
        await self.feed.stop()
        await self.provider.aclose()
        await self.archive.aclose()
        await self.db.dispose()


def archive_service(settings: Settings, db: Database) -> ArchiveService:
    """The archive, with its storage backend and a downloader that, in sandbox mode,
    trusts the simulator's own (loopback) files."""
    trusted = (settings.provider_base_url,) if settings.sandbox_mode else ()
    return ArchiveService(
        settings=settings,
        db=db,
        storage=open_storage(settings),
        downloader=Downloader(settings, trusted_origins=trusted),
    )
