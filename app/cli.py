"""`poyo-relay`: serve, worker, migrate, sandbox, config, keys, submit, jobs, prune.

Exit codes: 0 success, 1 the job (or operation) failed, 2 usage or configuration error.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from app.config import Settings, SettingsError, load_settings
from app.jobs.states import JobStatus

if TYPE_CHECKING:
    import httpx

    from app.db import Database

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
# In a checkout, alembic.ini and migrations/ sit next to the package; in the container
# image the package is installed in site-packages and they sit in the working directory.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent


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
            _fail(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}", EXIT_FAILED)

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
        err.print(f"[red]error:[/red] migration failed: {_one_line(exc)}", highlight=False)
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


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


# ---- keys --------------------------------------------------------------------------


def _with_db(work: Callable[[Database], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run `work` against the configured database, closed afterwards."""
    from app.db import Database

    async def main() -> T:
        db = Database(settings or _operator_settings())
        try:
            return await work(db)
        finally:
            await db.dispose()

    return run_async(main())


def _operator_settings() -> Settings:
    """Settings for a command that runs service code: its logs go to stderr, like the
    service's, so that stdout carries only the command's own output."""
    from app.logs import configure_logging

    settings = settings_or_exit()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Owner name; keys with one name share jobs.")],
    admin: Annotated[bool, typer.Option("--admin", help="May see every owner's jobs.")] = False,
) -> None:
    """Create a key and print it once, as the last word of the output."""
    from app.auth.service import create_key

    try:
        info, token = _with_db(lambda db: create_key(db, name=name, is_admin=admin))
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

    table = Table("id", "name", "admin", "created", "revoked")
    for key in _with_db(list_keys):
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

    count = _with_db(lambda db: revoke(db, name_or_id=name_or_id))
    if count == 0:
        err.print(f"no live key matches {name_or_id!r}")
        raise typer.Exit(EXIT_FAILED)
    out.print(f"revoked {count} key(s)")


# ---- the API client: submit, jobs ---------------------------------------------------

BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", help="The service's address. Default: PUBLIC_BASE_URL."),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="An API key from `poyo-relay keys create`. Default: POYO_RELAY_API_KEY.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")]

_TERMINAL = {JobStatus.SUCCEEDED.value, JobStatus.FAILED.value}
# A mistake the caller must fix (exit 2), as opposed to an operation that failed (exit 1).
_USAGE_STATUSES = {400, 401, 403, 409, 413, 415, 422}


