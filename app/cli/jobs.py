"""`poyo-relay submit` and `poyo-relay jobs`: create and follow jobs through the API."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.api import ApiFailure, ApiKeyOption, BaseUrlOption, JsonOption, api, call, failure_of
from app.cli.base import EXIT_FAILED, EXIT_USAGE, cli, err, fail, out, print_json
from app.cli.inputs import InputError, apply_pairs, parse_object
from app.cli.tables import Col, fit, stamp
from app.jobs.states import JobStatus

if TYPE_CHECKING:
    import httpx

    from poyo_relay.client import Client, Estimate, Job

# About US$0.50: above it, `submit` asks first.
DEFAULT_CONFIRM_CREDITS = 100.0

jobs_cli = typer.Typer(help="Look at jobs through the API.", no_args_is_help=True)
cli.add_typer(jobs_cli, name="jobs")

_TERMINAL = {JobStatus.SUCCEEDED.value, JobStatus.FAILED.value}


def progress_text(status: str, progress: int) -> str:
    """A job's progress as shown: a failed job's is not (PoYo's last figure, even 100, says
    nothing about a job that produced nothing; the API reports it as PoYo gave it)."""
    if status == JobStatus.FAILED.value:
        return "—"
    return f"{progress}%"


def _job_error(job: dict[str, Any]) -> str:
    error = job.get("error") or {}
    return f"job {job['id']} failed: {error.get('code', 'error')}: {error.get('message', '')}"


def read_input_option(value: str | None) -> dict[str, Any]:
    """--input: a JSON object, `@FILE` holding one, or `-` for standard input."""
    if value is None:
        return {}
    what = "--input"
    if value == "-":
        value, what = sys.stdin.read(), "--input - (standard input)"
    elif value.startswith("@"):
        path = Path(value[1:])
        try:
            value, what = path.read_text(), f"--input {value}"
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
    return parse_object(value, what=what)


def local_problems(model: dict[str, Any], job_input: dict[str, Any]) -> list[str]:
    """What the service would refuse in `job_input`, checked here with the same schema and
    family rules, so that a mistake costs no request."""
    from app.catalog.compiled import compile_schema, input_problems

    problems = input_problems(model["id"], compile_schema(model["input_schema"]), job_input)
    return [f"{'.'.join(p['loc'][1:])}: {p['msg']}" for p in problems]


@cli.command()
def submit(
    fields: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[FIELD=VALUE | FIELD:=JSON]...",
            help="Input fields, typed by the model's schema: duration=5, "
            "image_urls=URL (repeat for more), seed:=7 (JSON as is).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="A model id (`poyo-relay models list`).", show_default=False
        ),
    ] = ...,  # type: ignore[assignment]
    input_json: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help="The input as a JSON object, @FILE, or - (stdin); FIELD=VALUE pairs apply on top.",
        ),
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Shorthand for prompt=TEXT.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retrying with the same key never makes a second job.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until the job ends; print its outputs.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Give up waiting after this many seconds.")
    ] = None,
    confirm_above: Annotated[
        float,
        typer.Option(min=0, help="Ask before submitting a job estimated above this many credits."),
    ] = DEFAULT_CONFIRM_CREDITS,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Submit without asking, whatever the estimate.")
    ] = False,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Submit a job for any model, its input checked against the model's schema before it
    is sent; with --wait, follow it and print its output URLs.

    Exit code 0: submitted (or, with --wait, succeeded); 1: the job failed; 2: usage.
    """
    pairs = ([f"prompt={prompt}"] if prompt is not None else []) + list(fields or [])
    with api(base_url, api_key) as http, _service(http) as relay:
        # An unknown model is the caller's mistake here (exit 2), not a failed lookup.
        with _client_errors(usage=(404,)):
            spec = relay.models.get(model).raw
        try:
            job_input = apply_pairs(read_input_option(input_json), pairs, spec["input_schema"])
        except InputError as exc:
            fail(str(exc), EXIT_USAGE)
        problems = local_problems(dict(spec), job_input)
        if problems:
            fail(f"invalid input for model {model} (nothing was sent)", EXIT_USAGE, problems)
        with _client_errors():
            cost = relay.jobs.estimate(model=model, input=job_input)
        _confirm_cost(cost, above=confirm_above, yes=yes)
        with _client_errors():
            job = relay.jobs.create(model=model, input=job_input, idempotency_key=idempotency_key)
            if wait and not job.is_terminal:
                job = _follow(relay, job, timeout=timeout)
    _report(dict(job.raw), wait=wait, timeout=timeout, as_json=as_json)


def _confirm_cost(cost: Estimate, *, above: float, yes: bool) -> None:
    """Say what the job is estimated to cost; above `above` credits, ask first (or, with
    no one to ask, refuse unless --yes)."""
    if cost.credits is None:
        err.print(f"estimate: unknown ({cost.reason})", highlight=False)
        return
    err.print(f"estimate: {cost.credits:g} credits (~${cost.usd or 0:.2f})", highlight=False)
    if yes or cost.credits <= above:
        return
    if not sys.stdin.isatty():
        fail(
            f"this job is estimated at {cost.credits:g} credits, above --confirm-above "
            f"{above:g}: pass --yes to submit it (nothing was sent)",
            EXIT_USAGE,
        )
    if not typer.confirm(f"Submit it for about {cost.credits:g} credits?", err=True):
        fail("not submitted", EXIT_USAGE)


