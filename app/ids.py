"""Identifiers.

Job ids are `job_` + a lower-case ULID whose time part is the job's `created_at`, so
ordering by id is ordering by creation time and a time range is an id range.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ulid import ULID

JOB_PREFIX = "job_"
KEY_PREFIX = "key_"


def new_job_id(now: datetime) -> str:
    """A job id whose embedded timestamp is `now` truncated to the millisecond."""
    return JOB_PREFIX + str(ULID.from_datetime(now)).lower()


def new_key_id() -> str:
    return KEY_PREFIX + str(ULID()).lower()


def job_id_time(job_id: str) -> datetime:
    return ULID.from_str(job_id.removeprefix(JOB_PREFIX).upper()).datetime.astimezone(UTC)


def first_job_id_at(moment: datetime) -> str:
    """The smallest job id that can have been created at `moment`'s millisecond."""
    millis = int(moment.timestamp() * 1000)
    millis = min(max(millis, 0), 2**48 - 1)
    return JOB_PREFIX + str(ULID(millis.to_bytes(6, "big") + b"\x00" * 10)).lower()


def new_endpoint_id() -> str:
    return "ep_" + str(ULID()).lower()


def new_message_id() -> str:
    return "msg_" + str(ULID()).lower()
