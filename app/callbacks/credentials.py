"""Per-job callback URLs: each carries HMAC-SHA256(server key, job id), unguessable,
checkable without a database read, compared in constant time and never stored."""

from __future__ import annotations

import base64
import hmac

from app.keyring.models import ServerKey

CALLBACK_PATH = "/v1/callbacks/poyo"


class CallbackCredentials:
    def __init__(self, *, key: ServerKey, public_base_url: str) -> None:
        self._key = key
        self._base = public_base_url.rstrip("/") + CALLBACK_PATH

    def token(self, job_id: str) -> str:
        return base64.urlsafe_b64encode(self._key.derive("callback", job_id)).rstrip(b"=").decode()

    def url(self, job_id: str) -> str:
        return f"{self._base}/{job_id}/{self.token(job_id)}"

    def verify(self, job_id: str, token: str) -> bool:
        return hmac.compare_digest(self.token(job_id).encode(), token.encode())
