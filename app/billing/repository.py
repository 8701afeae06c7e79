"""Spend and budgets in SQL: the usage row of an owner's day and model is written in the
transaction that creates or ends one of its jobs; a budget is read (and on PostgreSQL
locked) in the transaction that admits a job, so concurrent requests queue on it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
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
) -> None:
    """An ended job's reservation becomes what it spent; what PoYo charged is added."""
    if not spend_change and not charged:
        return
    await conn.execute(
        update(UsageDay)
        .where(_USAGE.owner == owner, _USAGE.day == day, _USAGE.model == model)
        .values(
            spent_millicredits=_USAGE.spent_millicredits + spend_change,
            charged_millicredits=_USAGE.charged_millicredits + charged,
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


async def spent_between(conn: AsyncConnection, owner: str, first: date, last: date) -> int:
    """What `owner` spent (reserved included) on the days `first`..`last`."""
    query = select(func.coalesce(func.sum(_USAGE.spent_millicredits), 0)).where(
        _USAGE.owner == owner, _USAGE.day >= first, _USAGE.day <= last
    )
    return int((await conn.execute(query)).scalar_one())


GROUPS = {"day": _USAGE.day, "model": _USAGE.model}


@dataclass(frozen=True)
class UsageSum:
    """One group's sums; `owner` is set when grouped by owner, `key` is the day (ISO) or
    the model."""

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
            func.sum(_USAGE.jobs).label("jobs"),
            func.sum(_USAGE.unestimated_jobs).label("unestimated_jobs"),
            func.sum(_USAGE.estimated_millicredits).label("estimated"),
            func.sum(_USAGE.charged_millicredits).label("charged"),
            func.sum(_USAGE.spent_millicredits).label("spent"),
        )
        .where(_USAGE.day >= first, _USAGE.day <= last)
        .group_by(*keys)
        .order_by(*keys)
    )
    if owner is not None:
        query = query.where(_USAGE.owner == owner)
    sums = []
    for row in await conn.execute(query):
        values = tuple(row)
        who, rest = (values[0], values[1:]) if by_owner else (None, values)
        key = rest[0].isoformat() if isinstance(rest[0], date) else str(rest[0])
        sums.append(UsageSum(who, key, *(int(value or 0) for value in rest[1:])))
    return sums


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
