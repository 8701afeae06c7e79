"""docs/API.md, the client contract, agrees with the code it describes: every error type
(app/errors.py), every event type (app/jobs/events.py) and every endpoint of the OpenAPI
document is in it, and nothing it lists is missing from them."""

from __future__ import annotations

import re

from app.errors import ERRORS
from app.jobs.events import EventType
from app.main import create_app
from tests.support import REPO_ROOT, make_settings

DOC = (REPO_ROOT / "docs" / "API.md").read_text()


def table_rows(heading: str) -> list[list[str]]:
    """The rows of the first table under `## heading`, as lists of cells."""
    section = DOC.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_every_error_type_is_documented_with_its_status() -> None:
    documented = {(int(row[0]), row[1].strip("`")) for row in table_rows("Errors")}
    assert documented == {(error.status_code, error.type) for error in ERRORS}


def test_every_event_type_is_documented() -> None:
    documented = {row[0].strip("`") for row in table_rows("Events")}
    assert documented == {event.value for event in EventType}


def shape(endpoint: str) -> str:
    """`GET /v1/jobs/{id}` and `GET /v1/jobs/{job_id}` name the same endpoint."""
    return re.sub(r"\{[^}]+\}", "{}", endpoint)


def test_every_endpoint_is_documented_and_exists() -> None:
    app = create_app(make_settings(database_url="sqlite+aiosqlite:///unused.db"))
    served = {
        shape(f"{method.upper()} {path}")
        for path, item in app.openapi()["paths"].items()
        for method in item
    }
    ours = DOC.split("\n## The provider\n", 1)[0]  # PoYo's endpoints are not ours
    documented = {
        shape(name) for name in re.findall(r"`((?:GET|HEAD|POST|PUT|PATCH|DELETE) /[^`?]*)", ours)
    }
    documented.discard("GET /openapi.json")  # the document itself
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
