"""Server-sent event streams: one job's changes, and every change of the caller's jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from starlette.responses import StreamingResponse

from app.errors import InvalidRequest, NotFound, Unavailable
from app.jobs import queries
from app.jobs.schemas import NO_NUL_PATTERN
from app.jobs.states import JobStatus
from app.streams import sse
from app.web.deps import CallerDep, RuntimeDep
from app.web.errors import error_responses

router = APIRouter(tags=["streams"])

LastEventIdHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=32,
        description="Resume after this event id (browsers send it when they reconnect).",
    ),
]
LastEventIdQuery = Annotated[
    int | None,
    Query(
        ge=0,
        le=sse.MAX_EVENT_ID,
        description="As the Last-Event-ID header, for clients that cannot set headers.",
    ),
]

_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
_SSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A `text/event-stream`: messages `id: <event id>` with "
        '`data: {"event": …, "job": …}`, `: keep-alive` heartbeats'
        " (docs/API.md, Streams)",
        # Each event as SSE parsers read it; `data` is one line of JSON.
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "pattern": "^[0-9]+$"},
                        "event": {"type": "string", "enum": ["message", "end"]},
                        "data": {"type": "string"},
                        "retry": {"type": "integer"},
                    },
                }
            }
        },
    }
}


def _stream(body: Any) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream", headers=_STREAM_HEADERS)


@router.get(
    "/v1/jobs/{job_id}/stream",
    summary="Follow a job's changes as server-sent events",
    response_class=StreamingResponse,
    responses={**_SSE, **error_responses(NotFound, InvalidRequest, Unavailable)},
)
async def job_stream(
    job_id: str,
    runtime: RuntimeDep,
    caller: CallerDep,
    last_event_id: LastEventIdHeader = None,
    after: Annotated[LastEventIdQuery, Query(alias="last_event_id")] = None,
) -> StreamingResponse:
    """The job's latest event and the job, then every change until the job is settled
    (ended, and its outputs archived or given up), then an `end` event."""
    job = await queries.get_job(runtime.db, caller=caller, job_id=job_id)
    runtime.feed.admit()
    resume = sse.last_event_id(last_event_id) if last_event_id is not None else after
    return _stream(runtime.streams.job_stream(caller, job, resume))


@router.get(
    "/v1/stream",
    summary="Follow every change of your jobs as server-sent events",
    response_class=StreamingResponse,
    responses={**_SSE, **error_responses(InvalidRequest, Unavailable)},
)
async def all_stream(
    runtime: RuntimeDep,
    caller: CallerDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs now in this status.")] = None,
    model: Annotated[str | None, Query(max_length=64, pattern=NO_NUL_PATTERN)] = None,
    last_event_id: LastEventIdHeader = None,
    after: Annotated[LastEventIdQuery, Query(alias="last_event_id")] = None,
) -> StreamingResponse:
    """From now (or after `Last-Event-ID`), every change of the caller's jobs (an admin
    key's: every job's) whose job matches the filters. It does not end by itself."""
    runtime.feed.admit()
    resume = sse.last_event_id(last_event_id) if last_event_id is not None else after
    body = runtime.streams.all_stream(caller, status=status, model=model, last_event_id=resume)
    return _stream(body)
