"""Every generate model of the catalog, over HTTP: inputs derived from the catalog itself
(tests/derive.py) go to POST /v1/jobs in front of a provider stand-in that records what
reaches PoYo.

- valid (the example, each allowed enum value in turn): 201 and PoYo receives exactly that
  input, or 422 naming the family rule the combination breaks (app/catalog/rules.py);
- invalid (a required field removed, an enum broken, a length, bound or array size passed,
  the wrong type, an unknown field): 422 pointing at that field; nothing stored or sent.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import httpx

from app.catalog.compiled import Catalog
from app.catalog.document import load_snapshot
from tests.conftest import Service
from tests.derive import Case, every_case
from tests.stand_in import ProviderStandIn, callback_job_id

CATALOG = Catalog(load_snapshot())
VALID, INVALID = every_case(CATALOG)
CONCURRENCY = 16


def test_the_derivation_covers_every_model_and_every_kind_of_mistake() -> None:
    assert len(CATALOG.models) == 152
    assert {case.model for case in VALID} == set(CATALOG.models)
    kinds = collections.Counter(case.kind for case in INVALID)
    assert set(kinds) == {"required", "enum-broken", "bound", "type", "unknown"}
    # every model: its example, and an unknown field refused
    assert collections.Counter(c.model for c in VALID if c.kind == "example") == dict.fromkeys(
        CATALOG.models, 1
    )
    assert {c.model for c in INVALID if c.kind == "unknown"} == set(CATALOG.models)
    required = sum(len(spec.schema.get("required", [])) for spec in CATALOG.models.values())
    assert kinds["required"] == required


async def _post_all(relay: Service, cases: list[Case]) -> list[tuple[Case, httpx.Response]]:
    client = relay.client
    gate = asyncio.Semaphore(CONCURRENCY)

    async def post(case: Case) -> tuple[Case, httpx.Response]:
        async with gate:
            body = {"model": case.model, "input": case.input}
            return case, await client.create_job(body)

    return await asyncio.gather(*(post(case) for case in cases))


def _rule_refusal(response: httpx.Response) -> bool:
    details = response.json()["error"]["details"]
    return bool(details) and all(d["type"].startswith("rule:") for d in details)


async def test_every_model_accepts_what_its_catalog_allows_and_sends_it_unchanged(
    relay: Service, provider: ProviderStandIn
) -> None:
    answers = await _post_all(relay, VALID)
    wrong: list[tuple[str, str, int, str]] = []
    accepted: dict[str, tuple[Case, Any]] = {}
    by_rule = 0
    for case, response in answers:
        if response.status_code == 201:
            accepted[response.json()["id"]] = (case, response.json())
        elif response.status_code == 422 and _rule_refusal(response):
            by_rule += 1
        else:
            wrong.append((case.model, case.label, response.status_code, response.text[:300]))
    assert wrong == []
    assert len(accepted) + by_rule == len(VALID)
    assert len(accepted) > 0.9 * len(VALID)

    submits = {callback_job_id(call.json()["callback_url"]): call for call in provider.submits()}
    assert set(submits) == set(accepted)
    for job_id, (case, job) in accepted.items():
        sent = submits[job_id].json()
        assert sent["model"] == case.model
        assert sent["input"] == case.input, case.label  # exactly that input, nothing added
        assert submits[job_id].headers["idempotency-key"] == job_id
        assert job["input"] == case.input
        assert job["catalog_version"] == CATALOG.version


async def test_every_model_refuses_each_broken_input_and_sends_nothing(
    relay: Service, provider: ProviderStandIn
) -> None:
    answers = await _post_all(relay, INVALID)
    wrong: list[tuple[str, str, object]] = []
    for case, response in answers:
        if response.status_code != 422:
            wrong.append((case.model, case.label, response.status_code))
            continue
        error = response.json()["error"]
        locs = [detail["loc"] for detail in error["details"]]
        if ["body", "input", case.field] not in [loc[:3] for loc in locs]:
            wrong.append((case.model, case.label, locs))
    assert wrong == []
    assert provider.calls == []
    assert (await relay.client.get("/v1/jobs")).json()["data"] == []
