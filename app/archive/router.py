"""`/v1/jobs/{id}/outputs/{index}`: an archived output, streamed with Range support (or a
redirect to a presigned S3 URL), opened with an API key or a signed, expiring link."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import RedirectResponse, Response, StreamingResponse
from typing_extensions import TypedDict

from app.archive.rules import (
    ByteRange,
    Unsatisfiable,
    download_name,
    requested_range,
    storage_key,
)
from app.archive.service import ArchiveService
from app.errors import (
    BadRequest,
    Forbidden,
    InvalidRequest,
    NotFound,
    RangeNotSatisfiable,
    Unauthorized,
    UnsupportedMediaType,
)
from app.jobs import queries
from app.jobs.models import JobOutput, JobRecord
from app.jobs.schemas import JOB_ID_PATTERN
from app.timeutil import isoformat_z
from app.web.deps import CallerDep, OutputReaderDep, RuntimeDep
from app.web.errors import error_responses
from app.web.responses import json_response

router = APIRouter(prefix="/v1/jobs", tags=["outputs"])

MAX_OUTPUTS = 1000
OutputIndex = Annotated[int, Path(ge=0, lt=MAX_OUTPUTS, description="0 for the first output")]
# What a browser may cache of an archived file (it never changes under its ETag).
CACHE_CONTROL = "private, max-age=3600"
PRESIGNED_SECONDS = 300


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_in: int = Field(
        default=3600,
        ge=60,
        description="Seconds the link works for; at most ARCHIVE_LINK_MAX_SECONDS (7 days).",
    )


class OutputLink(TypedDict):
    object: Literal["output_link"]
    url: str
    expires_at: str


OUTPUT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The archived file, with `Content-Type`, `Content-Length`, `ETag`",
        "content": {"application/octet-stream": {}},
    },
    206: {"description": "The bytes a `Range` header asked for (`Content-Range`)"},
    304: {"description": "`If-None-Match` names the file's ETag"},
    307: {
        "description": "Not archived (yet): PoYo's own URL. With ARCHIVE_S3_REDIRECT, "
        "a presigned URL of the archived file"
    },
    **error_responses(Unauthorized, Forbidden, NotFound, RangeNotSatisfiable),
}


@router.head(
    "/{job_id}/outputs/{index}",
    operation_id="head_output",
    summary="An output's headers, without the file",
    response_class=Response,
    responses=OUTPUT_RESPONSES,
)
@router.get(
    "/{job_id}/outputs/{index}",
    operation_id="get_output",
    summary="Download an output",
    response_class=Response,
    responses=OUTPUT_RESPONSES,
)
async def get_output(
    request: Request,
    job_id: str,
    index: OutputIndex,
    runtime: RuntimeDep,
    caller: OutputReaderDep,
    expires: Annotated[int | None, Query(ge=0, lt=10**12, description="signed link")] = None,
    sig: Annotated[str | None, Query(max_length=64, description="signed link")] = None,
    range_header: Annotated[str | None, Header(alias="Range", max_length=200)] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=512)] = None,
    if_range: Annotated[str | None, Header(alias="If-Range", max_length=200)] = None,
) -> Response:
    """Stream an archived output, or redirect to PoYo's URL while it is not archived.
    Authenticate with an API key, or open a signed link (`?expires=…&sig=…`) without one."""
    archive = runtime.archive
    job = await queries.get_job(runtime.db, caller=caller, job_id=job_id)
    output = _output(archive, job, index)
    if output["archived_at"] is None or output["sha256"] is None:
        return RedirectResponse(output["provider_url"], status_code=307)
    etag = f'"{output["sha256"]}"'
    key = storage_key(job.id, index)
    if if_none_match and etag in if_none_match:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
    name = download_name(job.id, index, output["content_type"])
    if runtime.settings.archive_s3_redirect:
        presigned = await archive.storage.presigned_url(
            key, expires_in=PRESIGNED_SECONDS, filename=name
        )
        if presigned is not None:
            return RedirectResponse(presigned, status_code=307)
    size = await archive.storage.size(key)
    if size is None or size != output["size_bytes"]:
        raise NotFound(
            f"the archived file of output {index} is missing or damaged in storage "
            "(`poyo-relay archive verify` reports it; `archive backfill` can fetch it again "
            "while PoYo still has it)"
        )
    wanted = None if if_range not in (None, etag) else _range(range_header, size)
    headers = {
        "Content-Type": output["content_type"] or "application/octet-stream",
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": CACHE_CONTROL,
        "Content-Disposition": f'inline; filename="{name}"',
        # The file is PoYo's content, not ours: never run as a page of this origin.
        "Content-Security-Policy": "sandbox",
        "X-Content-Type-Options": "nosniff",
    }
    start, length, status = 0, size, 200
    if wanted is not None:
        start, length, status = wanted.start, wanted.length, 206
        headers["Content-Range"] = wanted.content_range
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    body: AsyncIterator[bytes] = archive.storage.read(key, start, length)
    return StreamingResponse(body, status_code=status, headers=headers)


def _output(archive: ArchiveService, job: JobRecord, index: int) -> JobOutput:
    output = archive.output(job, index)
    if output is None:
        raise NotFound(f"job {job.id} has no output {index}")
    return output


def _range(header: str | None, size: int) -> ByteRange | None:
    try:
        return requested_range(header, size)
    except Unsatisfiable as exc:
        raise RangeNotSatisfiable(str(exc), size=size) from None


@router.post(
    "/{job_id}/outputs/{index}/links",
    status_code=201,
    response_model=OutputLink,
    summary="Create a signed link to an output",
    responses=error_responses(BadRequest, NotFound, UnsupportedMediaType, InvalidRequest),
)
async def create_link(
    job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN)],
    index: OutputIndex,
    runtime: RuntimeDep,
    caller: CallerDep,
    body: LinkCreate | None = None,
) -> Response:
    """A URL that opens this output without an API key until it expires (for a browser)."""
    expires_in = (body or LinkCreate()).expires_in
    longest = runtime.settings.archive_link_max_seconds
    if expires_in > longest:
        raise InvalidRequest(f"expires_in must be at most {longest} seconds")
    job = await queries.get_job(runtime.db, caller=caller, job_id=job_id)
    _output(runtime.archive, job, index)
    expires = int(time.time()) + expires_in
    signature = runtime.output_links.signature(job.id, index, expires)
    url = (
        f"{runtime.settings.public_base_url}/v1/jobs/{job.id}/outputs/{index}"
        f"?expires={expires}&sig={signature}"
    )
    link: OutputLink = {
        "object": "output_link",
        "url": url,
        "expires_at": isoformat_z(datetime.fromtimestamp(expires, UTC)),
    }
    return json_response(link, 201)
