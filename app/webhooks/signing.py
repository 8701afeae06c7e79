"""Webhook signing secrets, in the `whsec_` form Standard Webhooks libraries accept, and the
signature header. Secrets are derived from the server key, never stored: an owner's (for
jobs' own `webhook_url`) and each endpoint's, per secret generation (a rotation is the
next generation)."""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook

from app.keyring.models import ServerKey


def owner_secret(key: ServerKey, owner: str) -> str:
    return _whsec(key.derive("webhook", owner))


def endpoint_secret(key: ServerKey, endpoint_id: str, generation: int) -> str:
    return _whsec(key.derive("webhook-endpoint", f"{endpoint_id}:{generation}"))


def signature(secrets: Sequence[str], message_id: str, timestamp: datetime, body: str) -> str:
    """The `webhook-signature` header: one `v1,…` per secret, space-separated, as the
    spec allows while a rotation's old and new secret both sign."""
    return " ".join(_signer(secret).sign(message_id, timestamp, body) for secret in secrets)


@functools.lru_cache(maxsize=4096)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)


def _whsec(material: bytes) -> str:
    return "whsec_" + base64.b64encode(material).decode()
