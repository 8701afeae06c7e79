"""The API's requests and how to read their answers, pure: each operation is a `Call` (what
to send, how to parse what comes back), built and parsed the same way by the sync and async
clients, which only send them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from poyo_relay.client.errors import InvalidResponse
from poyo_relay.client.types import Estimate, Job, JobEvent, JobStatus, Model

T = TypeVar("T")

MAX_WAIT_SECONDS = 60
MAX_PAGE_SIZE = 100
MAX_EVENTS_PAGE_SIZE = 1000
USER_AGENT = "poyo-relay-python"


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request, relative to the client's base URL. `wait` is a long-poll's duration:
    the read timeout grows by as much."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    wait: float = 0.0

    def with_headers(self, headers: Mapping[str, str]) -> RequestSpec:
        """The same request with `headers` added."""
        return RequestSpec(
            self.method, self.path, self.params, self.json, {**self.headers, **headers}, self.wait
        )


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """A request and the parser of its answer's JSON."""

    spec: RequestSpec
    parse: Callable[[Any], T]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: its items and the cursor of the next page (None: the last)."""

    items: tuple[T, ...]
    next_cursor: str | None


class Endpoint:
    """Where the client sends its requests: the base URL, the key, the timeout."""

    def __init__(self, base_url: str, api_key: str, timeout: float) -> None:
        url = base_url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")
        if not api_key:
            raise ValueError("an API key is required")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.base_url = url
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {api_key}"}

    def build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        spec: RequestSpec,
        *,
        read_timeout: float | None = None,
    ) -> httpx.Request:
        """The httpx request for `spec`; a long-poll's read timeout covers its wait."""
        read = read_timeout if read_timeout is not None else self.timeout + spec.wait
        return http.build_request(
            spec.method,
            self.base_url + spec.path,
            params=dict(spec.params) or None,
            json=spec.json,
            headers={"Accept": "application/json", **self._auth, **spec.headers},
            timeout=httpx.Timeout(self.timeout, read=read),
        )


def parse_json(response: httpx.Response) -> Any:
    """The JSON of a successful answer, or InvalidResponse."""
    try:
        return response.json()
    except ValueError as exc:
        raise InvalidResponse(
            f"the service answered HTTP {response.status_code} with a body that is not JSON "
            f"({response.request.method} {response.request.url.path})"
        ) from exc


