"""Each owner's signing secret, in the `whsec_` form Standard Webhooks libraries accept."""

from __future__ import annotations

import base64

from app.callbacks.credentials import CallbackCredentials


def owner_secret(credentials: CallbackCredentials, owner: str) -> str:
    return "whsec_" + base64.b64encode(credentials.derive("webhook", owner)).decode()
