"""What the sync and async clients share: their configuration, checked once."""

from __future__ import annotations

from typing import Generic, TypeVar

import httpx

from poyo_relay.client._requests import USER_AGENT, Endpoint
from poyo_relay.client._retry import RetryPolicy

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3

H = TypeVar("H", httpx.Client, httpx.AsyncClient)


class BaseClient(Generic[H]):
    """The endpoint, the retry policy and the httpx client (closed with this one only if
    this one made it)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float,
        max_retries: int,
        http_client: H | None,
        make_http: type[H],
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self._endpoint = Endpoint(base_url, api_key, timeout)
        self._policy = RetryPolicy(max_retries=max_retries)
        self._owns_http = http_client is None
        self._http: H = (
            http_client
            if http_client is not None
            else make_http(headers={"User-Agent": USER_AGENT}, follow_redirects=False)
        )

    @property
    def base_url(self) -> str:
        """The service's address, without a trailing slash."""
        return self._endpoint.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"
