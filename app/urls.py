"""What counts as a URL we hand on or fetch: http(s), with a host, no spaces or control
characters, at most MAX_URL_CHARS long. One check for job inputs, webhooks and outputs."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

MAX_URL_CHARS = 2048
# What a provider output URL may be: longer (signed CDN links), otherwise the same.
MAX_OUTPUT_URL_CHARS = 4096


# Neither spaces (Unicode's too) nor control characters, spelled out so that Python's `re`
# and a JSON Schema validator's ECMA-262 regex read the same set.
_NOT_URL_CHARS = r"\x00-\x20\x7f-\xa0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff"
# An http(s) URL with a host (what comes before the first / ? #): published in the models'
# input schemas as the `pattern` of every `format: uri` field.
HTTP_URL_PATTERN = rf"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#{_NOT_URL_CHARS}]+[^{_NOT_URL_CHARS}]*$"
_HTTP_URL = re.compile(HTTP_URL_PATTERN)


def is_http_url(value: str, max_chars: int = MAX_URL_CHARS) -> bool:
    return len(value) <= max_chars and _HTTP_URL.fullmatch(value) is not None


def _http_url(value: str) -> str:
    if not is_http_url(value):
        raise ValueError(
            f"must be an http(s) URL with a host, no spaces, at most {MAX_URL_CHARS} characters"
        )
    return value


HttpUrl = Annotated[
    str,
    AfterValidator(_http_url),
    Field(json_schema_extra={"format": "uri", "maxLength": MAX_URL_CHARS}),
]