@contextlib.contextmanager
def _service(http: httpx.Client) -> Iterator[Client]:
    """poyo_relay's client over the CLI's HTTP client (its address and API key, checked by
    `api`); the retries of a job creation reuse its Idempotency-Key."""
    from poyo_relay.client import Client

    key = http.headers["Authorization"].removeprefix("Bearer ")
    yield Client(str(http.base_url), key, http_client=http)


@contextlib.contextmanager
def _client_errors(usage: tuple[int, ...] = ()) -> Iterator[None]:
    """The client's errors as the CLI reports the API's (app/cli/api.py, `call`): the same
    messages and exit codes (2 for a status the caller must fix, including `usage`)."""
    import httpx

    from poyo_relay.client import ApiError, ConnectionFailed, PoyoRelayError

    try:
        yield
    except ApiError as exc:
        if exc.response is None:
            raise ApiFailure(exc.message, exit_code=EXIT_FAILED) from None
        raise failure_of(exc.response, usage) from None
    except ConnectionFailed as exc:
        if isinstance(exc.__cause__, httpx.HTTPError):
            raise exc.__cause__ from None  # `api` says the service cannot be reached
        raise ApiFailure(str(exc), exit_code=EXIT_FAILED) from None
    except PoyoRelayError as exc:
        raise ApiFailure(str(exc), exit_code=EXIT_FAILED) from None


def _report(job: dict[str, Any], *, wait: bool, timeout: float | None, as_json: bool) -> None:
    if as_json:
        print_json(job)
    if job["status"] == JobStatus.FAILED.value:
        fail(_job_error(job), EXIT_FAILED)
    if job["status"] == JobStatus.SUCCEEDED.value:
        if not as_json:
            for output in job["outputs"]:
                print(output["url"])
        return
    if wait:  # gave up waiting
        fail(f"job {job['id']} is still {job['status']} after {timeout:g}s", EXIT_FAILED)
    if not as_json:
        out.print(f"job {job['id']} is {job['status']}; follow it with `poyo-relay jobs show`:")
        print(job["id"])


def _follow(relay: Client, job: Job, *, timeout: float | None) -> Job:
    """Follow the job's event stream until it ends (or `timeout` passes), showing its
    progress."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Column

    def watch(show: Callable[[Job], None]) -> Job:
        current = job
        show(current)
        with contextlib.closing(relay.jobs.stream(job.id, timeout=timeout)) as updates:
            for update in updates:
                current = update.job
                show(current)
                if current.is_terminal:
                    return current
        # The stream ended (the job settled) or the time is up: its latest state.
        current = relay.jobs.get(job.id)
        show(current)
        return current

    if not err.is_terminal:
        # No live display in logs and pipes: a line whenever the job moves.
        shown: list[str] = []

        def line(current: Job) -> None:
            progress = progress_text(current.status.value, current.progress)
            text = f"{current.id} {current.status} {progress}".removesuffix(" —")
            if text not in shown[-1:]:
                shown.append(text)
                err.print(text, highlight=False)

        return watch(line)
    # The job id and status whole; the bar takes the room left (none at all when narrow).
    columns = (
        TextColumn("{task.description}", table_column=Column(no_wrap=True)),
        BarColumn(bar_width=None),
        TextColumn("{task.fields[shown]:>4}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, expand=True) as progress:
        bar = progress.add_task(job.id, total=100, shown="")

        def update(current: Job) -> None:
            description = f"{current.id} [bold]{current.status}[/bold]"
            shown = progress_text(current.status.value, current.progress)
            progress.update(bar, description=description, shown=shown)
            if current.status != JobStatus.FAILED.value:  # a failed job's bar stays put
                progress.update(bar, completed=current.progress)

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
    """List jobs, newest first, as a table: id, model and status, then its progress and
    times when the terminal is wide enough (--json: everything)."""
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("status", status), ("model", model), ("cursor", cursor)):
        if value is not None:
            params[name] = str(value)
    with api(base_url, api_key) as client:
        page = call(client, "GET", "/v1/jobs", params=params)
    if as_json:
        print_json(page)
        return
    columns = (
        Col("id", whole=True),
        Col("model"),
        Col("status", whole=True),
        Col("progress", rank=1, justify="right"),
        Col("created", rank=2),
        Col("completed", rank=3),
    )
    rows = [
        (
            job["id"],
            job["model"],
            job["status"],
            progress_text(job["status"], job["progress"]),
            stamp(job["created_at"]),
            stamp(job["completed_at"]),
        )
        for job in page["data"]
    ]
    if rows:
        out.print(fit(columns, rows, width=out.width), highlight=False)
    else:
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

    with api(base_url, api_key) as client:
        job = call(client, "GET", f"/v1/jobs/{job_id}")
        events = call(client, "GET", f"/v1/jobs/{job_id}/events")["data"]
    if as_json:
        print_json({**job, "events": events})
    else:
        fields = Table(box=None, show_header=False)
        fields.add_column(style="bold", no_wrap=True)
        fields.add_column(overflow="fold")
        provider = job.get("provider") or {}
        rows = [
            ("id", job["id"]),
            ("model", job["model"]),
            ("status", job["status"]),
            ("progress", progress_text(job["status"], job["progress"])),
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
