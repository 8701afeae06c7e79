"""Spend and budgets in SQL: the usage row of an owner's day and model is written in the
transaction that creates or ends one of its jobs; a budget is read (and on PostgreSQL
locked) in the transaction that admits a job, so concurrent requests queue on it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    bindparam,
    case,
    cast,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from app.billing.budgets import Limits
from app.billing.models import Budget, UsageDay
from app.db import upsert

_USAGE = UsageDay.__table__.c
_BUDGETS = Budget.__table__.c


async def record_created(
    conn: AsyncConnection, *, owner: str, day: date, model: str, estimate: int | None
) -> None:
    """Count a new job and reserve its estimate."""
    reserved = estimate or 0
    unestimated = 1 if estimate is None else 0
    statement = upsert(conn, UsageDay).values(
        owner=owner,
        day=day,
        model=model,
        jobs=1,
        unestimated_jobs=unestimated,
        estimated_millicredits=reserved,
        charged_millicredits=0,
        spent_millicredits=reserved,
        succeeded_jobs=0,
        failed_jobs=0,
    )
    excluded = statement.excluded
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["owner", "day", "model"],
            set_={
                "jobs": _USAGE.jobs + 1,
                "unestimated_jobs": _USAGE.unestimated_jobs + excluded.unestimated_jobs,
                "estimated_millicredits": _USAGE.estimated_millicredits
                + excluded.estimated_millicredits,
                "spent_millicredits": _USAGE.spent_millicredits + excluded.spent_millicredits,
            },
        )
    )


async def record_ended(
    conn: AsyncConnection,
    *,
    owner: str,
    day: date,
    model: str,
    spend_change: int,
    charged: int,
    succeeded: bool,
) -> None:
    """An ended job's reservation becomes what it spent; what PoYo charged is added; the
    job is counted by its outcome."""
    outcome = _USAGE.succeeded_jobs if succeeded else _USAGE.failed_jobs
    await conn.execute(
        update(UsageDay)
        .where(_USAGE.owner == owner, _USAGE.day == day, _USAGE.model == model)
        .values(
            {
                _USAGE.spent_millicredits: _USAGE.spent_millicredits + spend_change,
                _USAGE.charged_millicredits: _USAGE.charged_millicredits + charged,
                outcome: outcome + 1,
            }
        )
    )


async def limits_for_admission(conn: AsyncConnection, owner: str) -> Limits | None:
    """The owner's budgets, locked until the transaction ends on PostgreSQL (SQLite's one
    writer queues admissions anyway); None when the owner has none."""
    query = select(_BUDGETS.daily_millicredits, _BUDGETS.monthly_millicredits).where(
        _BUDGETS.owner == owner
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else Limits(daily=row[0], monthly=row[1])


# Built once: what admission reads for every job of an owner with a budget.
_SPENT_DAY_AND_MONTH = select(
    cast(
        func.coalesce(
            func.sum(case((_USAGE.day == bindparam("day"), _USAGE.spent_millicredits), else_=0)),
            0,
        ),
        BigInteger,
    ),
    cast(func.coalesce(func.sum(_USAGE.spent_millicredits), 0), BigInteger),
).where(
    _USAGE.owner == bindparam("owner"),
    _USAGE.day >= bindparam("month_start"),
    _USAGE.day <= bindparam("day"),
)


async def spent_day_and_month(
    conn: AsyncConnection, owner: str, day: date, month_start: date
) -> tuple[int, int]:
    """What `owner` spent on `day` and in its month up to it, in one statement (run after
    the budget row is locked: it then sees every admission that went before)."""
    params = {"owner": owner, "day": day, "month_start": month_start}
    today, month = (await conn.execute(_SPENT_DAY_AND_MONTH, params)).one()
    return int(today), int(month)


# The day as ISO text, and integer sums, straight from the database.
GROUPS: dict[str, ColumnElement[str]] = {
    "day": cast(_USAGE.day, String(10)),
    "model": _USAGE.model,
}


def _total(column: Any, name: str) -> Any:
    return cast(func.sum(column), BigInteger).label(name)


class UsageSum(NamedTuple):
    """One group's sums; `owner` is set when grouped by owner, `key` is the day (ISO) or
    the model. (A tuple: an admin's answer has a row per owner and day.)"""

    owner: str | None
    key: str
    jobs: int
    unestimated_jobs: int
    estimated: int
    charged: int
    spent: int


async def usage(
    conn: AsyncConnection,
    *,
    owner: str | None,
    by_owner: bool,
    group_by: str,
    first: date,
    last: date,
) -> list[UsageSum]:
    """Sums per day or model (and per owner when `by_owner`), in that order."""
    keys: list[ColumnElement[Any]] = [GROUPS[group_by]]
    if by_owner:
        keys.insert(0, _USAGE.owner)
    query = (
        select(
            *keys,
            _total(_USAGE.jobs, "jobs"),
            _total(_USAGE.unestimated_jobs, "unestimated_jobs"),
            _total(_USAGE.estimated_millicredits, "estimated"),
            _total(_USAGE.charged_millicredits, "charged"),
            _total(_USAGE.spent_millicredits, "spent"),
        )
        .where(_USAGE.day >= first, _USAGE.day <= last)
        .group_by(*keys)
        .order_by(*keys)
    )
    if owner is not None:
        query = query.where(_USAGE.owner == owner)
    result = await conn.execute(query)
    if by_owner:
        return [UsageSum._make(row) for row in result]
    return [UsageSum._make((None, *row)) for row in result]


@dataclass(frozen=True)
class OwnerBudget:
    owner: str
    limits: Limits
    updated_at: datetime


_BUDGET_FIELDS = (
    _BUDGETS.owner,
    _BUDGETS.daily_millicredits,
    _BUDGETS.monthly_millicredits,
    _BUDGETS.updated_at,
)


def _owner_budget(row: Any) -> OwnerBudget:
    return OwnerBudget(row[0], Limits(daily=row[1], monthly=row[2]), row[3])


async def budget(conn: AsyncConnection, owner: str) -> OwnerBudget | None:
    row = (await conn.execute(select(*_BUDGET_FIELDS).where(_BUDGETS.owner == owner))).first()
    return None if row is None else _owner_budget(row)


async def set_budget(conn: AsyncConnection, *, owner: str, limits: Limits, now: datetime) -> None:
    """Set (or, with both limits None, remove) the owner's budgets."""
    if limits.daily is None and limits.monthly is None:
        await conn.execute(delete(Budget).where(_BUDGETS.owner == owner))
        return
    values = {
        "daily_millicredits": limits.daily,
        "monthly_millicredits": limits.monthly,
        "updated_at": now,
    }
    statement = upsert(conn, Budget).values(owner=owner, **values)
    await conn.execute(statement.on_conflict_do_update(index_elements=["owner"], set_=values))


async def budgets(conn: AsyncConnection) -> list[OwnerBudget]:
    result = await conn.execute(select(*_BUDGET_FIELDS).order_by(_BUDGETS.owner))
    return [_owner_budget(row) for row in result]
