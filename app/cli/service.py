"""`poyo-relay` commands that run the service or work on its database: serve, worker,
migrate, sandbox, config, prune."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.base import (
    EXIT_FAILED,
    EXIT_USAGE,
    PACKAGE_PARENT,
    cli,
    err,
    fail,
    one_line,
    operator_settings,
    out,
    run_async,
    setting_default,
    settings_or_exit,
    with_db,
)


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
    if workers > 1 and settings.is_sqlite:
        typer.echo(
            "warning: SQLite has one writer; several worker processes only compete for its "
            "lock (slower, with long tail latencies). Use one worker, or PostgreSQL to scale out.",
            err=True,
        )
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=7,
        log_level=settings.log_level.lower(),
    )


@cli.command()
def worker(
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve this worker's Prometheus metrics at /metrics on this port (queue "
            "depth, loop lag, jobs finished, provider latency). Default: off.",
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "0.0.0.0",  # noqa: S104
) -> None:
    """Run the background worker alone (set RUN_WORKER=false on the API replicas)."""
    from app.logs import configure_logging
    from app.runtime import Runtime

    settings = settings_or_exit()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    metrics_server = None
    if metrics_port is not None:
        from prometheus_client import start_http_server

        from app.metrics import REGISTRY

        try:
            metrics_server, _ = start_http_server(
                metrics_port, addr=metrics_host, registry=REGISTRY
            )
        except OSError as exc:
            fail(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}", EXIT_FAILED)

    async def main() -> None:
        runtime = await Runtime.start(settings)
        running = runtime.worker()

        async def start() -> None:
            running.start()

        async def stop() -> None:
            await running.stop()
            await runtime.close()

        await _until_signalled(start, stop)

    try:
        run_async(main())
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or upgrade the schema of DATABASE_URL (same as `alembic upgrade head`)."""
    from alembic import command
    from alembic.config import Config

    settings = settings_or_exit()
    home = migrations_home()
    config = Config(str(home / "alembic.ini"))
    config.set_main_option("script_location", str(home / "migrations"))
    config.attributes["database_url"] = settings.database_url
    try:
        command.upgrade(config, revision)
    except Exception as exc:
        err.print(f"[red]error:[/red] migration failed: {one_line(exc)}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    out.print(f"database migrated to {revision} (migrations in {home})", highlight=False)


def migrations_home() -> Path:
    """The folder holding alembic.ini and migrations/: the working directory first (the
    container image's WORKDIR), then the folder above the package (a checkout)."""
    candidates = [Path.cwd(), PACKAGE_PARENT]
    for root in candidates:
        if (root / "alembic.ini").is_file() and (root / "migrations" / "env.py").is_file():
            return root
    places = " or ".join(str(root) for root in candidates)
    err.print(f"[red]error:[/red] no alembic.ini and migrations/ in {places}", highlight=False)
    raise typer.Exit(EXIT_USAGE)


@cli.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8100,
    # The defaults of the settings of the simulator mounted in sandbox mode.
    queue_seconds: Annotated[
        float, typer.Option(help="Time a task stays not_started.")
    ] = setting_default("sandbox_queue_seconds"),
    run_seconds: Annotated[
        float, typer.Option(help="Time a task stays running.")
    ] = setting_default("sandbox_run_seconds"),
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
    public_url: Annotated[
        str | None,
        typer.Option(
            help="The simulator's address as users see it; output file URLs start with it "
            "(e.g. http://localhost:8100 when it runs in a container). Default: the address "
            "each request came to."
        ),
    ] = None,
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
        create_simulator(faults, api_key=api_key, public_url=public_url),
        host=host,
        port=port,
        access_log=False,
        log_config=None,
    )


@cli.command("config")
def show_config() -> None:
    """Print the effective configuration, secrets masked."""
    from app.cli.tables import Col, fit

    settings = settings_or_exit()
    explicit = settings.model_fields_set
    rows = [
        (name.upper(), _masked(value), "environment" if name in explicit else "default")
        for name, value in settings.model_dump().items()
    ]
    rows.append(("(sandbox mode)", str(settings.sandbox_mode), "derived"))
    rows.append(("(provider URL)", settings.provider_base_url, "derived"))
    # The names whole; a long value (a URL) folds; the source only when there is room.
    columns = (Col("setting", whole=True), Col("value", rest="fold"), Col("source", rank=1))
    out.print(fit(columns, rows, width=out.width), highlight=False, markup=False)


_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&]*")


def _masked(value: Any) -> str:
    from pydantic import SecretStr

    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else "(empty)"
    text = str(value)
    if "://" in text and "@" in text:  # a password inside a database URL
        scheme, rest = text.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        if ":" in credentials:
            text = f"{scheme}://{user}:********@{host}"
    return _QUERY_PASSWORD.sub(r"\1********", text)


# ---- retention ---------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_age(text: str) -> timedelta:
    """`90d`, `12h`, `30m`, `45s` or `2w` as a positive timedelta."""
    match = _DURATION.match(text.lower())
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a positive age such as 90d, 12h or 2w")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


@cli.command()
def prune(
    older_than: Annotated[
        timedelta,
        typer.Option(
            "--older-than",
            parser=parse_age,
            metavar="AGE",
            help="Age of what goes: 90d, 12h, 2w, … (s, m, h, d, w).",
            show_default=False,
        ),
    ],
    jobs: Annotated[
        bool, typer.Option("--jobs", help="Also delete jobs that ended before then.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="Rows per transaction.")
    ] = 1000,
) -> None:
    """Delete old job events (and with --jobs, old finished jobs with their archived
    output files) in small batches.

    Also deletes idempotency keys past IDEMPOTENCY_TTL_SECONDS and spent rate-limit
    windows. Safe to run while the service is up, e.g. daily from cron.
    """
    from app.archive.storage import open_storage
    from app.ops.prune import prune as run_prune

    settings = operator_settings()
    ttl = timedelta(seconds=settings.idempotency_ttl_seconds)

    async def work(db: Any) -> Any:
        storage = open_storage(settings)
        try:
            return await run_prune(
                db,
                older_than=older_than,
                idempotency_ttl=ttl,
                jobs=jobs,
                batch_size=batch_size,
                storage=storage,
            )
        finally:
            await storage.aclose()

    try:
        result = with_db(work, settings)
    except Exception as exc:
        fail(f"prune failed: {one_line(exc)}", EXIT_FAILED)
    from app.timeutil import isoformat_z

    out.print(
        f"pruned before {isoformat_z(result.cutoff)}: {result.events} events, "
        f"{result.jobs} jobs ({result.output_files} output files), "
        f"{result.idempotency_keys} expired idempotency keys, "
        f"{result.rate_limit_windows} rate-limit windows ({result.batches} batches)",
        highlight=False,
    )
