"""`poyo-relay`: serve, worker, migrate, sandbox, config, keys, submit, jobs, prune.

Exit codes: 0 success, 1 the job (or operation) failed, 2 usage or configuration error.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from app.config import Settings, SettingsError, load_settings

T = TypeVar("T")

cli = typer.Typer(
    name="poyo-relay",
    help="A durable broker for asynchronous AI video generation (PoYo AI).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_cli = typer.Typer(help="Manage API keys.", no_args_is_help=True)
jobs_cli = typer.Typer(help="Look at jobs through the API.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")
cli.add_typer(jobs_cli, name="jobs")

out = Console()
err = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
REPO_ROOT = Path(__file__).resolve().parent.parent


def settings_or_exit(**overrides: Any) -> Settings:
    """Settings, or one line per problem on stderr and exit code 2: never a traceback."""
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        for problem in exc.problems:
            err.print(f"[red]error:[/red] {problem}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Run `start`, wait for SIGTERM or SIGINT, then run `stop`."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    await start()
    await stopped.wait()
    await stop()


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the API (and, unless RUN_WORKER=false, the background worker)."""
    import uvicorn

    settings = settings_or_exit()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=5,
        log_level=settings.log_level.lower(),
    )


@cli.command()
def worker() -> None:
    """Run the background worker alone (set RUN_WORKER=false on the API replicas)."""
    from app.logs import configure_logging
    from app.runtime import Runtime
    from app.worker.runner import Worker

    settings = settings_or_exit()
    configure_logging(level=settings.log_level, fmt=settings.log_format)

    async def main() -> None:
        runtime = await Runtime.start(settings)
        running = Worker(runtime)

        async def start() -> None:
            running.start()

        async def stop() -> None:
            await running.stop()
            await runtime.close()

        await _until_signalled(start, stop)

    run_async(main())


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or upgrade the schema of DATABASE_URL (same as `alembic upgrade head`)."""
    from alembic import command
    from alembic.config import Config

    settings = settings_or_exit()
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.attributes["database_url"] = settings.database_url
    command.upgrade(config, revision)
    out.print(f"database migrated to {revision}")


@cli.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8100,
    queue_seconds: Annotated[float, typer.Option(help="Time a task stays not_started.")] = 0.5,
    run_seconds: Annotated[float, typer.Option(help="Time a task stays running.")] = 2.0,
    fail_rate: Annotated[float, typer.Option(help="Share of tasks that fail.")] = 0.0,
    submit_error_rate: Annotated[float, typer.Option(help="Share of submits answered 500.")] = 0.0,
    status_error_rate: Annotated[
        float, typer.Option(help="Share of status reads answered 500.")
    ] = 0.0,
    rate_limit_rate: Annotated[float, typer.Option(help="Share of requests answered 429.")] = 0.0,
    drop_callback_rate: Annotated[float, typer.Option(help="Share of callbacks never sent.")] = 0.0,
    duplicate_callback_rate: Annotated[float, typer.Option(help="Share sent twice.")] = 0.0,
    reorder_callback_rate: Annotated[
        float, typer.Option(help="Share followed by a stale one.")
    ] = 0.0,
    callback_delay_seconds: Annotated[float, typer.Option(help="Extra callback delay.")] = 0.0,
    webhook_secret: Annotated[
        str | None, typer.Option(help="Sign callbacks with this key.")
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="Require this bearer key.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for repeatable faults.")] = None,
) -> None:
    """Run the PoYo simulator alone, for tests, benchmarks and docker compose."""
    import uvicorn

    from app.logs import configure_logging
    from app.sandbox.simulator import Faults, create_simulator

    settings = settings_or_exit()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    faults = Faults(
        queue_seconds=queue_seconds,
        run_seconds=run_seconds,
        fail_rate=fail_rate,
        submit_error_rate=submit_error_rate,
        status_error_rate=status_error_rate,
        rate_limit_rate=rate_limit_rate,
        drop_callback_rate=drop_callback_rate,
        duplicate_callback_rate=duplicate_callback_rate,
        reorder_callback_rate=reorder_callback_rate,
        callback_delay_seconds=callback_delay_seconds,
        webhook_secret=webhook_secret,
        seed=seed,
    )
    uvicorn.run(
        create_simulator(faults, api_key=api_key),
        host=host,
        port=port,
        access_log=False,
        log_config=None,
    )


@cli.command("config")
def show_config() -> None:
    """Print the effective configuration, secrets masked."""
    from rich.table import Table

    settings = settings_or_exit()
    table = Table("setting", "value", "source", box=None)
    explicit = settings.model_fields_set
    for name, value in settings.model_dump().items():
        shown = _masked(value)
        table.add_row(name.upper(), shown, "environment" if name in explicit else "default")
    table.add_row("(sandbox mode)", str(settings.sandbox_mode), "derived")
    table.add_row("(provider URL)", settings.provider_base_url, "derived")
    out.print(table)


def _masked(value: Any) -> str:
    from pydantic import SecretStr

    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else "(empty)"
    text = str(value)
    if "://" in text and "@" in text:  # a password inside a database URL
        scheme, rest = text.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:********@{host}" if ":" in credentials else text
    return text


# ---- keys --------------------------------------------------------------------------


def _db() -> Any:
    from app.db import Database

    return Database(settings_or_exit())


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Owner name; keys with one name share jobs.")],
    admin: Annotated[bool, typer.Option("--admin", help="May see every owner's jobs.")] = False,
) -> None:
    """Create a key and print it once, as the last word of the output."""
    from app.auth.service import create_key

    async def main() -> tuple[Any, str]:
        db = _db()
        try:
            return await create_key(db, name=name, is_admin=admin)
        finally:
            await db.dispose()

    try:
        info, token = run_async(main())
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    role = "admin key" if info.is_admin else "key"
    # Plain print: the token must not be wrapped or styled, it is meant to be copied.
    print(f"Created {role} {info.id} for {info.name}; it is shown only once: {token}")


@keys_cli.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    from rich.table import Table

    from app.auth.service import list_keys
    from app.timeutil import isoformat_z

    async def main() -> list[Any]:
        db = _db()
        try:
            return await list_keys(db)
        finally:
            await db.dispose()

    table = Table("id", "name", "admin", "created", "revoked")
    for key in run_async(main()):
        table.add_row(
            key.id,
            key.name,
            "yes" if key.is_admin else "",
            isoformat_z(key.created_at),
            isoformat_z(key.revoked_at) or "",
        )
    out.print(table)


@keys_cli.command("revoke")
def keys_revoke(
    name_or_id: Annotated[str, typer.Argument(help="A key id, or a name to revoke all its keys.")],
) -> None:
    """Revoke keys; effective at once."""
    from app.auth.service import revoke

    async def main() -> int:
        db = _db()
        try:
            return await revoke(db, name_or_id=name_or_id)
        finally:
            await db.dispose()

    count = run_async(main())
    if count == 0:
        err.print(f"no live key matches {name_or_id!r}")
        raise typer.Exit(EXIT_FAILED)
    out.print(f"revoked {count} key(s)")


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
