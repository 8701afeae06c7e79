"""`/v1/jobs`: thin handlers over jobs.service (commands) and jobs.queries (reads)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from app.errors import (
    BadRequest,
    BudgetExceeded,
    Conflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unavailable,
    UnsupportedMediaType,
)
from app.jobs import queries
from app.jobs.models import JobRecord
from app.jobs.schemas import (
    NO_NUL_PATTERN,
    EventList,
    JobCreate,
    JobList,
    JobOut,
    event_list,
    job_list,
    job_to_dict,
)
from app.jobs.states import JobStatus
from app.streams import sse
from app.timeutil import assume_utc
from app.web.deps import CallerDep, RuntimeDep
from app.web.errors import error_responses
from app.web.responses import json_response

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

WaitQuery = Annotated[
    float | None,
    Query(
        gt=0,
        le=sse.MAX_WAIT_SECONDS,
        description="Answer as soon as the job has ended, or with its current state after "
        "this many seconds (at most 60). `Prefer: wait=N` does the same.",
    ),
]
PreferHeader = Annotated[
    str | None,
    Header(
        alias="Prefer",
        max_length=256,
        description="`wait=N` (RFC 7240): as `?wait=N`; more than 60 s waits 60 s.",
    ),
]


def _wait_seconds(query: float | None, prefer: str | None) -> tuple[float | None, bool]:
    """How long to wait, and whether `Prefer` asked for it (to say it was applied)."""
    if query is not None:
        return query, False
    seconds = sse.prefer_wait(prefer)
    return seconds, seconds is not None


def _waited(content: JobOut, status_code: int, seconds: float | None, by_prefer: bool) -> Response:
    response = json_response(content, status_code)
    if by_prefer and seconds is not None:
        response.headers["Preference-Applied"] = f"wait={seconds:g}"
    return response


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Retries with the same key and body within 24 h return the original job.",
    ),
]


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    summary="Create a job",
    responses={
        200: {"model": JobOut, "description": "Replay of an earlier request with this key"},
        **error_responses(
            BadRequest,
            BudgetExceeded,
            Conflict,
            UnsupportedMediaType,
            InvalidRequest,
            RateLimited,
            Unavailable,
        ),
    },
)
async def create_job(
    body: JobCreate,
    runtime: RuntimeDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKeyHeader = None,
    wait: WaitQuery = None,
    prefer: PreferHeader = None,
) -> Response:
    """Validate, store and submit a job. A provider rejection is a `201` with `failed`.
    With `?wait=N`, answer once the job has ended or after N seconds."""
    seconds, by_prefer = _wait_seconds(wait, prefer)
    if seconds is not None:
        runtime.feed.admit()
    job: JobRecord
    job, created = await runtime.jobs.create(
        caller=caller, body=body, idempotency_key=idempotency_key
    )
    if seconds is not None:
        job = await runtime.streams.wait(caller, job, seconds)
    return _waited(job_to_dict(job), 201 if created else 200, seconds, by_prefer)


@router.get(
    "",
    response_model=JobList,
    summary="List jobs, newest first",
    responses=error_responses(InvalidRequest),
)
async def list_jobs(
    runtime: RuntimeDep,
    caller: CallerDep,
    status: JobStatus | None = None,
    model: Annotated[str | None, Query(max_length=64, pattern=NO_NUL_PATTERN)] = None,
    created_after: Annotated[datetime | None, Query(description="inclusive")] = None,
    created_before: Annotated[datetime | None, Query(description="exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    filters = queries.JobFilter(
        status, model, assume_utc(created_after), assume_utc(created_before)
    )
    jobs, next_cursor = await queries.list_jobs(
        runtime.db, caller=caller, filters=filters, limit=limit, cursor=cursor
    )
    return json_response(job_list(jobs, next_cursor))


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="Get a job",
    responses=error_responses(NotFound, InvalidRequest, Unavailable),
)
async def get_job(
    job_id: str,
    runtime: RuntimeDep,
    caller: CallerDep,
    wait: WaitQuery = None,
    prefer: PreferHeader = None,
) -> Response:
    """With `?wait=N`, answer once the job has ended or after N seconds."""
    seconds, by_prefer = _wait_seconds(wait, prefer)
    job = await queries.get_job(runtime.db, caller=caller, job_id=job_id)
    await runtime.confirmation.refresh_if_watched(job)
    if seconds is not None:
        runtime.feed.admit()
        job = await runtime.streams.wait(caller, job, seconds)
    return _waited(job_to_dict(job), 200, seconds, by_prefer)


@router.get(
    "/{job_id}/events",
    response_model=EventList,
    summary="A job's audit trail, oldest first",
    responses=error_responses(NotFound, InvalidRequest),
)
async def list_events(
    job_id: str,
    runtime: RuntimeDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    events, next_cursor = await queries.list_events(
        runtime.db, caller=caller, job_id=job_id, limit=limit, cursor=cursor
    )
    return json_response(event_list(events, next_cursor))
