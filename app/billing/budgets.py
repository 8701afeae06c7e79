"""Budget decisions, pure: what a job reserves, what it finally spends, and whether a new
one fits. Amounts are in 1/1000 credit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Period(StrEnum):
    DAILY = "daily"
    MONTHLY = "monthly"


@dataclass(frozen=True)
class Limits:
    daily: int | None
    monthly: int | None


@dataclass(frozen=True)
class Exceeded:
    """Why a job is refused: the budget it would overrun, what is spent of it (reserved
    included) and what the job is estimated at (None: not estimable, and nothing is left)."""

    period: Period
    limit: int
    spent: int
    estimate: int | None


def month_start(day: date) -> date:
    return day.replace(day=1)


def overrun(
    limits: Limits, *, spent_today: int, spent_month: int, estimate: int | None
) -> Exceeded | None:
    """The first budget this job would overrun, or None. A job whose cost cannot be
    estimated reserves nothing, so it is let through only while the budget has room left."""
    for period, limit, spent in (
        (Period.DAILY, limits.daily, spent_today),
        (Period.MONTHLY, limits.monthly, spent_month),
    ):
        if limit is None:
            continue
        if estimate is None and spent >= limit:
            return Exceeded(period, limit, spent, None)
        if estimate is not None and spent + estimate > limit:
            return Exceeded(period, limit, spent, estimate)
    return None


def final_spend(*, estimate: int | None, charged: int | None, failed: bool) -> int:
    """What an ended job spent: nothing if it failed (PoYo does not charge failures), what
    PoYo charged when it said, else its estimate."""
    if failed:
        return 0
    if charged is not None:
        return charged
    return estimate or 0
