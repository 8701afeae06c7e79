"""Exact input validation of the two Wan 2.5 models, the first poyo-relay knew, in the
catalog and over HTTP (tests/test_every_model.py covers all 152 from the catalog itself).

Bad input is refused with 422 and the error envelope before anything is stored or sent
to the provider, so it never costs credits. Where PoYo's catalog and round 1's rules
disagree the catalog wins (docs/CATALOG.md): `prompt` ≤ 1,500 characters, `audio` an
opaque string, `seed` any integer, and the input is forwarded as given, defaults unfilled.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from app.catalog.compiled import Catalog
from app.catalog.document import load_snapshot
from app.errors import InvalidRequest
from tests.conftest import Service
from tests.stand_in import ProviderStandIn

I2V = "wan2.5-image-to-video"
T2V = "wan2.5-text-to-video"
IMG = "https://example.com/fox.jpg"
ASPECT_RATIOS = ["832*480", "480*832", "1280*720", "720*1280", "1920*1080", "1080*1920"]
CATALOG = Catalog(load_snapshot())


def accepted(model: str, raw: Any) -> Any:
    """`raw` once the catalog accepts it (it is never changed: PoYo applies defaults)."""
    CATALOG.validate(model, raw)
    return raw


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
    ("i2v-prompt-too-long", I2V, i2v(prompt="x" * 1501), "prompt"),
    ("t2v-prompt-too-long", T2V, t2v(prompt="é" * 1501), "prompt"),
    ("i2v-duration-float", I2V, i2v(duration=5.5), "duration"),
    ("i2v-duration-bool", I2V, i2v(duration=True), "duration"),
    ("i2v-resolution", I2V, i2v(resolution="4k"), "resolution"),
    ("i2v-resolution-case", I2V, i2v(resolution="720P"), "resolution"),
    ("i2v-duration-7", I2V, i2v(duration=7), "duration"),
    ("i2v-duration-string", I2V, i2v(duration="5"), "duration"),
    ("i2v-seed-bool", I2V, i2v(seed=True), "seed"),
    ("i2v-seed-string", I2V, i2v(seed="42"), "seed"),
    ("i2v-seed-fraction", I2V, i2v(seed=1.5), "seed"),
    ("i2v-audio-bool", I2V, i2v(audio=True), "audio"),
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
    ("t2v-seed-bool", T2V, t2v(seed=False), "seed"),
    ("t2v-seed-string", T2V, t2v(seed="7"), "seed"),
    ("t2v-seed-float", T2V, t2v(seed=7.5), "seed"),
    ("t2v-audio-true", T2V, t2v(audio=True), "audio"),
    ("t2v-audio-false", T2V, t2v(audio=False), "audio"),
    ("t2v-size-billing-variable", T2V, t2v(size="1280*720"), "size"),
    ("i2v-input-list", I2V, [i2v()], None),
    ("i2v-input-string", I2V, "a fox", None),
]


# ---- the catalog itself ----------------------------------------------------------------


def test_the_catalog_holds_both_wan_models_among_every_generate_model() -> None:
    assert {I2V, T2V} <= set(CATALOG.models)
    assert len(CATALOG.models) == 152


def test_image_to_video_minimal_is_forwarded_as_given_without_defaults() -> None:
    # PoYo applies its own defaults (720p, 5 s); filling them in would send fields the
    # client never chose.
    assert accepted(I2V, i2v()) == {"prompt": "a fox", "image_urls": [IMG]}


def test_image_to_video_maximal_is_kept_as_given() -> None:
    raw = i2v(
        resolution="1080p",
        duration=10,
        seed=2_147_483_647,
        negative_prompt="blurry, low quality",
        audio="https://example.com/track.mp3",
        prompt="p" * 1500,
    )
    assert accepted(I2V, raw) == raw


@pytest.mark.parametrize("resolution", ["480p", "720p", "1080p"])
@pytest.mark.parametrize("duration", [5, 10])
def test_image_to_video_every_enum_value(resolution: str, duration: int) -> None:
    accepted(I2V, i2v(resolution=resolution, duration=duration))


@pytest.mark.parametrize("seed", [-1, 0, 1, 2_147_483_647, 2**40])
def test_seed_is_any_integer_as_the_catalog_says(seed: int) -> None:
    accepted(I2V, i2v(seed=seed))
    accepted(T2V, t2v(seed=seed))


@pytest.mark.parametrize("audio", ["track.mp3", "https://example.com/a.wav", "auto", ""])
def test_audio_is_an_opaque_string(audio: str) -> None:
    accepted(I2V, i2v(audio=audio))
    accepted(T2V, t2v(audio=audio))


def test_http_and_https_urls_are_accepted() -> None:
    for url in ("http://example.com/a.png", "https://example.com/a.png?x=1", "HTTPS://EX.COM/a"):
        accepted(I2V, i2v(image_urls=[url]))


def test_a_whole_number_written_as_a_float_is_an_integer() -> None:
    # JSON has one number type: 5.0 is the integer 5 to JSON Schema (and to PoYo).
    accepted(I2V, i2v(duration=10.0))


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_text_to_video_maximal(ratio: str) -> None:
    raw = t2v(
        aspect_ratio=ratio,
        duration=10,
        seed=0,
        negative_prompt="text, watermark",
        audio="https://example.com/track.wav",
    )
    assert accepted(T2V, raw) == raw


@pytest.mark.parametrize(
    ("model", "raw", "field"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_input_is_refused_with_details(model: str, raw: Any, field: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        CATALOG.validate(model, raw)
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
        CATALOG.spec("wan2.6-image-to-vidoe")
    assert caught.value.details is not None
    assert caught.value.details[0]["loc"] == ["body", "model"]
    assert "unknown model" in caught.value.message


def test_errors_do_not_echo_the_input() -> None:
    secret = "https://example.com/private-token-abc123.jpg"
    for raw in (
        i2v(image_urls=[secret, secret]),
        i2v(resolution=secret),
        i2v(prompt=secret * 100),
        i2v(seed=secret),
    ):
        with pytest.raises(InvalidRequest) as caught:
            CATALOG.validate(I2V, raw)
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
        ("unknown-model", {"model": "wan2.6-image-to-vidoe", "input": i2v()}),
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
    response = await client.create_job(
        {"model": I2V, "input": i2v(image_urls=[IMG, IMG], seed="1")}
    )
    assert response.status_code == 422
    locs = [detail["loc"] for detail in response.json()["error"]["details"]]
    assert ["body", "input", "image_urls"] in locs
    assert ["body", "input", "seed"] in locs

    # The control: the same service and stand-in do store and send a valid job, exactly
    # as given.
    created = await client.create_job({"model": I2V, "input": i2v(seed=0)})
    assert created.status_code == 201, created.text
    expected = {"prompt": "a fox", "image_urls": [IMG], "seed": 0}
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


async def test_models_are_published_with_the_schema_they_are_validated_against(
    relay: Service,
) -> None:
    anonymous = await relay.client.http.get("/v1/models")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"

    response = await relay.client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["catalog_version"] == CATALOG.version
    by_id = {model["id"]: model for model in body["data"]}
    assert set(by_id) == set(CATALOG.models)  # every generate model, no chat model
    for model in body["data"]:
        assert model["input_schema"] == CATALOG.models[model["id"]].schema
        assert model["catalog_version"] == CATALOG.version
        assert set(model) >= {"id", "category", "title", "description", "example", "billing"}
    i2v_schema = by_id[I2V]["input_schema"]
    assert i2v_schema["additionalProperties"] is False
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
    assert i2v_schema["properties"]["prompt"]["maxLength"] == 1500
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
    assert by_id[T2V]["billing"]["price_table"]["1920*1080"] == {"5": 90, "10": 180}

    # The schema a client reads accepts and rejects what the service accepts and rejects.
    validators = {
        m: jsonschema_rs.validator_for(by_id[m]["input_schema"], validate_formats=True)
        for m in (I2V, T2V)
    }
    samples = [(model, raw, True) for model, raw in VALID_SAMPLES]
    samples += [(model, raw, False) for _, model, raw, _ in INVALID]
    disagreements = []
    for model, raw, valid in samples:
        service_ok = not CATALOG.problems(model, raw)
        schema_ok = validators[model].is_valid(raw)
        if not (service_ok == schema_ok == valid):
            disagreements.append((model, raw, valid, service_ok, schema_ok))
    assert not disagreements, disagreements


async def test_models_can_be_filtered_and_read_one_by_one(relay: Service) -> None:
    client = relay.client
    images = (await client.get("/v1/models", category="image")).json()["data"]
    assert images
    assert {m["category"] for m in images} == {"image"}
    assert len(images) == sum(1 for s in CATALOG.models.values() if s.entry.category == "image")
    kling = (await client.get("/v1/models", q="KLING 3.0")).json()["data"]
    assert "kling-3.0/pro" in {m["id"] for m in kling}
    assert all("kling" in m["id"] + m["description"].lower() for m in kling)
    assert (await client.get("/v1/models", q="no-such-words-here")).json()["data"] == []

    # Ids with a slash are one path parameter.
    one = await client.get("/v1/models/kling-3.0/pro")
    assert one.status_code == 200, one.text
    assert one.json()["id"] == "kling-3.0/pro"
    assert one.json()["input_schema"] == CATALOG.models["kling-3.0/pro"].schema
    deep = await client.get("/v1/models/hunyuan-3d/v3.1/pro/text-to-3d")
    assert deep.status_code == 200
    assert deep.json()["category"] == "3d"

    chat_model = next(iter(sorted(CATALOG.chat)))
    for path, says in (
        (f"/v1/models/{chat_model}", "chat model"),
        ("/v1/models/kling-9.9/ultra", "unknown model"),
        ("/v1/models/" + "x" * 200, "no such model"),
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found"
        assert says in response.json()["error"]["message"]
    too_long = await client.get("/v1/models", q="x" * 201)
    assert too_long.status_code == 422


async def test_a_chat_model_job_is_refused_with_the_reason(
    relay: Service, provider: ProviderStandIn
) -> None:
    chat_model = next(iter(sorted(CATALOG.chat)))
    response = await relay.client.create_job({"model": chat_model, "input": {"prompt": "hi"}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["details"][0]["loc"] == ["body", "model"]
    assert "chat model" in error["message"]
    assert "synchronously" in error["message"]
    assert provider.calls == []
