"""poyo-relay's Python packages that do not need the server: `poyo_relay.client`, a typed
client for the REST API (standard library and httpx only)."""
