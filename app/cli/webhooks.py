"""`poyo-relay webhooks`: webhook endpoints, their delivery log, redelivery and recovery,
through the API (app/webhooks/router.py), as the caller's API key sees them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer

from app.cli.api import ApiKeyOption, BaseUrlOption, JsonOption, api, call, failure_of
from app.cli.base import cli, out, print_json
from app.cli.service import parse_age
from app.cli.tables import Col, fit

if TYPE_CHECKING:
    import httpx
    from rich.table import Table

webhooks_cli = typer.Typer(
    help="Outgoing webhooks: endpoints, their deliveries, redelivery.", no_args_is_help=True
)
cli.add_typer(webhooks_cli, name="webhooks")

endpoints_cli = typer.Typer(
    help="The endpoints webhooks go to; without a command, list them.",
    invoke_without_command=True,
)
webhooks_cli.add_typer(endpoints_cli, name="endpoints")

ENDPOINTS = "/v1/webhook_endpoints"

EndpointIdArgument = Annotated[
    str, typer.Argument(metavar="ID", help="An endpoint id (ep_…).", show_default=False)
]


def _one(endpoint_id: str, action: str = "") -> str:
    return f"{ENDPOINTS}/{quote(endpoint_id, safe='')}{action}"


def _send(client: httpx.Client, method: str, path: str, **kwargs: Any) -> None:
    """A request answered `204 No Content`, else the API's error (as `call` reports it)."""
    response = client.request(method, path, **kwargs)
    if response.status_code != 204:
        raise failure_of(response)


def _events(endpoint: dict[str, Any]) -> str:
    return ", ".join(endpoint["event_types"]) or "all job events"


def _grid(*headers: str, gap: int = 2) -> Table:
    from rich.table import Table

    return Table(*headers, box=None, padding=(0, gap, 0, 0), pad_edge=False)


# ---- endpoints ---------------------------------------------------------------------------


@endpoints_cli.callback()
def endpoints_default(ctx: typer.Context) -> None:
    """The endpoints webhooks go to; without a command, list them (`endpoints list`)."""
    if ctx.invoked_subcommand is None:
        endpoints_list(limit=100, cursor=None, base_url=None, api_key=None, as_json=False)


@endpoints_cli.command("list")
def endpoints_list(
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, in id order.")] = 100,
    cursor: Annotated[str | None, typer.Option(help="Continue after an earlier page.")] = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the endpoints: id, whether enabled, URL, and under it their events, description,
    and why one is disabled or since when it fails."""
    from rich.text import Text

    params: dict[str, Any] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    with api(base_url, api_key) as client:
        page = call(client, "GET", ENDPOINTS, params=params)
    if as_json:
        print_json(page)
        return
    # id and enabled are never cut; the URL column takes the rest of the width and folds a
    # long URL (whole, over lines) rather than cutting it.
    columns = (Col("id", whole=True), Col("enabled", whole=True), Col("url", rest="fold"))
    rows = []
    for endpoint in page["data"]:
        cell = Text(endpoint["url"])
        notes = [f"events: {_events(endpoint)}"]
        if endpoint["description"]:
            notes.append(endpoint["description"])
        if endpoint["disabled_reason"]:
            notes.append(f"disabled: {endpoint['disabled_reason']}")
        if endpoint["failing_since"]:
            notes.append(f"failing since {endpoint['failing_since']}")
        cell.append("\n" + " · ".join(notes), style="dim")
        rows.append((endpoint["id"], "yes" if endpoint["enabled"] else "no", cell))
    table = fit(columns, rows, width=out.width)
    if page["data"]:
        out.print(table)
    else:
        out.print("no webhook endpoints: add one with `poyo-relay webhooks endpoints add URL`")
    if page.get("next_cursor"):
        out.print(f"more: --cursor {page['next_cursor']}", highlight=False)


@endpoints_cli.command("show")
def endpoints_show(
    endpoint_id: EndpointIdArgument,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an endpoint (never its secret: `endpoints secret ID`)."""
    with api(base_url, api_key) as client:
        endpoint = call(client, "GET", _one(endpoint_id))
    if as_json:
        print_json(endpoint)
        return
    _show(endpoint)


def _show(endpoint: dict[str, Any]) -> None:
    fields = _grid()
    fields.show_header = False
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    rows = [
        ("id", endpoint["id"]),
        ("url", endpoint["url"]),
        ("enabled", "yes" if endpoint["enabled"] else "no"),
        ("events", _events(endpoint)),
        ("description", endpoint["description"]),
        ("disabled", endpoint["disabled_reason"] or ""),
        ("failing since", endpoint["failing_since"] or ""),
        ("created", endpoint["created_at"]),
        ("updated", endpoint["updated_at"]),
    ]
    for name, value in rows:
        if value:
            fields.add_row(name, value)
    out.print(fields, highlight=False, markup=False)


@endpoints_cli.command("add")
def endpoints_add(
    url: Annotated[str, typer.Argument(help="Where to POST the webhooks (https://…).")],
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            "-e",
            metavar="TYPE",
            help="Send only this job event (repeat for more): job.created, job.queued, "
            "job.running, job.progress, job.succeeded, job.failed, job.archived. "
            "Default: all of them.",
            show_default=False,
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="A note for people.")] = "",
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Register it disabled (enable it later).")
    ] = False,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register an endpoint and print its signing secret (`whsec_…`) as the last word.

    `endpoints secret ID` shows the secret again; `endpoints rotate ID` replaces it.
    """
    body = {
        "url": url,
        "event_types": list(event or []),
        "description": description,
        "enabled": not disabled,
    }
    with api(base_url, api_key) as client:
        endpoint = call(client, "POST", ENDPOINTS, json=body, ok=(201,))
    if as_json:
        print_json(endpoint)
        return
    state = "" if endpoint["enabled"] else ", disabled"
    # Plain print: the secret must not be wrapped or styled, it is meant to be copied.
    print(
        f"Created endpoint {endpoint['id']} for {endpoint['url']} ({_events(endpoint)}{state}); "
        f"its signing secret: {endpoint['secret']}"
    )


def _set_enabled(
    endpoint_id: str, enabled: bool, *, base_url: str | None, api_key: str | None, as_json: bool
) -> None:
    with api(base_url, api_key) as client:
        endpoint = call(client, "PATCH", _one(endpoint_id), json={"enabled": enabled})
    if as_json:
        print_json(endpoint)
        return
    state = "enabled" if enabled else "disabled"
    out.print(f"endpoint {endpoint['id']} is {state}", highlight=False, soft_wrap=True)


@endpoints_cli.command("disable")
def endpoints_disable(
    endpoint_id: EndpointIdArgument,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop sending to an endpoint: what it is owed is given up, and it hears of no new event
    until enabled again (`recover` then resends what was given up)."""
    _set_enabled(endpoint_id, False, base_url=base_url, api_key=api_key, as_json=as_json)


