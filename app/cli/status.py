"""`poyo-relay status`: the service at a glance, from its database: jobs by status, what
each worker queue has due now, the webhook deliveries still owed, and PoYo's balance as a
worker last read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.base import (
    EXIT_FAILED,
    NotMigrated,
    cli,
    fail,
    one_line,
    operator_settings,
    out,
    print_json,
    with_db,
)

if TYPE_CHECKING:
    from app.billing.balance import StoredBalance
    from app.config import Settings
    from app.db import Database

# What each worker queue holds, in the order shown (app/runtime.py, worker_queues).
QUEUES = {
    "submit": "pending, to submit",
    "reconcile": "in flight, due for a status check",
    "expire": "past the job deadline, due for a last check",
    "archive": "succeeded, outputs to archive",
}


@dataclass(frozen=True)
class QueueDepth:
    name: str
    due: int
    oldest_due_at: datetime | None
    enabled: bool


@dataclass(frozen=True)
class WebhookBacklog:
    """Webhook deliveries still owed (state pending): how many, how many of them are due
    now (leased or not), and since when the oldest due one is."""

    pending: int
    due: int
    oldest_due_at: datetime | None


@dataclass(frozen=True)
class Status:
    at: datetime
    jobs: dict[str, int]
    queues: list[QueueDepth]
    webhooks: WebhookBacklog
    balance: StoredBalance | None


async def gather(db: Database, settings: Settings) -> Status:
    """Count jobs by status, the due jobs of every worker queue and the webhook deliveries
    owed, and read the balance."""
    from sqlalchemy import case, func, select

    from app.billing.balance import last_balance
    from app.jobs import leases
    from app.jobs.models import Job
    from app.jobs.states import JobStatus
    from app.runtime import worker_queues
    from app.timeutil import utcnow
    from app.webhooks.models import DeliveryState, WebhookDelivery

    now = utcnow()
    queues = worker_queues(settings)
    jobs = {status.value: 0 for status in JobStatus}
    depths = []
    async with db.read_connection() as conn:
        counted = await conn.execute(select(Job.status, func.count()).group_by(Job.status))
        for status, count in counted:
            jobs[JobStatus(status).value] = int(count)
        for name in QUEUES:
            due, oldest = await leases.depth(conn, queues[name], now)
            enabled = name != "archive" or settings.archive_enabled
            depths.append(QueueDepth(name, due, oldest, enabled))
        due_at = case((WebhookDelivery.next_attempt_at <= now, WebhookDelivery.next_attempt_at))
        owed = (
            await conn.execute(
                select(func.count(), func.count(due_at), func.min(due_at)).where(
                    WebhookDelivery.state == DeliveryState.PENDING
                )
            )
        ).one()
        webhooks = WebhookBacklog(int(owed[0]), int(owed[1]), owed[2])
    return Status(now, jobs, depths, webhooks, await last_balance(db))


def _age(seconds: float) -> str:
    """A duration for people: 45s, 12m, 3h 5m, 2d 4h."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86_400
    if seconds < 3600:
        return f"{minutes}m"
    if seconds < 86_400:
        return f"{hours}h {minutes % 60}m"
    return f"{days}d {hours % 24}h"


def _credits(value: float) -> str:
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def balance_view(status: Status, settings: Settings) -> dict[str, Any]:
    """The balance as `--json` shows it: null figures when it was never read. Stale: not
    read for two checks' time (or checks are off), so no worker is keeping it fresh."""
    from app.billing.estimate import USD_PER_CREDIT
    from app.timeutil import isoformat_z

    every = settings.balance_check_seconds
    view: dict[str, Any] = {
        "credits": None,
        "usd": None,
        "checked_at": None,
        "age_seconds": None,
        "low": None,
        "stale": None,
        "warn_below_credits": settings.balance_warn_credits,
        "check_every_seconds": every,
    }
    balance = status.balance
    if balance is None:
        return view
    age = max(0.0, (status.at - balance.checked_at).total_seconds())
    usd = Fraction(balance.millicredits, 1000) * USD_PER_CREDIT
    return view | {
        "credits": balance.credits,
        "usd": round(float(usd), 4),
        "checked_at": isoformat_z(balance.checked_at),
        "age_seconds": round(age, 3),
        "low": balance.credits < settings.balance_warn_credits,
        "stale": every == 0 or age > 2 * every,
    }


