"""PoYo's wire format (docs/API.md, "The provider"): lenient where it may grow, strict where
it matters."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)


class ProviderStatus(StrEnum):
    NOT_STARTED = "not_started"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


def _storable(value: str) -> str:
    """PostgreSQL text and JSONB cannot hold U+0000: keep the text, replace the NUL."""
    return value.replace("\x00", "\ufffd")


def _output_url(value: str) -> str:
    """An output is handed to clients as a link: only a plain http(s) URL will do."""
    scheme, sep, rest = value.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not sep or scheme.lower() not in ("http", "https") or not host:
        raise ValueError("file_url must be an http(s) URL with a host")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("file_url must not contain spaces or control characters")
    return value


MAX_CREDITS = 1e9


def _credits(value: Any) -> float | None:
    """A charge PoYo reports, if it is a plausible one: an unreadable amount is no reason
    to refuse the status it came with."""
    if isinstance(value, bool):
        return None
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return None
    return amount if 0 <= amount <= MAX_CREDITS else None  # NaN fails both


# Task ids go into URLs and a unique column: no spaces or control characters.
TaskId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s\x00-\x1f\x7f]+$")]
Text = Annotated[str, AfterValidator(_storable)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ProviderFile(_Lenient):
    file_url: Annotated[str, AfterValidator(_output_url)] = Field(max_length=4096)
    # As PoYo gives it (video, image, audio, media, 3d, …): an open set.
    file_type: Text | None = Field(default=None, max_length=32)


class SubmittedTask(_Lenient):
    task_id: TaskId
    status: ProviderStatus = ProviderStatus.NOT_STARTED
    created_time: str | None = None


class TaskStatus(_Lenient):
    """A task as the status endpoint (or a callback) describes it."""

    task_id: TaskId
    status: ProviderStatus
    progress: int | None = Field(default=None, ge=0, le=100)
    files: list[ProviderFile] | None = Field(default=None, max_length=32)
    created_time: str | None = None
    error_message: Text | None = Field(default=None, max_length=4096)
    # What the task cost, when PoYo says (some tasks' status carries it).
    credits_amount: Annotated[float | None, BeforeValidator(_credits)] = None


class CatalogPage(_Lenient):
    """A page of `GET /v1/catalog/models`."""

    schema_version: str
    items: list[dict[str, Any]] = Field(max_length=1000)
    next_cursor: str | None = None
    has_more: bool = False


def _balance(value: Any) -> float | None:
    """A balance as PoYo may give it: a number or a numeric string (negative when the
    account is overdrawn); None when it is neither, or implausible."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = float(value)
    except ValueError:
        return None
    return amount if -MAX_CREDITS <= amount <= MAX_CREDITS else None  # NaN fails both


Balance = Annotated[float | None, BeforeValidator(_balance)]


class AccountBalance(_Lenient):
    """`GET /api/user/balance`. PoYo documents the endpoint, not its body: the amount is
    taken from the first of these fields that holds one; an answer with none is refused."""

    balance: Balance = None
    credits: Balance = None
    credits_balance: Balance = None
    remaining_credits: Balance = None

    @model_validator(mode="after")
    def _has_an_amount(self) -> AccountBalance:
        if self.amount is None:
            raise ValueError("no credits balance in the answer")
        return self

    @property
    def amount(self) -> float | None:
        """The balance in credits."""
        for value in (self.balance, self.credits, self.credits_balance, self.remaining_credits):
            if value is not None:
                return value
        return None


def unwrap(body: Any) -> Any:
    """Accept both the wrapped (`{"code", "data": {...}}`) and the flat form."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        return body["data"]
    return body
