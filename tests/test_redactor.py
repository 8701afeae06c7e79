"""The log redactor: known secrets and credential-shaped strings never reach a log line."""

from __future__ import annotations

import pytest

from app.logs import REDACTED, SecretRedactor

API_KEY = "prk_01m8a7td55vt9ehp28mw7nekqk_9m2LMX8flBTIPBArklKKzr8_6eHToI-RkoqrjMnBnbY"
CALLBACK = "/v1/callbacks/poyo/job_01m8a7td55vt9ehp28mw7nekqk/Zx8_credential-Token"


@pytest.fixture
def redactor() -> SecretRedactor:
    redactor = SecretRedactor()
    redactor.register(["provider-secret-value", "short"])
    return redactor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nothing to hide here", "nothing to hide here"),
        ("key=provider-secret-value;", f"key={REDACTED};"),
        (f"got {API_KEY} from the client", f"got {REDACTED} from the client"),
        (
            f"POST {CALLBACK} 200",
            f"POST /v1/callbacks/poyo/job_01m8a7td55vt9ehp28mw7nekqk/{REDACTED} 200",
        ),
        ("Authorization: Bearer abc.def-ghi_jkl", f"Authorization: Bearer {REDACTED}"),
        ("authorization: BEARER abcdefghijkl", f"authorization: BEARER {REDACTED}"),
        ("a short word stays", "a short word stays"),  # too short to be a registered secret
    ],
)
def test_scrub(redactor: SecretRedactor, text: str, expected: str) -> None:
    assert redactor.scrub(text) == expected


def test_nested_values_are_scrubbed_but_plain_keys_left_alone(redactor: SecretRedactor) -> None:
    event = {
        "event": "request",
        "timestamp": "2026-11-25T23:59:59Z",
        "headers": {"authorization": f"Bearer {API_KEY}"},
        "urls": [CALLBACK, "https://example.com/ok"],
        "count": 3,
    }
    cleaned = redactor(None, "info", event)
    assert cleaned["timestamp"] == event["timestamp"]
    assert cleaned["count"] == 3
    assert API_KEY not in str(cleaned)
    assert "credential-Token" not in str(cleaned)
    assert cleaned["urls"][1] == "https://example.com/ok"


def test_secrets_registered_later_are_caught(redactor: SecretRedactor) -> None:
    assert redactor.scrub("late-secret-123") == "late-secret-123"
    redactor.register(["late-secret-123"])
    assert redactor.scrub("x late-secret-123 y") == f"x {REDACTED} y"
