"""Everything a process needs at run time, built once and closed once."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass

from app.callbacks.credentials import CallbackCredentials, load_credentials
from app.callbacks.service import CallbackService
from app.config import Settings
from app.db import Database
from app.jobs.confirmation import Confirmation
from app.jobs.service import JobService
from app.jobs.transitions import Transitions
from app.provider.client import PoyoClient
from app.webhooks.service import WebhookSender


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


def instance_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


@dataclass
class Runtime:
    settings: Settings
    db: Database
    provider: PoyoClient
    credentials: CallbackCredentials
    jobs: JobService
    confirmation: Confirmation
    callbacks: CallbackService
    webhooks: WebhookSender
    wakeup: Wakeup
    instance: str

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        db = Database(settings)
        credentials = await load_credentials(settings, db)
        provider = PoyoClient(
            base_url=settings.provider_base_url,
            api_key=settings.poyo_api_key.get_secret_value(),
            timeout=settings.provider_timeout_seconds,
            connect_timeout=settings.provider_connect_timeout_seconds,
            max_connections=settings.provider_max_connections,
        )
        wakeup = Wakeup()
        instance = instance_id()
        transitions = Transitions(settings=settings, db=db)
        confirmation = Confirmation(
            settings=settings,
            db=db,
            provider=provider,
            transitions=transitions,
            on_check_requested=wakeup.notify,
        )
        jobs = JobService(
            settings=settings,
            db=db,
            provider=provider,
            callback_url_for=credentials.url,
            instance_id=instance,
            transitions=transitions,
            confirmation=confirmation,
        )
        callbacks = CallbackService(
            db=db,
            credentials=credentials,
            webhook_secret=settings.poyo_webhook_secret.get_secret_value(),
            webhook_tolerance=settings.webhook_tolerance_seconds,
            on_received=wakeup.notify,
        )
        webhooks = WebhookSender(settings=settings, db=db, credentials=credentials)
        return cls(
            settings,
            db,
            provider,
            credentials,
            jobs,
            confirmation,
            callbacks,
            webhooks,
            wakeup,
            instance,
        )

    async def close(self) -> None:
        await self.jobs.drain()
        await self.provider.aclose()
        await self.webhooks.aclose()
        await self.db.dispose()
