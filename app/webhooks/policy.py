"""What becomes of a delivery after an attempt: pure rules, no I/O.

Svix's schedule: the first attempt at once, then retries after the delays of
WEBHOOK_RETRY_SCHEDULE, each with ±20 % jitter so that a receiver coming back is not hit by
every message at the same second. A 429 or 503 with `Retry-After` waits that long instead
(at least as long as the schedule says). 410 Gone disables the endpoint; so does failing
every attempt for WEBHOOK_DISABLE_AFTER_SECONDS. A redelivery someone asked for is tried once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.webhooks.models import DeliveryState

JITTER = 0.2
MAX_RESPONSE_CHARS = 1024
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Answer:
    """How one attempt went: the receiver's status, or why there was none."""

    http_status: int | None
    error: str | None = None
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300


@dataclass(frozen=True)
class Rules:
    retry_delays: Sequence[float]
    disable_after: timedelta


@dataclass(frozen=True)
class Outcome:
    state: DeliveryState
    next_attempt_at: datetime | None
    # The endpoint's run of failures began then (None: it is healthy).
    failing_since: datetime | None
    # Set when the endpoint is to be disabled, saying why.
    disable_reason: str | None = None


def retry_delay(
    rules: Rules, attempts: int, answer: Answer, rng: random.Random | None = None
) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones; None: give up."""
    if attempts > len(rules.retry_delays):
        return None
    planned = rules.retry_delays[attempts - 1]
    jittered = planned * (1 + (rng or random).uniform(-JITTER, JITTER))
    if answer.retry_after is not None and answer.http_status in RETRY_AFTER_STATUSES:
        return max(jittered, answer.retry_after)
    return jittered


def judge(
    rules: Rules,
    *,
    answer: Answer,
    attempts: int,
    manual: bool,
    failing_since: datetime | None,
    now: datetime,
    rng: random.Random | None = None,
) -> Outcome:
    """The delivery's next state after its `attempts`-th attempt was answered `answer`, and
    what it says of the endpoint's health."""
    if answer.delivered:
        return Outcome(DeliveryState.SUCCEEDED, None, None)
    failing_since = failing_since or now
    if answer.http_status == 410:
        return Outcome(DeliveryState.FAILED, None, failing_since, "the endpoint answered 410 Gone")
    if now - failing_since >= rules.disable_after:
        reason = f"every attempt failed since {failing_since.isoformat(timespec='seconds')}"
        return Outcome(DeliveryState.FAILED, None, failing_since, reason)
    delay = None if manual else retry_delay(rules, attempts, answer, rng)
    if delay is None:
        return Outcome(DeliveryState.FAILED, None, failing_since)
    return Outcome(DeliveryState.PENDING, now + timedelta(seconds=delay), failing_since)


def excerpt(body: bytes) -> str:
    """The first 1 KiB of an answer, as text (undecodable bytes replaced)."""
    return body[:MAX_RESPONSE_CHARS].decode("utf-8", errors="replace")
