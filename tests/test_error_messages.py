"""Errors that explain (issue 18): a value of the wrong JSON type says what it is and what
was expected; a body that is not JSON says where and why; a job's `webhook_url` that no
message could ever reach is refused when the job is created. Over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Service, ServiceFactory
from tests.stand_in import ProviderStandIn
from tests.support import IMAGE_JOB, TEXT_JOB


def _with_input(job: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**job, "input": {**job["input"], **fields}}


async def _refused(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    """The 422's error, which has one detail."""
    response = await service.client.create_job(body)
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert len(error["details"]) == 1, error
    return error


async def _no_jobs(service: Service) -> None:
    listed = await service.client.get("/v1/jobs")
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"] == []


# ---- a value of the wrong JSON type ----------------------------------------------------------


async def test_a_string_for_a_number_in_an_enum_says_it_is_a_string(service: Service) -> None:
    error = await _refused(service, _with_input(IMAGE_JOB, duration="5"))
    expected = '"5" is a string; expected a number (integer): 5 or 10'
    assert error["details"] == [
        {"loc": ["body", "input", "duration"], "msg": expected, "type": "type"}
    ]
    assert error["message"] == (
        f"invalid input for model wan2.5-image-to-video: input.duration: {expected}"
    )
    await _no_jobs(service)


async def test_wrong_types_say_what_was_sent_and_what_was_expected(service: Service) -> None:
    cases: list[tuple[dict[str, Any], list[str], str]] = [
        # A plain integer field.
        (
            _with_input(IMAGE_JOB, seed="225"),
            ["body", "input", "seed"],
            '"225" is a string; expected a number (integer)',
        ),
        (
            _with_input(IMAGE_JOB, seed=2.5),
            ["body", "input", "seed"],
            "2.5 is not a whole number; expected a number (integer)",
        ),
        # A boolean sent as a string.
        (
            {
                "model": "wan2.6-text-to-video",
                "input": {"prompt": "a lighthouse at dusk", "multi_shots": "true"},
            },
            ["body", "input", "multi_shots"],
            '"true" is a string; expected a boolean (true or false)',
        ),
        # A number for a string, and for a string enum.
        (
            _with_input(IMAGE_JOB, prompt=5),
            ["body", "input", "prompt"],
            "5 is a number; expected a string",
        ),
        (
            _with_input(IMAGE_JOB, resolution=720),
            ["body", "input", "resolution"],
            '720 is a number; expected a string: "480p", "720p" or "1080p"',
        ),
        # Strings that do not spell a JSON value are not quoted back (they may be secret).
        (
            _with_input(IMAGE_JOB, duration="five seconds"),
            ["body", "input", "duration"],
            "is a string; expected a number (integer): 5 or 10",
        ),
        (
            _with_input(IMAGE_JOB, image_urls="https://example.com/fox.jpg"),
            ["body", "input", "image_urls"],
            "is a string; expected an array",
        ),
        (
            _with_input(IMAGE_JOB, prompt=None),
            ["body", "input", "prompt"],
            "is null; expected a string",
        ),
        # The job's own fields.
        (
            {**TEXT_JOB, "input": "a lighthouse"},
            ["body", "input"],
            "is a string; expected an object",
        ),
        (
            {**TEXT_JOB, "webhook_url": 5},
            ["body", "webhook_url"],
            "5 is a number; expected a string",
        ),
        ({**TEXT_JOB, "model": True}, ["body", "model"], "true is a boolean; expected a string"),
    ]
    for body, loc, message in cases:
        error = await _refused(service, body)
        [detail] = error["details"]
        assert (detail["loc"], detail["msg"]) == (loc, message), body
    # An estimate checks its body the same way.
    response = await service.client.http.post(
        "/v1/estimates", json=_with_input(IMAGE_JOB, duration="5"), headers=service.client.headers()
    )
    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert detail["msg"] == '"5" is a string; expected a number (integer): 5 or 10'
    await _no_jobs(service)


# ---- malformed JSON --------------------------------------------------------------------------


