"""`POST /v1/estimates`: what a job would cost, without creating it."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal, NotRequired

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from app.billing.budgets import Limits
from app.billing.service import (
    MAX_RANGE,
    budget_status,
    credits,
    default_range,
    millicredits,
    set_budget,
    usage,
)
from app.errors import (
    BadRequest,
    ErrorItem,
    Forbidden,
    InvalidRequest,
    NotFound,
    UnsupportedMediaType,
)
from app.jobs.schemas import JobCreate
from app.timeutil import utcnow
from app.web.deps import CallerDep, RuntimeDep
from app.web.errors import error_responses
from app.web.responses import json_response

router = APIRouter(prefix="/v1/estimates", tags=["costs"])
GroupBy = Literal["day", "model"]


class EstimateOut(TypedDict):
    """In PoYo credits (1 credit ≈ US$0.005); null, with `reason`, when the model's billing
    rule cannot tell before the job runs (billed by tokens, by input length, by what it
    makes)."""

    object: Literal["estimate"]
    model: str
    catalog_version: str
    credits: float | None
    currency_estimate_usd: float | None
    reason: str | None


@router.post(
    "",
    response_model=EstimateOut,
    summary="Estimate what a job would cost",
    responses=error_responses(BadRequest, UnsupportedMediaType, InvalidRequest),
)
async def create_estimate(body: JobCreate, runtime: RuntimeDep, _caller: CallerDep) -> Response:
    """The body of `POST /v1/jobs`, checked the same way; nothing is stored or sent."""
    version, cost = await runtime.jobs.estimate(body)
    out: EstimateOut = {
        "object": "estimate",
        "model": body.model,
        "catalog_version": version,
        "credits": cost.credits,
        "currency_estimate_usd": cost.usd,
        "reason": cost.reason,
    }
    return json_response(out)


# ---- spend and budgets -----------------------------------------------------------------------

usage_router = APIRouter(tags=["costs"])


class UsageRow(TypedDict):
    """One day's or one model's jobs and credits (with `owner` when an admin sees all)."""

    owner: NotRequired[str]
    day: NotRequired[str]
    model: NotRequired[str]
    jobs: int
    unestimated_jobs: int
    credits_estimated: float
    credits_charged: float
    credits_spent: float


class UsageOut(TypedDict):
    """`credits_spent` is what budgets count: each job's estimate while it runs, then what
    PoYo charged (its estimate when PoYo did not say; nothing when it failed)."""

    object: Literal["usage"]
    group_by: GroupBy
    from_: Annotated[date, Field(alias="from")]
    to: date
    data: list[UsageRow]


class BudgetOut(TypedDict):
    object: Literal["budget"]
    owner: str
    daily_credits: float | None
    monthly_credits: float | None
    spent_today_credits: float
    spent_this_month_credits: float


class BudgetIn(BaseModel):
    """Credit budgets of an owner; null removes one (both null: no budget)."""

    model_config = ConfigDict(extra="forbid")

    daily_credits: float | None = Field(default=None, gt=0, le=1e12)
    monthly_credits: float | None = Field(default=None, gt=0, le=1e12)


OwnerPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


@usage_router.get(
    "/v1/usage",
    response_model=UsageOut,
    summary="Credits spent per day or model",
    responses=error_responses(InvalidRequest),
)
async def get_usage(
    runtime: RuntimeDep,
    caller: CallerDep,
    group_by: GroupBy = "day",
    first: Annotated[date | None, Query(alias="from", description="inclusive (UTC)")] = None,
    last: Annotated[date | None, Query(alias="to", description="inclusive (UTC)")] = None,
    owner: Annotated[
        str | None, Query(max_length=64, description="admins: one owner's (default: all, each)")
    ] = None,
) -> Response:
    """The caller's spend from `from` to `to` (default: this month so far). An admin key
    sees every owner's, per owner, or one owner's with `owner`."""
    start, end = default_range(utcnow().date())
    first, last = first or start, last or end
    if last < first or last - first > MAX_RANGE:
        raise _bad_range()
    if caller.is_admin:
        scope, by_owner = owner, owner is None
    else:
        scope, by_owner = caller.owner, False
    sums = await usage(
        runtime.db, owner=scope, by_owner=by_owner, group_by=group_by, first=first, last=last
    )
    rows: list[UsageRow] = []
    for each in sums:
        row: UsageRow = {
            "jobs": each.jobs,
            "unestimated_jobs": each.unestimated_jobs,
            "credits_estimated": each.estimated / 1000,
            "credits_charged": each.charged / 1000,
            "credits_spent": each.spent / 1000,
        }
        row[group_by] = each.key
        if each.owner is not None:
            row["owner"] = each.owner
        rows.append(row)
    body = {
        "object": "usage",
        "group_by": group_by,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "data": rows,
    }
    return json_response(body)


def _bad_range() -> InvalidRequest:
    detail = ErrorItem(
        loc=["query", "to"], msg="must be on or after `from`, at most two years", type="value_error"
    )
    return InvalidRequest("invalid date range", details=[detail])


@usage_router.get(
    "/v1/budgets/{owner}",
    response_model=BudgetOut,
    summary="An owner's budgets and spend",
    responses=error_responses(NotFound),
)
async def get_budget(owner: OwnerPath, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """Your own (any owner's with an admin key): the budgets, and what is spent today and
    this month (UTC), reservations of unfinished jobs included."""
    if not caller.is_admin and owner != caller.owner:
        raise NotFound(f"no budget for owner {owner!r}")
    return json_response(await _budget_out(runtime, owner))


@usage_router.put(
    "/v1/budgets/{owner}",
    response_model=BudgetOut,
    summary="Set an owner's budgets (admin)",
    responses=error_responses(BadRequest, Forbidden, UnsupportedMediaType, InvalidRequest),
)
async def put_budget(
    owner: OwnerPath, body: BudgetIn, runtime: RuntimeDep, caller: CallerDep
) -> Response:
    """Daily and/or monthly credit budgets for the owner (an API key's name); null removes
    one. Jobs already admitted are not affected."""
    if not caller.is_admin:
        raise Forbidden("setting budgets needs an admin key")
    limits = Limits(
        daily=millicredits(body.daily_credits), monthly=millicredits(body.monthly_credits)
    )
    await set_budget(runtime.db, owner, limits)
    return json_response(await _budget_out(runtime, owner))


async def _budget_out(runtime: RuntimeDep, owner: str) -> BudgetOut:
    limits, today, month = await budget_status(runtime.db, owner)
    return {
        "object": "budget",
        "owner": owner,
        "daily_credits": credits(limits.daily) if limits else None,
        "monthly_credits": credits(limits.monthly) if limits else None,
        "spent_today_credits": today / 1000,
        "spent_this_month_credits": month / 1000,
    }