class ApiFailure(Exception):
    """The API answered with an error, or could not be reached."""

    def __init__(self, message: str, *, exit_code: int, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = details or []


def _fail(message: str, exit_code: int, details: list[str] | None = None) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    for line in details or []:
        err.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(exit_code)


@contextlib.contextmanager
def _api(base_url: str | None, api_key: str | None) -> Iterator[httpx.Client]:
    """An authenticated HTTP client for the service; API failures end the command."""
    import httpx

    settings = settings_or_exit()
    key = api_key or settings.poyo_relay_api_key.get_secret_value()
    if not key:
        _fail(
            "an API key is required: --api-key or POYO_RELAY_API_KEY "
            "(make one with `poyo-relay keys create NAME`)",
            EXIT_USAGE,
        )
    url = (base_url or settings.public_base_url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        _fail(f"--base-url must start with http:// or https://, not {url!r}", EXIT_USAGE)
    headers = {"Authorization": f"Bearer {key}", "User-Agent": "poyo-relay-cli"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
            yield client
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the service at {url}: {_one_line(exc)}", EXIT_FAILED)
    except ApiFailure as failure:
        _fail(failure.message, failure.exit_code, failure.details)


def _call(
    client: httpx.Client, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
) -> dict[str, Any]:
    response = client.request(method, path, **kwargs)
    if response.status_code in ok:
        body: dict[str, Any] = response.json()
        return body
    raise _failure(response)


def _failure(response: httpx.Response) -> ApiFailure:
    try:
        error = response.json()["error"]
        message = f"{error['message']} (HTTP {response.status_code})"
        details = [
            f"{'.'.join(str(part) for part in detail.get('loc', []))}: {detail.get('msg')}"
            for detail in error.get("details") or []
            if isinstance(detail, dict)
        ]
    except (ValueError, KeyError, TypeError):
        message, details = f"the service answered HTTP {response.status_code}", []
    if response.status_code == 401:
        details.append("check the API key (--api-key or POYO_RELAY_API_KEY)")
    code = EXIT_USAGE if response.status_code in _USAGE_STATUSES else EXIT_FAILED
    return ApiFailure(message, exit_code=code, details=details)


def _print_json(value: Any) -> None:
    import orjson

    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _job_error(job: dict[str, Any]) -> str:
    error = job.get("error") or {}
    return f"job {job['id']} failed: {error.get('code', 'error')}: {error.get('message', '')}"


@cli.command()
def submit(
    image_url: Annotated[str, typer.Argument(help="The first frame: an http(s) image URL.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What should happen in the video.")],
    model: Annotated[str, typer.Option(help="An image-to-video model.")] = "wan2.5-image-to-video",
    resolution: Annotated[
        str | None, typer.Option(help="480p, 720p or 1080p (model default: 720p).")
    ] = None,
    duration: Annotated[
        int | None, typer.Option(help="Length in seconds: 5 or 10 (model default: 5).")
    ] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="What to avoid.")] = None,
    seed: Annotated[int | None, typer.Option(help="0..2147483647, for repeatable output.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retrying with the same key never makes a second job.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until the job ends; print its output.")
    ] = False,
    poll_interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between status reads with --wait.")
    ] = 1.0,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Give up waiting after this many seconds.")
    ] = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Submit an image-to-video job; with --wait, follow it and print the output URL.

    Exit code 0: submitted (or, with --wait, succeeded); 1: the job failed; 2: usage.
    """
    job_input: dict[str, Any] = {"prompt": prompt, "image_urls": [image_url]}
    optional = {
        "resolution": resolution,
        "duration": duration,
        "negative_prompt": negative_prompt,
        "seed": seed,
    }
    job_input |= {name: value for name, value in optional.items() if value is not None}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with _api(base_url, api_key) as client:
        job = _call(
            client,
            "POST",
            "/v1/jobs",
            ok=(200, 201),
            json={"model": model, "input": job_input},
            headers=headers,
        )
        if wait and job["status"] not in _TERMINAL:
            job = _follow(client, job, poll_interval=poll_interval, timeout=timeout)
    if as_json:
        _print_json(job)
    if job["status"] == JobStatus.FAILED.value:
        _fail(_job_error(job), EXIT_FAILED)
    if job["status"] == JobStatus.SUCCEEDED.value:
        if not as_json:
            for output in job["outputs"]:
                print(output["url"])
        return
    if wait:  # gave up waiting
        _fail(f"job {job['id']} is still {job['status']} after {timeout:g}s", EXIT_FAILED)
    if not as_json:
        out.print(f"job {job['id']} is {job['status']}; follow it with `poyo-relay jobs show`:")
        print(job["id"])


def _follow(
    client: httpx.Client, job: dict[str, Any], *, poll_interval: float, timeout: float | None
) -> dict[str, Any]:
    """Read the job until it ends (or `timeout` passes), showing its progress."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    deadline = None if timeout is None else time.monotonic() + timeout

    def watch(show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        current = job
        show(current)
        while current["status"] not in _TERMINAL and time.monotonic() < (deadline or math.inf):
            time.sleep(poll_interval)
            current = _call(client, "GET", f"/v1/jobs/{job['id']}")
            show(current)
        return current

    if not err.is_terminal:
        # No live display in logs and pipes: a line whenever the job moves.
        shown: list[tuple[str, int]] = []

        def line(current: dict[str, Any]) -> None:
            if [(current["status"], current["progress"])] != shown[-1:]:
                shown.append((current["status"], current["progress"]))
                err.print(
                    f"{current['id']} {current['status']} {current['progress']}%", highlight=False
                )

        return watch(line)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task(job["id"], total=100)

        def update(current: dict[str, Any]) -> None:
            description = f"{current['id']} [bold]{current['status']}[/bold]"
            progress.update(bar, completed=current["progress"], description=description)

        return watch(update)


@jobs_cli.command("list")
def jobs_list(
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs with this status.")] = None,
    model: Annotated[str | None, typer.Option(help="Only jobs of this model.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue after an earlier page.")] = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first, as a table."""
    from rich.table import Table

    params: dict[str, Any] = {"limit": limit}
    for name, value in (("status", status), ("model", model), ("cursor", cursor)):
        if value is not None:
            params[name] = str(value)
    with _api(base_url, api_key) as client:
        page = _call(client, "GET", "/v1/jobs", params=params)
    if as_json:
        _print_json(page)
        return
    table = Table("id", "model", "status", "progress", "created", "completed", box=None)
    table.columns[0].no_wrap = True
    for job in page["data"]:
        table.add_row(
            job["id"],
            job["model"],
            job["status"],
            f"{job['progress']}%",
            job["created_at"],
            job["completed_at"] or "",
        )
    out.print(table)
    if not page["data"]:
        out.print("no jobs")
    if page.get("next_cursor"):
        out.print(f"more: --cursor {page['next_cursor']}", highlight=False)


@jobs_cli.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="A job id (job_…).")],
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a job and its audit trail (exit code 1 if the job failed)."""
    from rich.table import Table

    with _api(base_url, api_key) as client:
        job = _call(client, "GET", f"/v1/jobs/{job_id}")
        events = _call(client, "GET", f"/v1/jobs/{job_id}/events")["data"]
    if as_json:
        _print_json({**job, "events": events})
    else:
        fields = Table(box=None, show_header=False)
        fields.add_column(style="bold", no_wrap=True)
        fields.add_column(overflow="fold")
        provider = job.get("provider") or {}
        rows = [
            ("id", job["id"]),
            ("model", job["model"]),
            ("status", job["status"]),
            ("progress", f"{job['progress']}%"),
            ("provider task", provider.get("task_id") or ""),
            ("created", job["created_at"]),
            ("submitted", job["submitted_at"] or ""),
            ("completed", job["completed_at"] or ""),
        ]
        rows += [("output", output["url"]) for output in job["outputs"]]
        if job.get("error"):
            rows.append(("error", f"{job['error']['code']}: {job['error']['message']}"))
        for name, value in rows:
            fields.add_row(name, str(value))
        out.print(fields)
        trail = Table("time", "event", "data", title="events", box=None)
        trail.columns[0].no_wrap = True
        trail.columns[1].no_wrap = True
        trail.columns[2].overflow = "fold"
        for event in events:
            trail.add_row(event["created_at"], event["type"], _summary(event["data"]))
        out.print(trail)
    if job["status"] == JobStatus.FAILED.value:
        raise typer.Exit(EXIT_FAILED)


def _summary(data: dict[str, Any], limit: int = 160) -> str:
    import orjson

    shown = {key: value for key, value in data.items() if key != "raw"}
    text = orjson.dumps(shown).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    """Delete old job events (and with --jobs, old finished jobs) in small batches.

    Also deletes idempotency keys past IDEMPOTENCY_TTL_SECONDS and spent rate-limit
    windows. Safe to run while the service is up, e.g. daily from cron.
    """
    from app.ops.prune import prune as run_prune

    settings = _operator_settings()
    ttl = timedelta(seconds=settings.idempotency_ttl_seconds)
    try:
        result = _with_db(
            lambda db: run_prune(
                db, older_than=older_than, idempotency_ttl=ttl, jobs=jobs, batch_size=batch_size
            ),
            settings,
        )
    except Exception as exc:
        _fail(f"prune failed: {_one_line(exc)}", EXIT_FAILED)
    from app.timeutil import isoformat_z

    out.print(
        f"pruned before {isoformat_z(result.cutoff)}: {result.events} events, "
        f"{result.jobs} jobs, {result.idempotency_keys} expired idempotency keys, "
        f"{result.rate_limit_windows} rate-limit windows ({result.batches} batches)",
        highlight=False,
    )


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
