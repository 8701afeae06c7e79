"""Budgets and spend: admitting a job within its owner's budgets (inside the transaction
that stores it), the spend per day or model, and setting budgets."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from app.billing import repository as repo
from app.billing.budgets import Exceeded, Limits, Period, month_start, overrun
from app.db import Database
from app.errors import BudgetExceeded, BudgetInfo
from app.timeutil import utcnow


def credits(millicredits: int | None) -> float | None:
    return None if millicredits is None else millicredits / 1000


def millicredits(credits: float | None) -> int | None:
    return None if credits is None else round(credits * 1000)


async def admit(
    conn: AsyncConnection, *, owner: str, model: str, day: date, estimate: int | None
) -> None:
    """Count the job and reserve its estimate, unless that would take the owner past a
    budget of `day` (or of its month): then BudgetExceeded, and the caller's transaction
    is rolled back. On PostgreSQL the owner's budget row stays locked until that
    transaction ends, so concurrent admissions (on any replica) are judged one by one."""
    limits = await repo.limits_for_admission(conn, owner)
    if limits is not None:
        today, month = await repo.spent_day_and_month(conn, owner, day, month_start(day))
        exceeded = overrun(limits, spent_today=today, spent_month=month, estimate=estimate)
        if exceeded is not None:
            raise _refusal(exceeded)
    await repo.record_created(conn, owner=owner, day=day, model=model, estimate=estimate)


def _refusal(exceeded: Exceeded) -> BudgetExceeded:
    limit, spent = exceeded.limit / 1000, exceeded.spent / 1000
    span = "today" if exceeded.period is Period.DAILY else "this month"
    if exceeded.estimate is None:
        job = "this job (its cost cannot be estimated beforehand)"
    else:
        job = f"this job ({exceeded.estimate / 1000:g} credits)"
    message = (
        f"{job} would exceed the {exceeded.period} budget of {limit:g} credits "
        f"({spent:g} spent {span}, reservations of unfinished jobs included)"
    )
    info = BudgetInfo(
        period=exceeded.period.value,
        limit_credits=limit,
        spent_credits=spent,
        estimate_credits=credits(exceeded.estimate),
    )
    return BudgetExceeded(message, budget=info)


async def usage(
    db: Database,
    *,
    owner: str | None,
    by_owner: bool,
    group_by: str,
    first: date,
    last: date,
) -> list[repo.UsageSum]:
    async with db.read_connection() as conn:
        return await repo.usage(
            conn, owner=owner, by_owner=by_owner, group_by=group_by, first=first, last=last
        )


async def budget_status(db: Database, owner: str) -> tuple[Limits | None, int, int]:
    """The owner's budgets (None: none) and what it spent today and this month (UTC)."""
    today = utcnow().date()
    async with db.read_connection() as conn:
        found = await repo.budget(conn, owner)
        spent_today, spent_month = await repo.spent_day_and_month(
            conn, owner, today, month_start(today)
        )
    return (found.limits if found else None), spent_today, spent_month


async def set_budget(db: Database, owner: str, limits: Limits) -> None:
    async with db.write() as conn:
        await repo.set_budget(conn, owner=owner, limits=limits, now=utcnow())


def default_range(today: date) -> tuple[date, date]:
    """This month so far."""
    return month_start(today), today


MAX_RANGE = timedelta(days=366 * 2)
