"""The family rules (app/catalog/rules.py): what a model's description says and its schema
cannot express. Each rule has a valid and an invalid input (tests/data/family_rules.json,
taken from the descriptions they come from); the invalid one is refused with that rule
alone, pointing at its field, and accepted once the rule is removed: the test would fail
without the rule."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.catalog import rules
from app.catalog.compiled import Catalog
from app.catalog.document import load_snapshot
from tests.conftest import Service
from tests.stand_in import ProviderStandIn
from tests.support import REPO_ROOT

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "family_rules.json").read_text()
)
CATALOG = Catalog(load_snapshot())
BY_NAME = {rule.name: rule for rule in rules.RULES}
FAMILIES = {"Sora 2", "Veo 3.1", "Kling", "Seedance", "Hailuo", "Nano Banana", "Seedream",
            "GPT Image", "Flux", "Music"}  # fmt: skip


def case_id(case: dict[str, Any]) -> str:
    return f"{case['rule']}-{case['model']}"


def without(name: str) -> Catalog:
    """The catalog with every rule but `name`."""
    catalog = copy.copy(CATALOG)
    catalog.rules = [rule for rule in rules.RULES if rule.name != name]
    return catalog


def test_every_rule_has_cases_and_every_family_asked_for_has_rules() -> None:
    assert {case["rule"] for case in CASES} == set(BY_NAME)
    assert {rule.family for rule in rules.RULES} >= FAMILIES
    assert len(BY_NAME) == len(rules.RULES), "two rules share a name"


def test_every_rule_is_documented_with_its_field() -> None:
    documented = (REPO_ROOT / "docs" / "CATALOG.md").read_text()
    for rule in rules.RULES:
        assert f"| `{rule.name}` |" in documented, rule.name
        assert f"| `{rule.field}` | {rule.message} |" in documented, rule.name


def test_every_rule_names_generate_models_of_the_catalog_and_a_field_they_have() -> None:
    for rule in rules.RULES:
        assert rule.models <= CATALOG.models.keys(), rule.name
        for model in rule.models:
            properties = CATALOG.models[model].schema["properties"]
            assert rule.field in properties, (rule.name, model, rule.field)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_rule_refuses_its_invalid_input_and_only_its_rule_does(case: dict[str, Any]) -> None:
    rule = BY_NAME[case["rule"]]
    assert case["model"] in rule.models
    assert CATALOG.problems(case["model"], case["valid"]) == []
    problems = CATALOG.problems(case["model"], case["invalid"])
    assert problems == [
        {"loc": ["body", "input", rule.field], "msg": rule.message, "type": f"rule:{rule.name}"}
    ]
    # Without the rule, the schema alone lets the input through: the rule is what refuses it.
    assert without(rule.name).problems(case["model"], case["invalid"]) == []


async def test_rules_refuse_over_http_before_anything_is_sent(
    relay: Service, provider: ProviderStandIn
) -> None:
    for case in CASES:
        response = await relay.client.create_job({"model": case["model"], "input": case["invalid"]})
        assert response.status_code == 422, case_id(case)
        [detail] = response.json()["error"]["details"]
        assert detail["type"] == f"rule:{case['rule']}"
    assert provider.calls == []
    for case in CASES:
        response = await relay.client.create_job({"model": case["model"], "input": case["valid"]})
        assert response.status_code == 201, (case_id(case), response.text)
    assert [call.json()["input"] for call in provider.submits()] == [c["valid"] for c in CASES]
