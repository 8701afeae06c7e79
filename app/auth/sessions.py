"""Dashboard sessions: signing in with an API key makes a session whose random token lives
in an HttpOnly cookie; the database keeps only its hash. A session is as good as its key:
revoking the key ends it. Each has its own CSRF token for the dashboard's forms."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select

from app.auth.models import ApiKey, Caller, UiSession
from app.auth.service import authenticate
from app.db import Database
from app.timeutil import utcnow

TOKEN_BYTES = 32
MAX_TOKEN_CHARS = 64


@dataclass(frozen=True)
class Session:
    caller: Caller
    csrf_token: str
    expires_at: datetime

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf_token.encode())


async def sign_in(db: Database, api_key: str, lifetime: timedelta) -> tuple[str, Session] | None:
    """A new session for a live API key: (the cookie's token, the session); None if the
    key is not one."""
    caller = await authenticate(db, api_key)
    if caller is None or caller.key_id is None:
        return None
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    session = Session(caller, secrets.token_urlsafe(TOKEN_BYTES), now + lifetime)
    async with db.write() as conn:
        await conn.execute(
            insert(UiSession).values(
                id=_hash(token),
                key_id=caller.key_id,
                csrf_token=session.csrf_token,
                created_at=now,
                expires_at=session.expires_at,
            )
        )
    return token, session


async def current(db: Database, token: str | None) -> Session | None:
    """The live session of a cookie's token, if any."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    query = (
        select(UiSession.csrf_token, UiSession.expires_at, ApiKey.id, ApiKey.name, ApiKey.is_admin)
        .join(ApiKey, ApiKey.id == UiSession.key_id)
        .where(
            UiSession.id == _hash(token),
            UiSession.expires_at > utcnow(),
            ApiKey.revoked_at.is_(None),
        )
    )
    async with db.read_connection() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        return None
    caller = Caller(owner=row.name, key_id=row.id, is_admin=row.is_admin)
    return Session(caller, row.csrf_token, row.expires_at)


async def sign_out(db: Database, token: str | None) -> None:
    if not token or len(token) > MAX_TOKEN_CHARS:
        return
    async with db.write() as conn:
        await conn.execute(delete(UiSession).where(UiSession.id == _hash(token)))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
