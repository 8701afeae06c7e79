"""Exact input validation for both models (docs/API.md), in the catalog and over HTTP.

Bad input is refused with 422 and the error envelope before anything is stored or sent
to the provider, so it never costs credits.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from app.catalog.models import CATALOG
from app.errors import InvalidRequest
from tests.conftest import Service
from tests.stand_in import ProviderStandIn

I2V = "wan2.5-image-to-video"
T2V = "wan2.5-text-to-video"
IMG = "https://example.com/fox.jpg"
ASPECT_RATIOS = ["832*480", "480*832", "1280*720", "720*1280", "1920*1080", "1080*1920"]


def i2v(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a fox", "image_urls": [IMG], **fields}


def t2v(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a lighthouse", **fields}


def without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


# (case id, model, input, the input field the error must point at)
INVALID: list[tuple[str, str, Any, str | None]] = [
    ("i2v-unknown-field", I2V, i2v(style="anime"), "style"),
    ("i2v-unknown-field-aspect", I2V, i2v(aspect_ratio="1280*720"), "aspect_ratio"),
    ("i2v-missing-prompt", I2V, without(i2v(), "prompt"), "prompt"),
    ("i2v-missing-image", I2V, without(i2v(), "image_urls"), "image_urls"),
    ("i2v-two-images", I2V, i2v(image_urls=[IMG, "https://example.com/b.jpg"]), "image_urls"),
    ("i2v-zero-images", I2V, i2v(image_urls=[]), "image_urls"),
    ("i2v-image-not-list", I2V, i2v(image_urls=IMG), "image_urls"),
    ("i2v-ftp-url", I2V, i2v(image_urls=["ftp://example.com/fox.jpg"]), "image_urls"),
    ("i2v-javascript-url", I2V, i2v(image_urls=["javascript:alert(1)"]), "image_urls"),
    ("i2v-relative-url", I2V, i2v(image_urls=["/images/fox.jpg"]), "image_urls"),
    ("i2v-file-url", I2V, i2v(image_urls=["file:///etc/passwd"]), "image_urls"),
    ("i2v-no-host-url", I2V, i2v(image_urls=["https:///fox.jpg"]), "image_urls"),
    ("i2v-space-in-url", I2V, i2v(image_urls=["https://exa mple.com/f.jpg"]), "image_urls"),
    ("i2v-empty-prompt", I2V, i2v(prompt=""), "prompt"),
    ("i2v-space-prompt", I2V, i2v(prompt="   "), "prompt"),
    ("i2v-whitespace-prompt", I2V, i2v(prompt="\t\n "), "prompt"),
    ("i2v-prompt-not-string", I2V, i2v(prompt=42), "prompt"),
    ("i2v-resolution", I2V, i2v(resolution="4k"), "resolution"),
    ("i2v-resolution-case", I2V, i2v(resolution="720P"), "resolution"),
    ("i2v-duration-7", I2V, i2v(duration=7), "duration"),
    ("i2v-duration-string", I2V, i2v(duration="5"), "duration"),
    ("i2v-seed-negative", I2V, i2v(seed=-1), "seed"),
    ("i2v-seed-too-big", I2V, i2v(seed=2_147_483_648), "seed"),
    ("i2v-seed-bool", I2V, i2v(seed=True), "seed"),
    ("i2v-seed-string", I2V, i2v(seed="42"), "seed"),
    ("i2v-seed-fraction", I2V, i2v(seed=1.5), "seed"),
    ("i2v-audio-bool", I2V, i2v(audio=True), "audio"),
    ("i2v-audio-not-url", I2V, i2v(audio="track.mp3"), "audio"),
    ("i2v-negative-prompt-number", I2V, i2v(negative_prompt=3), "negative_prompt"),
    ("t2v-unknown-field", T2V, t2v(image_urls=[IMG]), "image_urls"),
    ("t2v-missing-prompt", T2V, {}, "prompt"),
    ("t2v-empty-prompt", T2V, t2v(prompt=""), "prompt"),
    ("t2v-whitespace-prompt", T2V, t2v(prompt=" \n"), "prompt"),
    ("t2v-aspect-ratio-x", T2V, t2v(aspect_ratio="1280x720"), "aspect_ratio"),
    ("t2v-aspect-ratio-16-9", T2V, t2v(aspect_ratio="16:9"), "aspect_ratio"),
    ("t2v-aspect-ratio-resolution", T2V, t2v(aspect_ratio="720p"), "aspect_ratio"),
    ("t2v-resolution-unknown", T2V, t2v(resolution="720p"), "resolution"),
    ("t2v-duration-string", T2V, t2v(duration="10"), "duration"),
    ("t2v-duration-15", T2V, t2v(duration=15), "duration"),
    ("t2v-seed-negative", T2V, t2v(seed=-1), "seed"),
    ("t2v-seed-too-big", T2V, t2v(seed=2_147_483_648), "seed"),
    ("t2v-seed-bool", T2V, t2v(seed=False), "seed"),
    ("t2v-seed-string", T2V, t2v(seed="7"), "seed"),
    ("t2v-audio-true", T2V, t2v(audio=True), "audio"),
    ("t2v-audio-false", T2V, t2v(audio=False), "audio"),
    ("t2v-audio-javascript", T2V, t2v(audio="javascript:alert(1)"), "audio"),
    ("i2v-input-list", I2V, [i2v()], None),
    ("i2v-input-string", I2V, "a fox", None),
]


# ---- the catalog itself ----------------------------------------------------------------


def test_catalog_has_exactly_the_two_models() -> None:
    assert sorted(CATALOG.names) == [I2V, T2V]


def test_image_to_video_minimal_gets_defaults() -> None:
    assert CATALOG.get(I2V).validate_input(i2v()) == {
        "prompt": "a fox",
        "image_urls": [IMG],
        "resolution": "720p",
        "duration": 5,
    }


def test_image_to_video_maximal_is_kept_as_given() -> None:
    raw = i2v(
        resolution="1080p",
        duration=10,
        seed=2_147_483_647,
        negative_prompt="blurry, low quality",
        audio="https://example.com/track.mp3",
    )
    assert CATALOG.get(I2V).validate_input(raw) == raw


@pytest.mark.parametrize("resolution", ["480p", "720p", "1080p"])
@pytest.mark.parametrize("duration", [5, 10])
def test_image_to_video_every_enum_value(resolution: str, duration: int) -> None:
    out = CATALOG.get(I2V).validate_input(i2v(resolution=resolution, duration=duration))
    assert (out["resolution"], out["duration"]) == (resolution, duration)


@pytest.mark.parametrize("seed", [0, 1, 2_147_483_647])
def test_seed_bounds_are_inclusive(seed: int) -> None:
    assert CATALOG.get(I2V).validate_input(i2v(seed=seed))["seed"] == seed
    assert CATALOG.get(T2V).validate_input(t2v(seed=seed))["seed"] == seed


def test_http_and_https_urls_are_accepted() -> None:
    for url in ("http://example.com/a.png", "https://example.com/a.png?x=1", "HTTPS://EX.COM/a"):
        assert CATALOG.get(I2V).validate_input(i2v(image_urls=[url]))["image_urls"] == [url]


def test_text_to_video_minimal() -> None:
    out = CATALOG.get(T2V).validate_input(t2v())
    assert out["prompt"] == "a lighthouse"
    assert out.get("duration", 5) == 5
    assert set(out) <= {"prompt", "duration"}


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_text_to_video_maximal(ratio: str) -> None:
    raw = t2v(
        aspect_ratio=ratio,
        duration=10,
        seed=0,
        negative_prompt="text, watermark",
        audio="https://example.com/track.wav",
    )
    assert CATALOG.get(T2V).validate_input(raw) == raw


@pytest.mark.parametrize(
    ("model", "raw", "field"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_input_is_refused_with_details(model: str, raw: Any, field: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        CATALOG.get(model).validate_input(raw)
    error = caught.value
    assert error.status_code == 422
    assert error.details, "a 422 must say what is wrong"
    locs = [detail["loc"] for detail in error.details]
    assert all(loc[:2] == ["body", "input"] for loc in locs), locs
    if field is not None:
        assert any(len(loc) > 2 and loc[2] == field for loc in locs), locs
    for detail in error.details:
        assert set(detail) == {"loc", "msg", "type"}
        assert detail["msg"]


def test_unknown_model_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        CATALOG.get("wan2.6-image-to-video")
    assert caught.value.details is not None
    assert caught.value.details[0]["loc"] == ["body", "model"]


def test_errors_do_not_echo_the_input() -> None:
    secret = "https://example.com/private-token-abc123.jpg"
    with pytest.raises(InvalidRequest) as caught:
        CATALOG.get(I2V).validate_input(i2v(image_urls=[secret, secret]))
    assert "private-token-abc123" not in repr(caught.value.details)


# ---- over HTTP: 422, nothing stored, nothing sent --------------------------------------


def _assert_envelope(body: Any, case: str) -> None:
    assert set(body) == {"error"}, (case, body)
    error = body["error"]
    assert set(error) <= {"type", "message", "details"}, (case, body)
    assert error["type"] == "invalid_request", (case, body)
    assert isinstance(error["message"], str), (case, body)
    assert error["message"], (case, body)
    assert isinstance(error["details"], list), (case, body)
    assert error["details"], (case, body)
    assert "Traceback" not in str(body)


async def test_invalid_jobs_get_422_and_are_neither_stored_nor_sent(
    relay: Service, provider: ProviderStandIn
) -> None:
    client = relay.client
    bodies: list[tuple[str, Any]] = [
        (case, {"model": model, "input": raw}) for case, model, raw, _ in INVALID
    ]
    bodies += [
        ("unknown-model", {"model": "wan2.6-image-to-video", "input": i2v()}),
        ("missing-model", {"input": i2v()}),
        ("missing-input", {"model": I2V}),
        ("unknown-top-level-field", {"model": I2V, "input": i2v(), "priority": "high"}),
        ("metadata-not-strings", {"model": I2V, "input": i2v(), "metadata": {"n": 1}}),
        ("webhook-not-http", {"model": I2V, "input": i2v(), "webhook_url": "ftp://x.example/y"}),
        ("body-not-object", [{"model": I2V, "input": i2v()}]),
    ]
    problems = []
    for case, body in bodies:
        response = await client.http.post("/v1/jobs", json=body, headers=client.headers())
        if response.status_code != 422:
            problems.append((case, response.status_code, response.text))
            continue
        _assert_envelope(response.json(), case)
    assert not problems, problems

    listed = (await client.get("/v1/jobs", limit=100)).json()
    assert listed["data"] == []
    assert listed["next_cursor"] is None
    assert provider.calls == [], [c.path for c in provider.calls]

    # Each problem is pointed at, not just the first.
    response = await client.create_job({"model": I2V, "input": i2v(image_urls=[IMG, IMG], seed=-1)})
    assert response.status_code == 422
    locs = [detail["loc"] for detail in response.json()["error"]["details"]]
    assert ["body", "input", "image_urls"] in locs
    assert ["body", "input", "seed"] in locs

    # The control: the same service and stand-in do store and send a valid job, with the
    # defaults filled in.
    created = await client.create_job({"model": I2V, "input": i2v(seed=0)})
    assert created.status_code == 201, created.text
    expected = {
        "prompt": "a fox",
        "image_urls": [IMG],
        "resolution": "720p",
        "duration": 5,
        "seed": 0,
    }
    assert created.json()["input"] == expected
    [submit] = provider.submits()
    assert submit.json()["model"] == I2V
    assert submit.json()["input"] == expected
    assert len((await client.get("/v1/jobs")).json()["data"]) == 1


# ---- GET /v1/models --------------------------------------------------------------------


VALID_SAMPLES: list[tuple[str, Any]] = [
    (I2V, i2v()),
    (I2V, i2v(resolution="480p", duration=10, seed=0, negative_prompt="", audio=IMG)),
    (T2V, t2v()),
    (T2V, t2v(aspect_ratio="1080*1920", seed=2_147_483_647)),
]


async def test_models_are_published_with_schemas(relay: Service) -> None:
    anonymous = await relay.client.http.get("/v1/models")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"

    response = await relay.client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    by_id = {model["id"]: model for model in body["data"]}
    assert set(by_id) == {I2V, T2V}
    for name, model in by_id.items():
        schema = model["input_schema"]
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        assert model["description"]
        assert schema == CATALOG.get(name).json_schema()
    i2v_schema = by_id[I2V]["input_schema"]
    assert set(i2v_schema["required"]) == {"prompt", "image_urls"}
    assert set(i2v_schema["properties"]) == {
        "prompt",
        "image_urls",
        "resolution",
        "duration",
        "seed",
        "negative_prompt",
        "audio",
    }
    t2v_schema = by_id[T2V]["input_schema"]
    assert t2v_schema["required"] == ["prompt"]
    assert set(t2v_schema["properties"]) == {
        "prompt",
        "aspect_ratio",
        "duration",
        "seed",
        "negative_prompt",
        "audio",
    }

    # The schema a client reads accepts and rejects what the service accepts and rejects.
    validators = {m["id"]: jsonschema_rs.validator_for(m["input_schema"]) for m in body["data"]}
    samples = [(model, raw, True) for model, raw in VALID_SAMPLES]
    samples += [(model, raw, False) for _, model, raw, _ in INVALID]
    disagreements = []
    for model, raw, valid in samples:
        try:
            CATALOG.get(model).validate_input(raw)
            accepted = True
        except InvalidRequest:
            accepted = False
        schema_ok = validators[model].is_valid(raw)
        if not (accepted == schema_ok == valid):
            disagreements.append((model, raw, valid, accepted, schema_ok))
    assert not disagreements, disagreements
