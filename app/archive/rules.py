"""The archive's pure rules, without I/O: which answers of a file server are accepted as
the file PoYo announced, what a `Range` header asks for, where an output is stored, and
what an archived output looks like."""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from app.jobs.models import JobOutput
from app.timeutil import isoformat_z

GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", ""})
# PoYo's `file_type`s whose media type must be of the same family.
MEDIA_FAMILIES = frozenset({"image", "video", "audio"})
# What an error page is: never accepted for a file announced as anything else.
PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/problem+json"})
MAX_RANGE_HEADER_CHARS = 200


class ContentTypeMismatch(ValueError):
    """The file server answered something other than the file PoYo announced."""


def media_type(header: str | None) -> str:
    """`type/subtype` of a Content-Type header, lower case, without parameters."""
    return (header or "").split(";", 1)[0].strip().lower()


def accepted_content_type(announced: str | None, header: str | None, url: str) -> str:
    """The content type to store for a file PoYo announced as `announced` (its open
    `file_type`), served with Content-Type `header` from `url`. A generic or missing
    header is read from the URL's extension; an error page, or another media family than
    the one announced (HTML for a video, an image for audio), is refused."""
    given = media_type(header)
    if given in GENERIC_TYPES:
        guessed, _ = mimetypes.guess_type(urlsplit(url).path, strict=False)
        given = guessed or "application/octet-stream"
    kind = (announced or "").lower()
    if given in PAGE_TYPES and kind not in {"html", "text"}:
        raise ContentTypeMismatch(f"{given!r} served for a file announced as {announced!r}")
    family = given.split("/", 1)[0]
    unknown = given == "application/octet-stream"  # nothing said, nothing to contradict
    if kind in MEDIA_FAMILIES and family != kind and not unknown and not _mp4_audio(kind, given):
        raise ContentTypeMismatch(f"{given!r} served for a file announced as {announced!r}")
    return given


def _mp4_audio(kind: str, given: str) -> bool:
    # An audio track in an MP4 container is often served as video/mp4.
    return kind == "audio" and given == "video/mp4"


@dataclass(frozen=True)
class ByteRange:
    """Bytes `start` to `end`, both included, of a file of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


class Unsatisfiable(ValueError):
    """A range entirely past the end of the file (HTTP 416)."""


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def requested_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range a `Range` header asks for (RFC 9110 §14), or None to send the
    whole file: no header, another unit, several ranges, or a malformed one (a server may
    ignore any of those). Raises Unsatisfiable for a range starting past the end."""
    if header is None or len(header) > MAX_RANGE_HEADER_CHARS:
        return None
    match = _RANGE.match(header.replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise Unsatisfiable("an empty suffix range")
        if size == 0:
            raise Unsatisfiable("the file is empty")
        return ByteRange(max(0, size - suffix), size - 1, size)
    start = int(first)
    if last and int(last) < start:
        return None  # malformed: ignored
    if start >= size:
        raise Unsatisfiable(f"the file has {size} bytes")
    end = min(int(last), size - 1) if last else size - 1
    return ByteRange(start, end, size)


def storage_key(job_id: str, index: int) -> str:
    """Where output `index` of a job is stored (under the backend's root or prefix)."""
    return f"{job_id}/{index}"


def job_prefix(job_id: str) -> str:
    return f"{job_id}/"


def output_path(job_id: str, index: int) -> str:
    """The path of poyo-relay's own URL of an output."""
    return f"/v1/jobs/{job_id}/outputs/{index}"


@dataclass(frozen=True)
class StoredFile:
    """A file as downloaded and stored: what it is, and what was cheap to read of it."""

    content_type: str
    size_bytes: int
    sha256: str
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None


def archived_output(output: JobOutput, url: str, stored: StoredFile, now: datetime) -> JobOutput:
    """`output` once its file is kept: served from `url`, PoYo's kept in provider_url."""
    return JobOutput(
        url=url,
        type=output["type"],
        provider_url=output["provider_url"],
        content_type=stored.content_type,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        archived_at=isoformat_z(now),
        width=stored.width,
        height=stored.height,
        duration_seconds=stored.duration_seconds,
    )


def download_name(job_id: str, index: int, content_type: str | None) -> str:
    """A file name for `Content-Disposition`: the job, the index, the type's extension."""
    extension = mimetypes.guess_extension(content_type or "", strict=False) or ""
    return f"{job_id}-{index}{extension}"
