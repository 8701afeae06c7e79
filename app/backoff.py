"""Exponential backoff with jitter, shared by submissions, status polls and webhooks."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# A Retry-After beyond this is taken as this: time arithmetic must not overflow.
MAX_RETRY_AFTER = 86_400.0


@dataclass(frozen=True)
class Backoff:
    base_seconds: float
    max_seconds: float

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt `attempt + 1`: half fixed, half random, never before
        the other side's Retry-After."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** max(attempt - 1, 0))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not a secret
        return float(max(delay, retry_after or 0.0))


def retry_after_seconds(value: str) -> float | None:
    """Seconds to wait, from a Retry-After header's delta-seconds or HTTP-date (RFC 9110),
    within sane bounds; None when it says nothing usable."""
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None  # "inf" or "nan" is no instruction; the backoff decides
    return min(max(0.0, seconds), MAX_RETRY_AFTER)
