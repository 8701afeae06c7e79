"""Per-job callback credentials and the provider's optional webhook signature.

A job's callback URL carries HMAC-SHA256(server secret, job id): unguessable, checkable
without a database read, and never stored. The same server secret (CALLBACK_SECRET, or one
generated and kept in the database) also derives each owner's client-webhook signing key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.callbacks.models import ServiceSecret
from app.config import Settings
from app.db import Database
from app.logs import REDACTOR
from app.timeutil import utcnow

CALLBACK_PATH = "/v1/callbacks/poyo"
_SECRET_NAME = "callback_credential_key"  # noqa: S105 - a row name


class CallbackCredentials:
    def __init__(self, *, secret: bytes, public_base_url: str) -> None:
        self._secret = secret
        self._base = public_base_url.rstrip("/") + CALLBACK_PATH

    def derive(self, purpose: str, subject: str) -> bytes:
        """A key for one purpose and subject; the server secret itself is never used bare."""
        message = f"{purpose}:{subject}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def token(self, job_id: str) -> str:
        return base64.urlsafe_b64encode(self.derive("callback", job_id)).rstrip(b"=").decode()

    def url(self, job_id: str) -> str:
        return f"{self._base}/{job_id}/{self.token(job_id)}"

    def verify(self, job_id: str, token: str) -> bool:
        return hmac.compare_digest(self.token(job_id).encode(), token.encode())


def webhook_signature(secret: str, task_id: str, timestamp: str) -> str:
    """base64(HMAC-SHA256(secret, task_id + "." + timestamp)), as PoYo documents it."""
    message = f"{task_id}.{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify_webhook_signature(
    *,
    secret: str,
    task_id: str,
    timestamp: str | None,
    signature: str | None,
    now: float,
    tolerance: int,
) -> str | None:
    """None when the signature holds; otherwise why it does not."""
    if not timestamp or not signature:
        return "missing signature headers"
    try:
        sent_at = int(timestamp)
    except ValueError:
        return "malformed timestamp"
    if abs(now - sent_at) > tolerance:
        return "timestamp outside the tolerated window"
    expected = webhook_signature(secret, task_id, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        return "signature mismatch"
    return None


async def load_credentials(settings: Settings, db: Database) -> CallbackCredentials:
    """The configured key, or one generated once and shared by every replica via the DB."""
    configured = settings.callback_secret.get_secret_value()
    if configured:
        return CallbackCredentials(
            secret=configured.encode(), public_base_url=settings.public_base_url
        )
    insert = pg_insert if not db.is_sqlite else sqlite_insert
    candidate = secrets.token_urlsafe(48)
    # Known to the log redactor before any statement carries it: drivers log parameters
    # at DEBUG level.
    REDACTOR.register([candidate])
    async with db.write() as session:
        await session.execute(
            insert(ServiceSecret)
            .values(name=_SECRET_NAME, value=candidate, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        value = (
            await session.execute(
                select(ServiceSecret.value).where(ServiceSecret.name == _SECRET_NAME)
            )
        ).scalar_one()
    REDACTOR.register([value])
    return CallbackCredentials(secret=value.encode(), public_base_url=settings.public_base_url)