def parse_with(call: Call[T], data: Any) -> T:
    """`call`'s parser applied to `data`; a shape it cannot read is InvalidResponse."""
    try:
        return call.parse(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidResponse(
            f"unexpected answer to {call.spec.method} {call.spec.path}: {exc!r}"
        ) from exc


# ---- query values ---------------------------------------------------------------------


def wait_param(wait: float | None) -> dict[str, str]:
    """`?wait=N` for a long-poll of N seconds (0 < N ≤ 60), or nothing."""
    if wait is None:
        return {}
    if not 0 < wait <= MAX_WAIT_SECONDS:
        raise ValueError(f"wait must be more than 0 and at most {MAX_WAIT_SECONDS} seconds")
    return {"wait": f"{wait:g}"}


def time_param(value: datetime | str) -> str:
    """A timestamp for a filter: aware datetimes in UTC with `Z`; naive ones are taken as
    UTC (as the service does); strings as given."""
    if isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def _job_path(job_id: str, suffix: str = "") -> str:
    if not job_id:
        raise ValueError("a job id is required")
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def _filters(**values: str | JobStatus | None) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


# ---- the operations -------------------------------------------------------------------


def create_job(
    *,
    model: str,
    input: Mapping[str, Any],
    idempotency_key: str | None,
    webhook_url: str | None,
    metadata: Mapping[str, str] | None,
    wait: float | None,
) -> Call[Job]:
    """`POST /v1/jobs`, with an Idempotency-Key made here unless given, so that every retry
    of this call carries the same one."""
    body: dict[str, Any] = {"model": model, "input": dict(input)}
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    key = idempotency_key or str(uuid.uuid4())
    spec = RequestSpec(
        "POST",
        "/v1/jobs",
        params=wait_param(wait),
        json=body,
        headers={"Idempotency-Key": key},
        wait=wait or 0.0,
    )
    return Call(spec, Job.from_dict)


def estimate_job(*, model: str, input: Mapping[str, Any]) -> Call[Estimate]:
    """`POST /v1/estimates`: what a job with this input would cost; nothing is created."""
    spec = RequestSpec("POST", "/v1/estimates", json={"model": model, "input": dict(input)})
    return Call(spec, Estimate.from_dict)


def get_job(job_id: str, *, wait: float | None = None) -> Call[Job]:
    """`GET /v1/jobs/{id}`, a long-poll with `wait`."""
    spec = RequestSpec("GET", _job_path(job_id), params=wait_param(wait), wait=wait or 0.0)
    return Call(spec, Job.from_dict)


def list_models(*, category: str | None = None, q: str | None = None) -> Call[list[Model]]:
    """`GET /v1/models`."""
    spec = RequestSpec("GET", "/v1/models", params=_filters(category=category, q=q))
    return Call(spec, lambda data: [Model.from_dict(m) for m in data["data"]])


def get_model(model_id: str) -> Call[Model]:
    """`GET /v1/models/{id}` (ids may contain `/`)."""
    if not model_id:
        raise ValueError("a model id is required")
    return Call(RequestSpec("GET", "/v1/models/" + quote(model_id, safe="/")), Model.from_dict)


def webhook_secret() -> Call[str]:
    """`GET /v1/webhook_secret`: the caller's `whsec_…` secret."""
    return Call(RequestSpec("GET", "/v1/webhook_secret"), lambda data: str(data["secret"]))


def _page(parse_item: Callable[[Any], T]) -> Callable[[Any], Page[T]]:
    def parse(data: Any) -> Page[T]:
        cursor = data.get("next_cursor")
        return Page(tuple(parse_item(item) for item in data["data"]), cursor or None)

    return parse


@dataclass(frozen=True, slots=True)
class Pages(Generic[T]):
    """A list read page after page: the first page's call, and each next one's."""

    path: str
    params: Mapping[str, str]
    parse_item: Callable[[Any], T]

    def call(self, cursor: str | None = None) -> Call[Page[T]]:
        """The call for the page after `cursor` (the first page without one)."""
        params = {**self.params, **({"cursor": cursor} if cursor else {})}
        return Call(RequestSpec("GET", self.path, params=params), _page(self.parse_item))


def list_jobs(
    *,
    status: JobStatus | str | None,
    model: str | None,
    created_after: datetime | str | None,
    created_before: datetime | str | None,
    page_size: int,
) -> Pages[Job]:
    """`GET /v1/jobs`, every page, newest first."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be 1 to {MAX_PAGE_SIZE}")
    params = _filters(
        status=status,
        model=model,
        created_after=None if created_after is None else time_param(created_after),
        created_before=None if created_before is None else time_param(created_before),
        limit=str(page_size),
    )
    return Pages("/v1/jobs", params, Job.from_dict)


def list_events(job_id: str) -> Pages[JobEvent]:
    """`GET /v1/jobs/{id}/events`, every page, oldest first."""
    return Pages(
        _job_path(job_id, "/events"), {"limit": str(MAX_EVENTS_PAGE_SIZE)}, JobEvent.from_dict
    )


def stream_job(job_id: str) -> RequestSpec:
    """`GET /v1/jobs/{id}/stream`: the job's updates as Server-Sent Events."""
    return RequestSpec("GET", _job_path(job_id, "/stream"))


def stream_all(*, status: JobStatus | str | None, model: str | None) -> RequestSpec:
    """`GET /v1/stream`: every change of the caller's jobs."""
    return RequestSpec("GET", "/v1/stream", params=_filters(status=status, model=model))
