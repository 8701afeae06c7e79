"""The service's REST API as the `submit`, `jobs` and `models` commands reach it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.base import EXIT_FAILED, EXIT_USAGE, fail, one_line, settings_or_exit

if TYPE_CHECKING:
    import httpx

BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", help="The service's address. Default: PUBLIC_BASE_URL."),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="An API key from `poyo-relay keys create`. Default: POYO_RELAY_API_KEY.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")]

# A mistake the caller must fix (exit 2), as opposed to an operation that failed (exit 1).
_USAGE_STATUSES = {400, 401, 403, 409, 413, 415, 422}


class ApiFailure(Exception):
    """The API answered with an error, or could not be reached."""

    def __init__(self, message: str, *, exit_code: int, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = details or []


@contextlib.contextmanager
def api(base_url: str | None, api_key: str | None) -> Iterator[httpx.Client]:
    """An authenticated HTTP client for the service; API failures end the command."""
    import httpx

    settings = settings_or_exit()
    key = api_key or settings.poyo_relay_api_key.get_secret_value()
    if not key:
        fail(
            "an API key is required: --api-key or POYO_RELAY_API_KEY "
            "(make one with `poyo-relay keys create NAME`)",
            EXIT_USAGE,
        )
    url = (base_url or settings.public_base_url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        fail(f"--base-url must start with http:// or https://, not {url!r}", EXIT_USAGE)
    headers = {"Authorization": f"Bearer {key}", "User-Agent": "poyo-relay-cli"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
            yield client
    except httpx.HTTPError as exc:
        fail(f"cannot reach the service at {url}: {one_line(exc)}", EXIT_FAILED)
    except ApiFailure as failure:
        fail(failure.message, failure.exit_code, failure.details)


def call(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    ok: tuple[int, ...] = (200,),
    usage: tuple[int, ...] = (),
    **kwargs: Any,
) -> dict[str, Any]:
    """The JSON body of an answer in `ok`, else ApiFailure (exit 2 for a status the
    caller must fix, including those in `usage`; else 1)."""
    response = client.request(method, path, **kwargs)
    if response.status_code in ok:
        body: dict[str, Any] = response.json()
        return body
    raise failure_of(response, usage)


def failure_of(response: httpx.Response, usage: tuple[int, ...] = ()) -> ApiFailure:
    try:
        error = response.json()["error"]
        message = f"{error['message']} (HTTP {response.status_code})"
        details = [
            f"{'.'.join(str(part) for part in detail.get('loc', []))}: {detail.get('msg')}"
            for detail in error.get("details") or []
            if isinstance(detail, dict)
        ]
    except (ValueError, KeyError, TypeError):
        message, details = f"the service answered HTTP {response.status_code}", []
    if response.status_code == 401:
        details.append("check the API key (--api-key or POYO_RELAY_API_KEY)")
    code = EXIT_USAGE if response.status_code in {*_USAGE_STATUSES, *usage} else EXIT_FAILED
    return ApiFailure(message, exit_code=code, details=details)
