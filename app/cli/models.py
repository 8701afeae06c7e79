"""`poyo-relay models`: the models the service accepts, as its API lists them."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer

from app.cli.api import ApiKeyOption, BaseUrlOption, JsonOption, api, call
from app.cli.base import cli, out, print_json
from app.cli.tables import Col, fit

models_cli = typer.Typer(help="The models jobs can use (PoYo's catalog).", no_args_is_help=True)
cli.add_typer(models_cli, name="models")


@models_cli.command("list")
def models_list(
    category: Annotated[
        str | None, typer.Option(help="Only this category: video, image, audio, 3d, …")
    ] = None,
    search: Annotated[
        str | None, typer.Option(help="Only models with these words in id or description.")
    ] = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the models, with their category and price (cut short when the terminal is
    narrow; `models show ID` has the whole rule)."""
    params = {
        name: value for name, value in (("category", category), ("q", search)) if value is not None
    }
    with api(base_url, api_key) as client:
        page = call(client, "GET", "/v1/models", params=params)
    if as_json:
        print_json(page)
        return
    columns = (Col("id", whole=True), Col("category"), Col("price", rank=1, rest="ellipsis"))
    rows = [
        (model["id"], model["category"], price_summary(model["billing"])[0])
        for model in page["data"]
    ]
    if rows:
        out.print(fit(columns, rows, width=out.width), highlight=False, markup=False)
    out.print(f"{len(page['data'])} models (catalog {page['catalog_version']})", highlight=False)


@models_cli.command("show")
def models_show(
    model_id: Annotated[str, typer.Argument(metavar="ID", help="A model id, e.g. kling-3.0/pro.")],
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a model: its input fields (type, default, allowed values), an example, its price."""
    from rich.table import Table
    from rich.text import Text

    with api(base_url, api_key) as client:
        model = call(client, "GET", "/v1/models/" + quote(model_id, safe="/"))
    if as_json:
        print_json(model)
        return
    out.print(f"[bold]{model['id']}[/bold] ({model['category']})", highlight=False)
    if model["description"]:
        out.print(model["description"], highlight=False, markup=False)
    out.print()
    schema = model["input_schema"]
    required = set(schema.get("required", []))
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for name, field in (schema.get("properties") or {}).items():
        facts = [type_of(field)]
        if name in required:
            facts.append("required")
        if "default" in field:
            facts.append(f"default {_json(field['default'])}")
        if allowed(field):
            facts.append(allowed(field))
        details = Text(", ".join(facts), style="bold")
        if field.get("description"):
            details.append("\n" + str(field["description"])[:300], style="default")
        table.add_row(Text(name), details)
    out.print("input fields:", highlight=False)
    out.print(table)
    if model["example"] is not None:
        out.print("example input:", highlight=False)
        print(orjson.dumps(model["example"], option=orjson.OPT_INDENT_2).decode())
    out.print("price: " + "; ".join(price_summary(model["billing"])), highlight=False, markup=False)
    out.print(f"catalog {model['catalog_version']}", highlight=False)


def type_of(field: dict[str, Any]) -> str:
    kind = field.get("type")
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    if kind == "array" and isinstance(field.get("items"), dict):
        return f"array of {type_of(field['items'])}"
    if kind is None:
        branches = field.get("oneOf") or field.get("anyOf")
        if isinstance(branches, list):
            return " | ".join(type_of(b) for b in branches if isinstance(b, dict))
        return "any" if "enum" not in field else "enum"
    return str(kind) + (" (http(s) URL)" if field.get("format") == "uri" else "")


def allowed(field: dict[str, Any]) -> str:
    """The constraints of a field, in a few words."""
    parts = []
    if isinstance(field.get("enum"), list):
        parts.append(" | ".join(_json(value) for value in field["enum"]))
    for low, high, unit in (
        ("minimum", "maximum", ""),
        ("minLength", "maxLength", " characters"),
        ("minItems", "maxItems", " items"),
    ):
        if low in field or high in field:
            parts.append(f"{field.get(low, '')}..{field.get(high, '')}{unit}")
    items = field.get("items")
    if isinstance(items, dict) and allowed(items):
        parts.append(f"each: {allowed(items)}")
    return "; ".join(parts)


def price_summary(billing: dict[str, Any] | None) -> list[str]:
    """PoYo's billing rule in words: the first line fits a table cell."""
    if not billing:
        return ["not published"]
    unit = billing.get("unit") or "request"
    credits = billing.get("credits")
    if credits is not None and not billing.get("formula"):
        return [f"{credits:g} credits per {unit}"]
    rule = billing.get("formula") or "by the tables below"
    lines = [f"{billing.get('type') or 'priced'}: {rule} credits per {unit}"]
    for key, value in billing.items():
        if key not in ("type", "unit", "formula", "credits") and value not in (None, {}, []):
            lines.append(f"{key} {_json(value)}")
    return lines


def _json(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
