"""docs/API.md, the client contract, agrees with the code it describes: every error type
(app/errors.py), every event type (app/jobs/events.py) and every endpoint of the OpenAPI
document is in it, and nothing it lists is missing from them. The document's browsable
pages, /docs and /redoc, load nothing from another host (they work offline)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import FastAPI

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


# ---- /docs and /redoc, offline ---------------------------------------------------------

DOC_PAGES = ("/docs", "/redoc")
# What each kind of asset is served as, and the least a real one weighs (a stub, an error
# page or an empty file is lighter).
ASSET_KINDS = {
    ".js": ({"text/javascript", "application/javascript"}, 100_000),
    ".css": ({"text/css"}, 10_000),
    ".png": ({"image/png"}, 1_000),
}


class _Links(HTMLParser):
    """Every URL-valued attribute of a page, and the text of its inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and (name in {"src", "href", "action"} or name.endswith("url")):
                self.urls.append(value)
        self._inside = tag if tag in {"script", "style"} else None

    def handle_endtag(self, tag: str) -> None:
        self._inside = None

    def handle_data(self, data: str) -> None:
        if self._inside is not None:
            self.inline.append(data)


def referenced_urls(html: str) -> list[str]:
    """Every URL a page loads or links to: attributes (`src`, `href`, ReDoc's `spec-url`),
    strings of its inline scripts that look like paths or URLs, and CSS `url(...)`."""
    links = _Links()
    links.feed(html)
    urls = list(links.urls)
    for text in links.inline:
        urls += re.findall(r"[\"'`]((?:[a-z][a-z0-9+.-]*:)?/[^\"'`\s]*)[\"'`]", text, re.I)
        urls += [u.strip("\"' ") for u in re.findall(r"url\(([^)]*)\)", text, re.I)]
    return urls


def is_same_origin_path(url: str) -> bool:
    """`/docs/assets/x.js`, not `https://cdn…/x.js`, `//cdn…/x.js` nor `data:`/`javascript:`."""
    return url.startswith("/") and not url.startswith("//") and ":" not in url.split("?")[0]


@pytest.fixture
def docs_app() -> FastAPI:
    return create_app(make_settings(database_url="sqlite+aiosqlite:///unused.db"))


async def _get(app: FastAPI, path: str, root_path: str = "") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        return await http.get(root_path + path)


@pytest.mark.parametrize("page", DOC_PAGES)
async def test_doc_pages_load_everything_from_this_service(docs_app: FastAPI, page: str) -> None:
    response = await _get(docs_app, page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # No absolute or protocol-relative URL anywhere in the page (Google Fonts, a CDN, …).
    assert not re.search(r"[a-z][a-z0-9+.-]*://|[\"'(=]\s*//", html, re.I), html
    # The browser may fetch nothing from another host, whatever the bundles ask for
    # (ReDoc's footer logo is on a CDN); Swagger UI's inline script must still run.
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    sources = {source for value in directives.values() for source in value.split()}
    assert sources <= {"'self'", "'unsafe-inline'", "'none'", "data:", "blob:"}, policy
    assert "'unsafe-inline'" in directives["script-src"].split()

    urls = referenced_urls(html)
    assert urls, html
    assert all(is_same_origin_path(url) for url in urls), urls
    assets = [url for url in urls if url.rsplit(".", 1)[-1] in {"js", "css", "png"}]
    expected = {"/docs": {".js", ".css", ".png"}, "/redoc": {".js", ".png"}}[page]
    assert {"." + url.rsplit(".", 1)[-1] for url in assets} == expected, urls
    for url in assets:
        asset = await _get(docs_app, url)
        types, least = ASSET_KINDS["." + url.rsplit(".", 1)[-1]]
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].split(";")[0] in types, (url, asset.headers)
        assert len(asset.content) >= least, url
        assert int(asset.headers["content-length"]) == len(asset.content)
    # The document itself, and Swagger UI's OAuth2 redirect page, which FastAPI served too.
    assert "/openapi.json" in urls
    assert (await _get(docs_app, "/openapi.json")).json()["info"]["title"] == "poyo-relay"
    if page == "/docs":
        assert "/docs/oauth2-redirect" in urls
        redirect = await _get(docs_app, "/docs/oauth2-redirect")
        assert redirect.status_code == 200
        assert redirect.headers["content-type"].startswith("text/html")


async def test_swagger_ui_asks_no_validator_elsewhere(docs_app: FastAPI) -> None:
    # Swagger UI would otherwise load a badge from validator.swagger.io, told our URL.
    html = (await _get(docs_app, "/docs")).text
    assert '"validatorUrl": null' in html


@pytest.mark.parametrize("page", DOC_PAGES)
async def test_doc_pages_behind_a_path_prefix(docs_app: FastAPI, page: str) -> None:
    """Served under a proxy's prefix (`--root-path /relay`), the pages link under it."""
    html = (await _get(docs_app, page, root_path="/relay")).text
    urls = referenced_urls(html)
    assert urls
    assert all(url.startswith("/relay/") for url in urls), urls
    for url in urls:
        if url.endswith((".js", ".css", ".png", ".json")):
            response = await _get(docs_app, url.removeprefix("/relay"), root_path="/relay")
            assert response.status_code == 200, url


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_every_reference_in_the_document_names_a_component(docs_app: FastAPI) -> None:
    # ReDoc stops at a reference it cannot resolve ("Invalid reference token: $defs"): the
    # whole page is an error, not only that schema.
    document = (await _get(docs_app, "/openapi.json")).json()
    components = document["components"]["schemas"]
    refs = _refs(document)
    assert refs, "the document uses references"
    prefix = "#/components/schemas/"
    assert [ref for ref in refs if not ref.startswith(prefix)] == []
    assert sorted({ref for ref in refs if ref.removeprefix(prefix) not in components}) == []
    assert [name for name, schema in components.items() if "$defs" in schema] == []
