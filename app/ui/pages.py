"""Rendering the dashboard's pages: one Jinja2 environment (autoescaping everything), the
filters its templates use, and the headers every page carries: a strict
Content-Security-Policy (our own scripts and styles only, nothing inline), no framing, no
caching of what a signed-in user saw."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_DIR = resources.files("app.ui") / "static"


def _age(moment: datetime | str | None, now: datetime | None = None) -> str:
    """How long ago, in the largest whole unit: "5s", "3m", "2h", "4d"."""
    if moment is None:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _credits(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}".rstrip("0").rstrip(".")


def _build() -> Environment:
    env = Environment(
        loader=PackageLoader("app.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["age"] = _age
    env.filters["pretty"] = _pretty
    env.filters["credits"] = _credits
    return env


ENVIRONMENT = _build()


def render(template: str, **context: Any) -> str:
    return ENVIRONMENT.get_template(template).render(**context)
