"""`poyo-relay keys`: create, list and revoke API keys (against the database)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.base import EXIT_FAILED, EXIT_USAGE, cli, err, out, with_db
from app.cli.tables import Col, fit, stamp

keys_cli = typer.Typer(help="Manage API keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Owner name; keys with one name share jobs.")],
    admin: Annotated[bool, typer.Option("--admin", help="May see every owner's jobs.")] = False,
) -> None:
    """Create a key and print it once, as the last word of the output."""
    from app.auth.service import create_key

    try:
        info, token = with_db(lambda db: create_key(db, name=name, is_admin=admin))
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    role = "admin key" if info.is_admin else "key"
    # Plain print: the token must not be wrapped or styled, it is meant to be copied.
    print(f"Created {role} {info.id} for {info.name}; it is shown only once: {token}")


@keys_cli.command("list")
def keys_list() -> None:
    """List keys (never their secrets): id, name, status and role; when each was revoked
    and created too if the terminal is wide enough."""
    from app.auth.service import list_keys
    from app.timeutil import isoformat_z

    columns = (
        Col("id", whole=True),
        Col("name"),
        Col("status", whole=True),
        Col("admin", whole=True),
        Col("revoked at", rank=1),
        Col("created at", rank=2),
    )
    rows = [
        (
            key.id,
            key.name,
            "active" if key.revoked_at is None else "revoked",
            "yes" if key.is_admin else "",
            stamp(isoformat_z(key.revoked_at)),
            stamp(isoformat_z(key.created_at)),
        )
        for key in with_db(list_keys)
    ]
    if not rows:
        out.print("no keys: make one with `poyo-relay keys create NAME`", highlight=False)
        return
    out.print(fit(columns, rows, width=out.width), highlight=False)


@keys_cli.command("revoke")
def keys_revoke(
    name_or_id: Annotated[str, typer.Argument(help="A key id, or a name to revoke all its keys.")],
) -> None:
    """Revoke keys; effective at once."""
    from app.auth.service import revoke

    count = with_db(lambda db: revoke(db, name_or_id=name_or_id))
    if count == 0:
        err.print(f"no live key matches {name_or_id!r}")
        raise typer.Exit(EXIT_FAILED)
    out.print(f"revoked {count} key(s)")


@keys_cli.command("budget")
def keys_budget(
    name: Annotated[str, typer.Argument(help="The owner: an API key's name.")],
    daily: Annotated[
        float | None, typer.Option(min=0.001, help="Credits a UTC day, reservations included.")
    ] = None,
    monthly: Annotated[
        float | None, typer.Option(min=0.001, help="Credits a UTC month, reservations included.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the owner's budgets.")] = False,
) -> None:
    """Set an owner's credit budgets (jobs that would exceed one are refused with 402), or
    show them and what is spent with neither option."""
    from app.billing.budgets import Limits
    from app.billing.service import budget_status, millicredits, set_budget

    if clear and (daily is not None or monthly is not None):
        err.print("[red]error:[/red] --clear takes no --daily or --monthly")
        raise typer.Exit(EXIT_USAGE)
    if clear or daily is not None or monthly is not None:
        wanted = Limits(daily=millicredits(daily), monthly=millicredits(monthly))
        with_db(lambda db: set_budget(db, name, wanted))
    limits, today, month = with_db(lambda db: budget_status(db, name))

    def shown(limit: int | None, spent: int) -> str:
        used = f"{spent / 1000:g} spent"
        return f"{used} (no budget)" if limit is None else f"{used} of {limit / 1000:g}"

    daily_limit = limits.daily if limits else None
    monthly_limit = limits.monthly if limits else None
    out.print(f"{name}: today {shown(daily_limit, today)}", highlight=False)
    out.print(f"{name}: this month {shown(monthly_limit, month)}", highlight=False)
