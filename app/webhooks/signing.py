"""Each owner's webhook signing secret, in the `whsec_` form Standard Webhooks libraries accept."""

from __future__ import annotations

import base64

from app.keyring.models import ServerKey


def owner_secret(key: ServerKey, owner: str) -> str:
    return "whsec_" + base64.b64encode(key.derive("webhook", owner)).decode()
