"""The dashboard's overview: jobs per outcome per day and credits per day (from the usage
table, small whatever the number of jobs), failure reasons and durations per model (from
recent jobs only, found by id range), rendered as SVG charts (app/ui/charts.py)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from markupsafe import Markup
from sqlalchemy import Executable, Row, func, select

from app.auth.models import Caller
from app.billing.models import Budget, UsageDay
from app.db import Database
from app.ids import first_job_id_at
from app.jobs.models import Job
from app.jobs.states import JobStatus
from app.timeutil import utcnow
from app.ui.charts import Series, horizontal_bars, line_with_limit, stacked_bars

DAYS = 14
CREDIT_DAYS = 30
FAILURE_DAYS = 7
DURATION_HOURS = 24
# Durations and failure reasons are read from at most this many of the most recent ended
# (failed) jobs, through the (owner, status, id) and (status, id) indexes: the page costs
# the same at any number of jobs.
DURATION_SAMPLE = 2_000
FAILURE_SAMPLE = 2_000
TOP_FAILURES = 10


@dataclass(frozen=True)
class Durations:
    model: str
    jobs: int
    p50: float
    p95: float
    longest: float


@dataclass(frozen=True)
class OverviewPage:
    jobs_chart: Markup
    failures_chart: Markup
    credits_chart: Markup
    durations: list[Durations]
    failures_total: int
    daily_budget_credits: float | None
    failure_sample: int = FAILURE_SAMPLE
    duration_sample: int = DURATION_SAMPLE


class Overview:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def read(self, caller: Caller) -> OverviewPage:
        today = utcnow().date()
        async with self.db.read_connection() as conn:
            usage = (await conn.execute(self._usage(caller, today))).all()
            failures = (await conn.execute(self._failures(caller))).all()
            ended = (await conn.execute(self._ended(caller))).all()
            budget = None
            if caller.scope is not None:
                budget = await conn.scalar(
                    select(Budget.daily_millicredits).where(Budget.owner == caller.scope)
                )
        days = [today - timedelta(days=n) for n in range(CREDIT_DAYS - 1, -1, -1)]
        per_day: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for row in usage:
            counts = per_day[row.day]
            counts[0] += row.jobs
            counts[1] += row.succeeded
            counts[2] += row.failed
            counts[3] += row.spent
        recent = days[-DAYS:]
        labels = [day.isoformat() for day in recent]
        jobs_chart = stacked_bars(
            f"Jobs per day, by outcome (last {DAYS} days)",
            labels,
            [
                Series("succeeded", [per_day[d][1] for d in recent]),
                Series("failed", [per_day[d][2] for d in recent]),
                Series(
                    "in progress", [per_day[d][0] - per_day[d][1] - per_day[d][2] for d in recent]
                ),
            ],
            unit="jobs",
        )
        failures_chart = horizontal_bars(
            f"Failure reasons (last {FAILURE_DAYS} days)",
            [(code or "unknown", count) for code, count in failures],
            unit="jobs",
        )
        daily_budget = None if budget is None else budget / 1000
        credits_chart = line_with_limit(
            f"Credits per day (last {CREDIT_DAYS} days)",
            [day.isoformat() for day in days],
            [per_day[d][3] / 1000 for d in days],
            limit=daily_budget,
            unit="credits",
        )
        return OverviewPage(
            jobs_chart=jobs_chart,
            failures_chart=failures_chart,
            credits_chart=credits_chart,
            durations=_durations(ended),
            failures_total=sum(count for _, count in failures),
            daily_budget_credits=daily_budget,
        )

    def _usage(self, caller: Caller, today: date) -> Executable:
        query = select(
            UsageDay.day,
            func.sum(UsageDay.jobs).label("jobs"),
            func.sum(UsageDay.succeeded_jobs).label("succeeded"),
            func.sum(UsageDay.failed_jobs).label("failed"),
            func.sum(UsageDay.spent_millicredits).label("spent"),
        ).where(UsageDay.day > today - timedelta(days=CREDIT_DAYS))
        if caller.scope is not None:
            query = query.where(UsageDay.owner == caller.scope)
        return query.group_by(UsageDay.day)

    def _failures(self, caller: Caller) -> Executable:
        since = first_job_id_at(utcnow() - timedelta(days=FAILURE_DAYS))
        recent = select(Job.error["code"].as_string().label("code")).where(
            Job.status == JobStatus.FAILED, Job.id >= since
        )
        if caller.scope is not None:
            recent = recent.where(Job.owner == caller.scope)
        sample = recent.order_by(Job.id.desc()).limit(FAILURE_SAMPLE).subquery()
        return (
            select(sample.c.code, func.count().label("count"))
            .group_by(sample.c.code)
            .order_by(func.count().desc(), sample.c.code)
            .limit(TOP_FAILURES)
        )

    def _ended(self, caller: Caller) -> Executable:
        since = first_job_id_at(utcnow() - timedelta(hours=DURATION_HOURS))
        query = select(Job.model, Job.created_at, Job.completed_at).where(
            Job.id >= since, Job.completed_at.is_not(None)
        )
        if caller.scope is not None:
            query = query.where(Job.owner == caller.scope)
        return query.order_by(Job.id.desc()).limit(DURATION_SAMPLE)


def _in_progress(counts: list[int]) -> int:
    jobs, succeeded, failed, _ = counts
    return jobs - succeeded - failed


def _durations(rows: Sequence[Row[Any]]) -> list[Durations]:
    """p50, p95 and the longest creation-to-end time per model, slowest p95 first."""
    seconds: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        seconds[row.model].append((row.completed_at - row.created_at).total_seconds())
    found = []
    for model, values in seconds.items():
        values.sort()
        p50 = statistics.median(values)
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        found.append(Durations(model, len(values), p50, p95, values[-1]))
    return sorted(found, key=lambda d: (-d.p95, d.model))