async def _post_raw(
    service: Service, method: str, path: str, content: str
) -> tuple[int, dict[str, Any]]:
    headers = service.client.headers({"Content-Type": "application/json"})
    response = await service.client.http.request(
        method, path, content=content.encode(), headers=headers
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/jobs"),
        ("POST", "/v1/estimates"),
        ("POST", "/v1/webhook_endpoints"),
        ("PATCH", "/v1/webhook_endpoints/ep_01jcz3q9m4b8x2v7k5n0r6t1yw"),
        ("PUT", "/v1/budgets/tenant-a"),
    ],
)
async def test_malformed_json_says_where_and_why(service: Service, method: str, path: str) -> None:
    status, body = await _post_raw(
        service, method, path, '{"model": "x", "input": {"prompt": "a",}}'
    )
    assert status == 422, body
    message = (
        "Malformed JSON at line 1, column 40: Expecting property name enclosed in double quotes"
    )
    assert body == {
        "error": {
            "type": "invalid_request",
            "message": message,
            "details": [{"loc": ["body"], "msg": message, "type": "json_invalid"}],
        }
    }


async def test_malformed_json_counts_lines_and_characters(service: Service) -> None:
    # Line 4, after a string with non-ASCII characters: columns count characters, not bytes.
    content = (
        "{\n"
        '  "model": "wan2.5-text-to-video",\n'
        '  "input": {\n'
        '    "prompt": "un café crème" "seed": 7\n'
        "  }\n"
        "}\n"
    )
    status, body = await _post_raw(service, "POST", "/v1/jobs", content)
    assert status == 422, body
    assert (
        body["error"]["message"] == "Malformed JSON at line 4, column 31: Expecting ',' delimiter"
    )
    for content, message in [
        ("{", "line 1, column 2: Expecting property name enclosed in double quotes"),
        ('{"model": tru}', "line 1, column 11: Expecting value"),
        ('{"model": "x"}\n\n x', "line 3, column 2: Extra data"),
    ]:
        status, body = await _post_raw(service, "POST", "/v1/jobs", content)
        assert status == 422, body
        assert body["error"]["details"][0]["msg"] == f"Malformed JSON at {message}"
    await _no_jobs(service)


# ---- a webhook_url no message could reach ------------------------------------------------------

PRIVATE_URLS = [
    "http://127.0.0.1:9/x",
    "http://localhost:9/x",
    "http://[::1]:9/x",
    "http://10.0.0.1/hook",  # a literal address: judged without resolving, never connected to
]
NOT_PUBLIC = ("the URL's address is not public", "the host resolves to a non-public address")


async def test_a_private_webhook_url_is_refused_when_the_job_is_created(
    start_service: ServiceFactory, provider: ProviderStandIn
) -> None:
    service = await start_service(poyo_base_url=provider.url, poyo_api_key=provider.api_key)
    for url in PRIVATE_URLS:
        error = await _refused(service, {**IMAGE_JOB, "webhook_url": url})
        [detail] = error["details"]
        assert detail["loc"] == ["body", "webhook_url"], url
        assert detail["type"] == "forbidden_target"
        assert detail["msg"].startswith(NOT_PUBLIC), (url, detail)
        assert "WEBHOOK_ALLOW_PRIVATE=true allows private ones" in detail["msg"]
        assert error["message"].startswith("webhook_url: "), error
    # With an Idempotency-Key too: the key is not taken, so the request can be corrected.
    refused = await service.client.create_job(
        {**IMAGE_JOB, "webhook_url": PRIVATE_URLS[0]}, **{"Idempotency-Key": "issue-18"}
    )
    assert refused.status_code == 422, refused.text
    await _no_jobs(service)
    assert provider.submits() == []
    created = await service.client.create_job(IMAGE_JOB, **{"Idempotency-Key": "issue-18"})
    assert created.status_code == 201, created.text


async def test_a_private_webhook_url_is_accepted_when_private_targets_are(
    start_service: ServiceFactory, provider: ProviderStandIn
) -> None:
    service = await start_service(
        poyo_base_url=provider.url, poyo_api_key=provider.api_key, webhook_allow_private=True
    )
    for url in PRIVATE_URLS[:3]:  # loopback only: its message may be sent
        response = await service.client.create_job({**IMAGE_JOB, "webhook_url": url})
        assert response.status_code == 201, response.text
        assert response.json()["webhook_url"] == url


async def test_an_estimate_does_not_judge_the_webhook_url(service: Service) -> None:
    response = await service.client.http.post(
        "/v1/estimates",
        json={**IMAGE_JOB, "webhook_url": PRIVATE_URLS[0]},
        headers=service.client.headers(),
    )
    assert response.status_code == 200, response.text
