"""Load the server key: CALLBACK_SECRET, or one generated once and kept in the database,
so that every replica and every restart derives the same callback credentials and
webhook secrets."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from app.config import Settings
from app.db import Database, upsert
from app.keyring.models import ServerKey, ServiceSecret
from app.logs import REDACTOR
from app.timeutil import utcnow

_SECRET_NAME = "callback_credential_key"  # noqa: S105 - a row name


async def load_server_key(settings: Settings, db: Database) -> ServerKey:
    """The configured key, or one generated once and shared by every replica via the DB."""
    configured = settings.callback_secret.get_secret_value()
    if configured:
        return ServerKey(configured.encode())
    candidate = secrets.token_urlsafe(48)
    # Known to the log redactor before any statement carries it: drivers log parameters
    # at DEBUG level.
    REDACTOR.register([candidate])
    async with db.write() as conn:
        await conn.execute(
            upsert(conn, ServiceSecret)
            .values(name=_SECRET_NAME, value=candidate, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        value = (
            await conn.execute(
                select(ServiceSecret.value).where(ServiceSecret.name == _SECRET_NAME)
            )
        ).scalar_one()
    REDACTOR.register([value])
    return ServerKey(value.encode())
