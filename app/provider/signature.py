"""PoYo's optional callback signature: base64(HMAC-SHA256(key, task_id + "." + timestamp)).

The body is not covered; the signature only tells that PoYo sent a callback about this
task at this time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign(secret: str, task_id: str, timestamp: str) -> str:
    message = f"{task_id}.{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify(
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
    expected = sign(secret, task_id, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        return "signature mismatch"
    return None
