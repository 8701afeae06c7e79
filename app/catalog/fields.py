"""Field types shared by model input schemas, with their size limits."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

MAX_PROMPT_CHARS = 4000
MAX_URL_CHARS = 2048
MAX_SEED = 2_147_483_647


def _http_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http(s) URL")
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not host or any(ch.isspace() for ch in value):
        raise ValueError("must be an http(s) URL with a host and no spaces")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


HttpUrl = Annotated[
    str,
    StringConstraints(min_length=8, max_length=MAX_URL_CHARS),
    AfterValidator(_http_url),
    Field(
        json_schema_extra={
            "format": "uri",
            "pattern": "^[hH][tT][tT][pP][sS]?://[^\\s/?#]+[^\\s]*$",
        }
    ),
]
Prompt = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS),
    AfterValidator(_not_blank),
    Field(json_schema_extra={"pattern": "\\S"}),
]
NegativePrompt = Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class ModelInput(BaseModel):
    """Exact validation: unknown fields and type coercions are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
