"""The wire format of every timestamp: RFC 3339, UTC, `Z`, milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.timeutil import isoformat_z


@pytest.mark.parametrize(
    ("moment", "wire"),
    [
        (datetime(2026, 11, 26, 4, 16, 15, 578912, tzinfo=UTC), "2026-11-26T04:16:15.578Z"),
        # Another offset is converted, not relabelled.
        (
            datetime(2026, 1, 1, 5, 0, 0, 999999, tzinfo=timezone(timedelta(hours=3))),
            "2026-01-01T02:00:00.999Z",
        ),
        (
            datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=-5))),
            "2026-01-01T05:30:00.000Z",
        ),
        # RFC 3339 wants four-digit years.
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000Z"),
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "9999-12-31T23:59:59.999Z"),
    ],
)
def test_timestamps_are_utc_with_milliseconds(moment: datetime, wire: str) -> None:
    assert isoformat_z(moment) == wire


def test_a_missing_timestamp_stays_null() -> None:
    assert isoformat_z(None) is None
