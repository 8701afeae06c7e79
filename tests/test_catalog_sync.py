"""`poyo-relay catalog sync | import | status`, run as a process, against a loopback server
that serves PoYo's catalog endpoints (pages, cursors, ETag): what changed is shown, the
ETag saves a download, every replica follows the new catalog without a restart, and a
model PoYo dropped stays readable in history while new jobs for it get a 422."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.catalog.document import SNAPSHOT, version_of
from app.catalog.document import parse as parse_document
from tests.clirun import clean_env, run_cli
from tests.conftest import Service, ServiceFactory, Simulator
from tests.support import LiveServer, eventually

SNAPSHOT_DOCUMENT: dict[str, Any] = orjson.loads(SNAPSHOT.read_bytes())
DROPPED = "sora-2-official"
ADDED = "nano-banana-9"
CHANGED = "kling-3.0/pro"


@dataclass
class CatalogServer:
    """PoYo's public catalog API on loopback, serving `document`; it records each request."""

    document: dict[str, Any]
    requests: list[Request] = field(default_factory=list)
    server: LiveServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def etag(self) -> str:
        digest = hashlib.sha256(orjson.dumps(self.document["items"])).hexdigest()
        return f'W/"{digest[:16]}"'

    async def models(self, request: Request) -> Response:
        self.requests.append(request)
        if request.headers.get("if-none-match") == self.etag():
            return Response(status_code=304, headers={"ETag": self.etag()})
        limit = min(int(request.query_params.get("limit", "20")), 100)
        start = int(request.query_params.get("cursor") or 0)
        items = self.document["items"][start : start + limit]
        more = start + limit < len(self.document["items"])
        page = {
            "schema_version": self.document["schema_version"],
            "items": items,
            "next_cursor": str(start + limit) if more else None,
            "has_more": more,
        }
        return JSONResponse({"code": 200, "data": page}, headers={"ETag": self.etag()})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/catalog/models", self.models)])


def changed_document() -> dict[str, Any]:
    """The snapshot with one model dropped, one added and one field of a model changed."""
    document = copy.deepcopy(SNAPSHOT_DOCUMENT)
    items = [item for item in document["items"] if item["model_id"] != DROPPED]
    added = copy.deepcopy(next(i for i in items if i["model_id"] == "nano-banana"))
    added["model_id"] = ADDED
    items.append(added)
    kling = next(i for i in items if i["model_id"] == CHANGED)
    kling["input_schema"]["properties"]["duration"]["maximum"] = 20
    document["items"] = items
    return document


@pytest.fixture
async def catalog_server() -> AsyncIterator[CatalogServer]:
    stand_in = CatalogServer(document=changed_document())
    stand_in.server = await LiveServer().start(stand_in.app())
    yield stand_in
    await stand_in.server.stop()


def operator_env(database_url: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=database_url)


async def test_sync_pages_through_poyos_catalog_shows_what_changed_and_uses_the_etag(
    start_service: ServiceFactory, catalog_server: CatalogServer, tmp_path: Path
) -> None:
    service = await start_service(catalog_refresh_seconds=0.2)
    env = operator_env(service.settings.database_url)
    before = await service.client.create_job({"model": DROPPED, "input": sora_input()})
    assert before.status_code == 201, before.text
    status = await run_cli("catalog", "status", env=env, cwd=tmp_path)
    assert status.code == 0, status
    assert "source     snapshot" in status.stdout
    assert "152 generate, 25 chat" in status.stdout

    synced = await run_cli("catalog", "sync", "--url", catalog_server.url, env=env, cwd=tmp_path)
    assert synced.code == 0, synced
    new_version = version_of(parse_document(orjson.dumps(catalog_server.document)))
    assert f"catalog {new_version} is now in use" in synced.stdout
    assert f"1 added: {ADDED}" in synced.stdout
    assert f"1 removed: {DROPPED}" in synced.stdout
    assert f"{CHANGED}: input.duration" in synced.stdout
    # every page, by cursor, 100 at a time; no If-None-Match: the snapshot has no ETag
    pages = catalog_server.requests
    assert [r.query_params.get("cursor") for r in pages] == [None, "100"]
    assert {r.query_params["limit"] for r in pages} == {"100"}
    assert all("if-none-match" not in r.headers for r in pages)
    assert all("authorization" not in r.headers for r in pages)  # the catalog is public

    # The running service follows within CATALOG_REFRESH_SECONDS, without a restart.
    client = service.client
    await eventually(lambda: client.get(f"/v1/models/{ADDED}"), lambda r: r.status_code == 200)
    refused = await client.create_job({"model": DROPPED, "input": sora_input()})
    assert refused.status_code == 422
    assert "no longer offered" in refused.json()["error"]["message"]
    assert DROPPED in refused.json()["error"]["message"]
    old = await client.job(before.json()["id"])  # history stays readable
    assert old["model"] == DROPPED
    assert old["catalog_version"] != new_version
    longer_input = {"prompt": "p", "duration": 20, "sound": False, "multi_shots": False}
    longer = await client.create_job({"model": CHANGED, "input": longer_input})
    assert longer.status_code == 201, longer.text
    assert longer.json()["catalog_version"] == new_version

    # Unchanged: one request carrying the ETag, answered 304; nothing installed.
    catalog_server.requests.clear()
    again = await run_cli("catalog", "sync", "--url", catalog_server.url, env=env, cwd=tmp_path)
    assert again.code == 0, again
    assert "unchanged" in again.stdout
    [conditional] = catalog_server.requests
    assert conditional.headers["if-none-match"] == catalog_server.etag()
    status = await run_cli("catalog", "status", env=env, cwd=tmp_path)
    assert f"catalog {new_version}" in status.stdout
    assert f"etag       {catalog_server.etag()}" in status.stdout

    # PoYo changes again: the ETag no longer matches and the new catalog comes down.
    catalog_server.document = copy.deepcopy(SNAPSHOT_DOCUMENT)
    back = await run_cli("catalog", "sync", "--url", catalog_server.url, env=env, cwd=tmp_path)
    assert back.code == 0, back
    assert f"1 added: {DROPPED}" in back.stdout
    assert f"1 removed: {ADDED}" in back.stdout
    await eventually(
        lambda: client.create_job({"model": DROPPED, "input": sora_input()}),
        lambda r: r.status_code == 201,
    )


