"""Signed, expiring output links: `…/outputs/{index}?expires=<unix seconds>&sig=<hex>`
opens one output without an API key until `expires`. The signature is HMAC-SHA256 under
a key derived from the server secret for this purpose, compared in constant time."""

from __future__ import annotations

import hmac

from app.keyring.models import ServerKey

MAX_SIGNATURE_CHARS = 64


class OutputLinks:
    def __init__(self, key: ServerKey) -> None:
        self._key = key

    def signature(self, job_id: str, index: int, expires: int) -> str:
        return self._key.derive("output-link", f"{job_id}/{index}/{expires}").hex()

    def verify(self, job_id: str, index: int, expires: int, signature: str, now: float) -> bool:
        """The signature is this link's and the link has not expired."""
        if len(signature) > MAX_SIGNATURE_CHARS:
            return False
        expected = self.signature(job_id, index, expires)
        return hmac.compare_digest(expected.encode(), signature.encode()) and now < expires