def as_json(status: Status, settings: Settings) -> dict[str, Any]:
    from app.timeutil import isoformat_z

    return {
        "at": isoformat_z(status.at),
        "jobs": status.jobs | {"total": sum(status.jobs.values())},
        "queues": {
            queue.name: {
                "due": queue.due,
                "oldest_due_at": isoformat_z(queue.oldest_due_at),
                "enabled": queue.enabled,
            }
            for queue in status.queues
        },
        "webhook_deliveries": {
            "pending": status.webhooks.pending,
            "due": status.webhooks.due,
            "oldest_due_at": isoformat_z(status.webhooks.oldest_due_at),
        },
        "balance": balance_view(status, settings),
    }


def show(status: Status, settings: Settings) -> None:
    from rich.padding import Padding
    from rich.table import Table

    from app.timeutil import isoformat_z

    def section(title: str, table: Table | str) -> None:
        out.print()
        out.print(title, highlight=False)
        out.print(Padding(table, (0, 0, 0, 2), expand=False), highlight=False)

    def rows() -> Table:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), pad_edge=False)
        table.add_column(no_wrap=True)  # the names are never cut nor folded
        table.add_column(justify="right", no_wrap=True)
        return table

    out.print(f"poyo-relay status at {isoformat_z(status.at)}", highlight=False)

    jobs = rows()
    for name, count in status.jobs.items():
        jobs.add_row(name, f"{count:,}")
    jobs.add_row("total", f"{sum(status.jobs.values()):,}")
    section("Jobs", jobs)

    queues = rows()
    queues.add_column(no_wrap=True)
    queues.add_column()
    for queue in status.queues:
        oldest = ""
        if queue.oldest_due_at is not None:
            oldest = "oldest " + _age((status.at - queue.oldest_due_at).total_seconds())
        holds = QUEUES[queue.name] + ("" if queue.enabled else " (archiving is off)")
        queues.add_row(queue.name, f"{queue.due:,}", oldest, holds)
    section("Worker queues: jobs due now", queues)

    owed = status.webhooks
    webhooks = rows()
    webhooks.add_column(no_wrap=True)
    webhooks.add_column()
    oldest = ""
    if owed.oldest_due_at is not None:
        oldest = "oldest " + _age((status.at - owed.oldest_due_at).total_seconds())
    webhooks.add_row("pending", f"{owed.pending:,}", "", "owed, to send or to retry")
    webhooks.add_row("due", f"{owed.due:,}", oldest, "of them, due to send now")
    section("Webhook deliveries", webhooks)

    view = balance_view(status, settings)
    every = settings.balance_check_seconds
    if status.balance is None:
        reason = (
            f"a worker reads it every {every:g}s"
            if every
            else "BALANCE_CHECK_SECONDS=0: no worker reads it"
        )
        section("PoYo balance", f"never read ({reason})")
        return
    lines = [
        f"{_credits(view['credits'])} credits (≈ US${view['usd']:,.2f}), read "
        f"{_age(view['age_seconds'])} ago ({view['checked_at']})"
    ]
    if view["low"]:
        lines.append(f"low: below BALANCE_WARN_CREDITS ({_credits(settings.balance_warn_credits)})")
    if view["stale"]:
        why = f"not read for over {_age(2 * every)}" if every else "BALANCE_CHECK_SECONDS=0"
        lines.append(f"stale: {why}; is a worker running, and can it reach PoYo?")
    section("PoYo balance", "\n".join(lines))


@cli.command("status")
def status_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """One screen on the service: jobs by status, the worker queues' due jobs, the webhook
    deliveries owed, PoYo's balance."""
    settings = operator_settings()
    try:
        status = with_db(lambda db: gather(db, settings), settings)
    except NotMigrated:
        raise
    except Exception as exc:
        fail(f"status failed: {one_line(exc)}", EXIT_FAILED)
    if json_output:
        print_json(as_json(status, settings))
        return
    show(status, settings)