@endpoints_cli.command("enable")
def endpoints_enable(
    endpoint_id: EndpointIdArgument,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send to an endpoint again (also one the service disabled: 410 Gone, failing too long)."""
    _set_enabled(endpoint_id, True, base_url=base_url, api_key=api_key, as_json=as_json)


@endpoints_cli.command("delete")
def endpoints_delete(
    endpoint_id: EndpointIdArgument,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Remove an endpoint, with its deliveries and their log; effective at once."""
    with api(base_url, api_key) as client:
        _send(client, "DELETE", _one(endpoint_id))
    out.print(f"deleted endpoint {endpoint_id}", highlight=False, soft_wrap=True)


@endpoints_cli.command("secret")
def endpoints_secret(
    endpoint_id: EndpointIdArgument,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the endpoint's signing secret (the last word; during a rotation, the previous
    one too, on the line before)."""
    with api(base_url, api_key) as client:
        secret = call(client, "GET", _one(endpoint_id, "/secret"))
    _print_secret(secret, as_json=as_json)


@endpoints_cli.command("rotate")
def endpoints_rotate(
    endpoint_id: EndpointIdArgument,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give the endpoint a new signing secret and print it (the last word); the old one
    signs too for WEBHOOK_SECRET_OVERLAP_SECONDS, so receivers can switch without a gap."""
    with api(base_url, api_key) as client:
        secret = call(client, "POST", _one(endpoint_id, "/rotate_secret"))
    _print_secret(secret, as_json=as_json)


def _print_secret(secret: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json(secret)
        return
    # Plain print: secrets must not be wrapped or styled.
    if secret.get("previous_secret"):
        until = secret.get("previous_secret_expires_at")
        print(f"previous secret (also signs until {until}): {secret['previous_secret']}")
    print(f"secret: {secret['secret']}")


@endpoints_cli.command("test")
def endpoints_test(
    endpoint_id: EndpointIdArgument,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send the endpoint a `webhook.test` message (queued; its attempts show in
    `webhooks deliveries ID`)."""
    with api(base_url, api_key) as client:
        resent = call(client, "POST", _one(endpoint_id, "/test"), ok=(202,))
    if as_json:
        print_json(resent)
        return
    [message_id] = resent["message_ids"]
    out.print(f"queued test message {message_id} to {endpoint_id}", highlight=False, soft_wrap=True)
    out.print(
        f"its attempts: poyo-relay webhooks deliveries {endpoint_id}",
        highlight=False,
        soft_wrap=True,
    )


# ---- the delivery log and resending --------------------------------------------------------


@webhooks_cli.command("deliveries")
def deliveries(
    endpoint_id: EndpointIdArgument,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue after an earlier page.")] = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """The endpoint's delivery attempts, newest first: when, which message, its event,
    which attempt, the answer's HTTP status (or why there was none), and how long it took."""
    params: dict[str, Any] = {"limit": limit}
    if cursor is not None:
        params["cursor"] = cursor
    with api(base_url, api_key) as client:
        page = call(client, "GET", _one(endpoint_id, "/deliveries"), params=params)
    if as_json:
        print_json(page)
        return
    if not page["data"]:
        out.print(f"no delivery attempts to {endpoint_id} yet", highlight=False, soft_wrap=True)
        return
    # One space between columns: time, message id and event stay whole at 80 columns; the
    # result folds (an error's text) rather than cutting them; the latency is left out first.
    columns = (
        Col("time (UTC)", whole=True),
        Col("message", whole=True),
        Col("event", whole=True),
        Col("try", justify="right"),
        Col("ms", rank=1, justify="right"),
        Col("result", rest="fold", min_width=6),
    )
    rows = []
    for attempt in page["data"]:
        result = str(attempt["http_status"] or "") or attempt["error"] or ""
        if attempt["trigger"] == "manual":
            result += " (redelivery)"
        rows.append(
            (
                _time(attempt["created_at"]),
                attempt["message_id"],
                attempt["event_type"],
                str(attempt["attempt"]),
                str(attempt["latency_ms"]),
                result,
            )
        )
    table = fit(columns, rows, width=out.width, gap=1)
    out.print(table, highlight=False, markup=False)
    if page.get("next_cursor"):
        out.print(f"more: --cursor {page['next_cursor']}", highlight=False)


def _time(stamp: str) -> str:
    """`2026-11-30T12:00:00.123Z` as `2026-11-30 12:00:00`."""
    return stamp.replace("T", " ")[:19]


@webhooks_cli.command("redeliver")
def redeliver(
    message_id: Annotated[
        str,
        typer.Argument(metavar="MESSAGE_ID", help="A message id (msg_…, as in `deliveries`)."),
    ],
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint", metavar="ID", help="Only to this endpoint. Default: all it went to."
        ),
    ] = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send a message again, once, with the same webhook-id, to its enabled endpoints (or
    the one named)."""
    params = {"endpoint_id": endpoint} if endpoint is not None else {}
    with api(base_url, api_key) as client:
        resent = call(
            client,
            "POST",
            f"/v1/webhook_messages/{quote(message_id, safe='')}/redeliver",
            params=params,
            ok=(202,),
        )
    if as_json:
        print_json(resent)
        return
    out.print(
        f"queued {message_id} again: {_deliveries(resent['deliveries'])}",
        highlight=False,
        soft_wrap=True,
    )


def parse_since(text: str) -> datetime:
    """An RFC 3339 time with its zone (`2026-11-30T12:00:00Z`), or an age (`2h`: two hours
    ago)."""
    from app.timeutil import utcnow

    try:
        return utcnow() - parse_age(text)
    except typer.BadParameter:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a time such as 2026-11-30T12:00:00Z nor an age such as 2h"
        ) from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"{text!r} has no time zone: add Z (UTC) or an offset")
    return moment.astimezone(UTC)


@webhooks_cli.command("recover")
def recover(
    endpoint_id: EndpointIdArgument,
    since: Annotated[
        datetime,
        typer.Option(
            "--since",
            parser=parse_since,
            metavar="TIME",
            help="Messages since then: 2026-11-30T12:00:00Z, or an age such as 2h or 3d.",
            show_default=False,
        ),
    ],
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send an enabled endpoint, once each, every message that failed to reach it since
    a time (after an outage, or once it is enabled again)."""
    from app.timeutil import isoformat_z

    params = {"since": isoformat_z(since)}
    with api(base_url, api_key) as client:
        resent = call(client, "POST", _one(endpoint_id, "/recover"), params=params, ok=(202,))
    if as_json:
        print_json(resent)
        return
    out.print(
        f"queued {_deliveries(resent['deliveries'])} to {endpoint_id} "
        f"(failed since {params['since']})",
        highlight=False,
        soft_wrap=True,
    )


def _deliveries(count: int) -> str:
    return f"{count} delivery" if count == 1 else f"{count} deliveries"
