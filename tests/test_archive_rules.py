"""The archive's pure rules (app/archive/rules.py, app/archive/links.py): which answers are
accepted as the announced file, what a Range header asks for, signed links."""

from __future__ import annotations

import pytest

from app.archive.links import OutputLinks
from app.archive.rules import (
    ByteRange,
    ContentTypeMismatch,
    Unsatisfiable,
    accepted_content_type,
    download_name,
    requested_range,
)
from app.keyring.models import ServerKey

URL = "https://cdn.example.com/a/out.mp4?sig=abc"


@pytest.mark.parametrize(
    ("announced", "header", "url", "expected"),
    [
        ("video", "video/mp4", URL, "video/mp4"),
        ("video", "Video/MP4; codecs=avc1", URL, "video/mp4"),
        ("video", None, URL, "video/mp4"),  # read from the URL's extension
        ("video", "application/octet-stream", URL, "video/mp4"),
        ("video", "binary/octet-stream", "https://x.example/blob", "application/octet-stream"),
        ("image", "image/png", URL, "image/png"),
        ("audio", "audio/mpeg", URL, "audio/mpeg"),
        ("audio", "video/mp4", URL, "video/mp4"),  # an audio track in an MP4 container
        ("3d", "model/gltf-binary", URL, "model/gltf-binary"),
        ("3d", "application/octet-stream", "https://x.example/m.glb", "model/gltf-binary"),
        ("json", "application/json", URL, "application/json"),
        (None, "application/zip", URL, "application/zip"),
        ("text", "text/html", URL, "text/html"),
    ],
)
def test_accepted_content_types(
    announced: str | None, header: str | None, url: str, expected: str
) -> None:
    assert accepted_content_type(announced, header, url) == expected


@pytest.mark.parametrize(
    ("announced", "header"),
    [
        ("video", "text/html"),  # an error page served with 200
        ("video", "text/html; charset=utf-8"),
        ("image", "application/problem+json"),
        ("video", "image/png"),
        ("image", "video/mp4"),
        ("audio", "image/jpeg"),
        ("3d", "text/html"),
        (None, "application/xhtml+xml"),
    ],
)
def test_refused_content_types(announced: str | None, header: str) -> None:
    with pytest.raises(ContentTypeMismatch):
        accepted_content_type(announced, header, URL)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=100-199", ByteRange(100, 199, 1000)),
        ("bytes=0-0", ByteRange(0, 0, 1000)),
        ("bytes = 10 - 20", ByteRange(10, 20, 1000)),
        ("bytes=900-", ByteRange(900, 999, 1000)),
        ("bytes=900-5000", ByteRange(900, 999, 1000)),
        ("bytes=-100", ByteRange(900, 999, 1000)),
        ("bytes=-5000", ByteRange(0, 999, 1000)),
        ("bytes=0-1,5-9", None),  # several ranges: the whole file
        ("items=0-10", None),
        ("bytes=20-10", None),
        ("bytes=-", None),
        ("bytes=abc", None),
        ("bytes=" + "1" * 300 + "-", None),
    ],
)
def test_requested_ranges(header: str | None, expected: ByteRange | None) -> None:
    assert requested_range(header, 1000) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=1000-", 1000), ("bytes=-0", 1000), ("bytes=-5", 0)]
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        requested_range(header, size)


def test_byte_range_headers() -> None:
    wanted = ByteRange(100, 199, 1000)
    assert (wanted.length, wanted.content_range) == (100, "bytes 100-199/1000")


def test_download_names() -> None:
    assert download_name("job_x", 0, "video/mp4") == "job_x-0.mp4"
    assert download_name("job_x", 2, None) == "job_x-2"


def test_signed_links_name_one_output_until_they_expire() -> None:
    links = OutputLinks(ServerKey(b"k" * 32))
    signature = links.signature("job_a", 0, 2000)
    assert links.verify("job_a", 0, 2000, signature, now=1999)
    assert not links.verify("job_a", 0, 2000, signature, now=2000)  # expired
    assert not links.verify("job_a", 1, 2000, signature, now=1000)  # another output
    assert not links.verify("job_b", 0, 2000, signature, now=1000)  # another job
    assert not links.verify("job_a", 0, 3000, signature, now=1000)  # a later expiry
    assert not links.verify("job_a", 0, 2000, signature.upper(), now=1000)
    assert not links.verify("job_a", 0, 2000, "0" * 65, now=1000)
    other_key = OutputLinks(ServerKey(b"o" * 32))
    assert not other_key.verify("job_a", 0, 2000, signature, now=1000)
