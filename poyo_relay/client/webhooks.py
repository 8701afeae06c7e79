"""Verifying the webhooks poyo-relay sends (Standard Webhooks signatures)."""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any

from poyo_relay.client.errors import WebhookVerificationError


def verify_webhook(headers: Mapping[str, str], body: bytes | str, secret: str) -> dict[str, Any]:
    """Check a webhook's signature and return its payload.

    `headers` are the request's (`webhook-id`, `webhook-timestamp`, `webhook-signature`;
    any case), `body` its raw body, exactly as received (not re-serialized JSON), and
    `secret` your `whsec_…` secret (`client.webhook_secret()`). The payload is
    `{"type": "job.succeeded" | "job.failed", "timestamp", "data": <the job>}`
    (`Job.from_dict(payload["data"])` types the job). Raises `WebhookVerificationError` when
    a header is missing, the timestamp is more than 5 minutes away from now, or no
    signature matches; `ValueError` when `secret` is not a webhook secret.
    """
    from standardwebhooks.webhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError as Unverified

    try:
        webhook = Webhook(secret)
    except (binascii.Error, ValueError, TypeError, RuntimeError) as exc:
        raise ValueError("not a webhook secret (expected whsec_…)") from exc
    except Exception as exc:  # the library's EmptyWebhookSecretError
        raise ValueError(f"not a webhook secret: {exc}") from exc
    try:
        payload = webhook.verify(body, dict(headers.items()))
    except Unverified as exc:
        raise WebhookVerificationError(str(exc) or "invalid webhook signature") from exc
    except (ValueError, TypeError, UnicodeDecodeError) as exc:  # malformed signature header
        raise WebhookVerificationError(f"malformed webhook: {exc}") from exc
    if not isinstance(payload, dict):
        raise WebhookVerificationError("the webhook's payload is not a JSON object")
    return payload