def sora_input() -> dict[str, Any]:
    return {"prompt": "a paper boat on a river", "duration": 20, "aspect_ratio": "16:9"}


async def test_every_replica_uses_the_catalog_imported_from_a_file(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    first = await start_service(catalog_refresh_seconds=0.2)
    second = await start_service(catalog_refresh_seconds=0.2)
    document = changed_document()
    path = tmp_path / "catalog.json"
    path.write_bytes(orjson.dumps(document))
    env = operator_env(first.settings.database_url)

    imported = await run_cli("catalog", "import", str(path), env=env, cwd=tmp_path)
    assert imported.code == 0, imported
    assert f"1 added: {ADDED}" in imported.stdout
    version = version_of(parse_document(path.read_bytes()))
    for replica in (first, second):
        listed = await eventually(
            lambda replica=replica: replica.client.get("/v1/models"),  # type: ignore[misc]
            lambda r: r.json()["catalog_version"] == version,
        )
        assert ADDED in {m["id"] for m in listed.json()["data"]}

    same = await run_cli("catalog", "import", str(path), env=env, cwd=tmp_path)
    assert same.code == 0, same
    assert "already in use; nothing changed" in same.stdout


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "not JSON"),
        (b'{"schema_version": "v1", "items": []}', "no generate model"),
        (b'{"items": [{"model_id": "x"}]}', "schema_version"),
        (orjson.dumps({"schema_version": "v1", "items": [{"model_id": "a b"}]}), "model_id"),
    ],
)
async def test_import_refuses_a_file_that_is_not_a_catalog_and_changes_nothing(
    database_url: str, tmp_path: Path, content: bytes, says: str
) -> None:
    env = operator_env(database_url)
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    result = await run_cli("catalog", "import", str(path), env=env, cwd=tmp_path)
    assert result.code == 2, result
    assert says in result.stderr
    missing = await run_cli("catalog", "import", str(tmp_path / "nope.json"), env=env, cwd=tmp_path)
    assert missing.code == 2, missing
    status = await run_cli("catalog", "status", env=env, cwd=tmp_path)
    assert "source     snapshot" in status.stdout


async def test_sync_failures_exit_1_and_keep_the_catalog_in_use(
    database_url: str, catalog_server: CatalogServer, tmp_path: Path
) -> None:
    env = operator_env(database_url)
    catalog_server.document = {"schema_version": "v2", "items": []}  # nothing to generate
    empty = await run_cli("catalog", "sync", "--url", catalog_server.url, env=env, cwd=tmp_path)
    assert empty.code == 1, empty
    assert "no generate model" in empty.stderr
    await catalog_server.server.stop()  # type: ignore[union-attr]
    gone = await run_cli("catalog", "sync", "--url", catalog_server.url, env=env, cwd=tmp_path)
    assert gone.code == 1, gone
    assert "could not read the catalog" in gone.stderr
    bad = await run_cli("catalog", "sync", "--url", "ftp://127.0.0.1/", env=env, cwd=tmp_path)
    assert bad.code == 2, bad
    status = await run_cli("catalog", "status", env=env, cwd=tmp_path)
    assert "source     snapshot" in status.stdout
    catalog_server.server = await LiveServer().start(catalog_server.app())


async def test_sync_from_the_simulator_finds_the_catalog_already_in_use(
    database_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    env = operator_env(database_url)
    result = await run_cli("catalog", "sync", "--url", simulator.url, env=env, cwd=tmp_path)
    assert result.code == 0, result
    assert "already in use; nothing changed" in result.stdout
    again = await run_cli("catalog", "sync", "--url", simulator.url, env=env, cwd=tmp_path)
    assert "unchanged" in again.stdout  # the simulator honours If-None-Match too


async def test_a_job_records_the_catalog_version_it_was_validated_against(
    service: Service,
) -> None:
    created = await service.client.create_job(
        {"model": "nano-banana", "input": {"prompt": "a lighthouse at dawn"}}
    )
    assert created.status_code == 201, created.text
    listed = (await service.client.get("/v1/models")).json()
    assert created.json()["catalog_version"] == listed["catalog_version"]
