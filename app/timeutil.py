"""Time helpers: one clock, one wire format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    return datetime.now(UTC)


def assume_utc(moment: datetime | None) -> datetime | None:
    """A time without a zone (as typed by a person) read as UTC; others as they are."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


@overload
def isoformat_z(value: datetime) -> str: ...
@overload
def isoformat_z(value: None) -> None: ...
@overload
def isoformat_z(value: datetime | None) -> str | None: ...
def isoformat_z(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z`, millisecond precision, as clients expect."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat: four-digit years, and about twice as fast as strftime on the list path.
    return value.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"
