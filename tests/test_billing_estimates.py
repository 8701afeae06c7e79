"""app/billing/estimate.py on every generate model of the catalog.

Each model's examples, and inputs varying every field its price reads (each enum value,
true/false, bounds, absent; several at once where the combinations are few), are priced
twice: by `estimate()`, and by `expected()` below, an oracle written per rule shape that
reads the catalog's tables directly (`billing["sound_credits"][str(sound).lower()]`,
`base_credits` plus `addon_credits`, `parameters`, ...) and never the formula evaluator.
Then a dozen well-known prices with literal numbers, each decision of docs/BILLING.md, and
the counts: how many models get an estimate, how many never do and why.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from app.billing.estimate import (
    MAX_RUNS,
    NO_PRICE,
    NO_RULE,
    NOT_PRICEABLE,
    NOT_UNDERSTOOD,
    OUTPUT_MEGAPIXELS,
    SOURCE_LENGTH,
    TEXT_LENGTH,
    TOKEN_BASED,
    UNSET,
    VARIABLES,
    Estimate,
    effective_formula,
    estimate,
    estimate_rule,
    static_reason,
)
from app.catalog.document import GENERATE, Entry, load_snapshot

MODELS: dict[str, Entry] = {
    e.model_id: e for e in load_snapshot().items if e.service_type == GENERATE
}
URL = "https://example.com/input.png"
ABSENT = object()

# Models whose count of images (`n`) multiplies the price: their `n` says so.
PER_IMAGE = {
    "seedream-4",
    "seedream-4-edit",
    "seedream-4.5",
    "seedream-4.5-edit",
    "seedream-5.0-lite",
    "seedream-5.0-lite-edit",
    "wan-2.7-image",
    "wan-2.7-image-pro",
    "kling-o1-image-edit",
    "kling-o3-image",
    "kling-o3-image-edit",
}
HUNYUAN_VIEWS = ("top_image_url", "back_image_url", "left_image_url", "right_image_url")


# ---- the oracle ---------------------------------------------------------------------------


class Missing(Exception):
    def __init__(self, field: str, candidates: list[Any]) -> None:
        super().__init__(field)
        self.field, self.candidates = field, candidates


class NoPrice(Exception):
    def __init__(self, where: str, key: str) -> None:
        super().__init__(where)
        self.where, self.key = where, key


class Unknown(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def expected(entry: Entry, x: Mapping[str, Any]) -> float | str:
    """Credits (rounded to 4 places) or the reason there are none."""
    try:
        return round(_credits(entry, x), 4)
    except Unknown as unknown:
        return unknown.reason
    except NoPrice as missing:
        return NO_PRICE.format(where=missing.where, key=missing.key)
    except Missing as missing:
        outcomes = {expected(entry, {**x, missing.field: c}) for c in missing.candidates}
        if len(outcomes) == 1 and not isinstance(next(iter(outcomes)), str):
            return outcomes.pop()
        return UNSET.format(field=missing.field)


def _key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    return str(value)


def price(table: Mapping[str, Any], value: Any, where: str) -> Any:
    key = _key(value)
    if table.get(key) is None:
        raise NoPrice(where, key)
    return table[key]


def _credits(entry: Entry, x: Mapping[str, Any]) -> float:
    return float(_priced(entry, x))


def _priced(entry: Entry, x: Mapping[str, Any]) -> Any:
    b = entry.billing or {}
    props = entry.input_schema.get("properties", {})
    formula = " ".join((b.get("formula") or "").split())

    def get(name: str) -> Any:
        if x.get(name) is not None:
            return x[name]
        spec = props.get(name) or {}
        if spec.get("default") is not None:
            return spec["default"]
        candidates = spec.get("enum") or ([True, False] if spec.get("type") == "boolean" else [])
        raise Missing(name, list(candidates))

    def count(name: str) -> int:
        value = x.get(name)
        return len(value) if isinstance(value, list) else 0

    def duration() -> Any:
        if x.get("duration") is None:
            shots = x.get("multi_prompt") or []
            if shots and all(isinstance(s.get("duration"), int | float) for s in shots):
                return sum(s["duration"] for s in shots)
            plan = x.get("composition_plan") or {}
            sections = plan.get("sections") or []
            if sections and x.get("respect_sections_durations") is not False:
                return sum(s["duration"] for s in sections)
        seconds = get("duration")
        if seconds == 0:
            raise Unknown(SOURCE_LENGTH)
        return seconds

    def images() -> Any:
        try:
            return get("n") if "n" in props else 1
        except Missing:
            return 1

    kind = b.get("type")
    if kind == "token":
        raise Unknown(TOKEN_BASED)
    if "text_characters" in formula:
        raise Unknown(TEXT_LENGTH)
    if "output_megapixels" in formula:
        raise Unknown(OUTPUT_MEGAPIXELS)
    per_image = images() if entry.model_id in PER_IMAGE else 1
    pt = b.get("price_table") or {}
    if kind == "fixed":
        return b["credits"] * per_image
    if formula == "duration * sound_credits[sound]":
        return duration() * price(b["sound_credits"], get("sound"), "sound")
    if formula == "duration_credits[duration]":
        return price(b["duration_credits"], duration(), "duration")
    if formula == "resolution_credits[resolution]":
        base = price(b["resolution_credits"], get("resolution"), "resolution") * per_image
        return base + b.get("input_image_credits", 0) * count("image_urls")
    if formula == "duration * resolution_credits[resolution]":
        return duration() * price(b["resolution_credits"], get("resolution"), "resolution")
    if formula == "quality_credits[quality]":
        return price(b["quality_credits"], get("quality"), "quality")
    if formula == "price_table[resolution][duration]":
        return price(price(pt, get("resolution"), "resolution"), duration(), "duration")
    if formula == "price_table[size][duration]":  # wan2.5-text-to-video: its aspect_ratio
        return price(price(pt, get("aspect_ratio"), "size"), duration(), "duration")
    if formula == "price_table[mode][resolution][duration]":
        mode = pt["image_to_video"] if count("image_urls") else pt["text_to_video"]
        return price(price(mode, get("resolution"), "resolution"), duration(), "duration")
    if formula == "price_table[generate_audio][resolution][duration]":
        audio = price(pt, get("generate_audio"), "generate_audio")
        return price(price(audio, get("resolution"), "resolution"), duration(), "duration")
    if formula == "price_table[has_video_input][resolution_group][duration]":
        group = "4k" if get("resolution") == "4k" else "standard"
        if count("video_urls"):
            return float(pt["true"][group])  # priced per request, whatever the length
        return price(pt["false"][group], duration(), "duration")
    if formula == "price_table[quality][billable_resolution]":
        resolution, size = get("resolution"), get("size")
        true_4k = size in ("16:9", "9:16", "21:9") or "3840" in size.replace("*", "x").split("x")
        billed = "2K" if resolution == "4K" and not true_4k else resolution
        return price(price(pt, get("quality"), "quality"), billed, "billable_resolution")
    if formula == "duration * price_table[mode][resolution]":
        if x.get("video_url"):
            raise Unknown(SOURCE_LENGTH)
        return duration() * price(pt["generate"], get("resolution"), "resolution")
    if formula == "duration * price_table[resolution][sound]":
        seconds = duration()
        return seconds * price(price(pt, get("resolution"), "resolution"), get("sound"), "sound")
    if formula == "duration * price_table[resolution_group][sound]":
        group = "4k" if get("resolution") == "4k" else "standard"
        return duration() * price(pt[group], get("sound"), "sound")
    if "credit_rules" in b:  # seedance-2*, and seedance-2.5's rule in prose
        if count("reference_video_urls"):
            raise Unknown(SOURCE_LENGTH)
        seconds = duration()  # read first, as the formula does
        return seconds * price(b["credit_rules"], get("resolution"), "resolution")["without_video"]
    if "base_credits" in b:  # Hunyuan 3D: base plus add-ons
        addons = b["addon_credits"]
        multiview = any(x.get(view) for view in HUNYUAN_VIEWS)
        return (
            b["base_credits"]
            + addons["pbr"] * (x.get("enable_pbr") is True)
            + addons["multiview"] * multiview
            + addons["custom_face_count"] * (x.get("face_count") is not None)
        )
    if "geometry_quality" in formula:  # Tripo3D H3.1
        mode = "none" if get("texture") is False else get("texture_quality")
        return (
            price(b["texture_credits"], mode, "texture_mode")
            + b["addon_credits"]["detailed_geometry"] * (get("geometry_quality") == "detailed")
            + b["addon_credits"]["quad_mesh"] * (get("quad") is True)
        )
    if formula == "texture ? 70 : 56":  # Tripo3D P1: its texture_credits say the same
        return float(b["texture_credits"][_key(get("texture"))])
    if formula == "ceil(duration / 60) * 128":
        return math.ceil(duration() / 60) * b["credits_per_unit"]
    if formula.startswith("duration * ") and "credits_per_unit" in b:
        return duration() * b["credits_per_unit"]
    if "credits_per_second" in formula:  # hailuo-03
        if count("reference_video_urls"):
            raise Unknown(SOURCE_LENGTH)
        p = b["parameters"]
        extra = max(0, count("reference_image_urls") - p["free_reference_images"])
        return duration() * p["credits_per_second"] + extra * p["extra_reference_image_credits"]
    if formula.startswith("number_of_images * resolution_credits"):  # grok-imagine-image-q.
        per = price(b["resolution_credits"], get("resolution"), "resolution")
        return get("n") * per + count("image_urls") * b["input_image_credits"]
    if not formula and "resolution_credits" in b:  # grok-imagine-video-1.5: per second
        per_second = price(b["resolution_credits"], get("resolution"), "resolution")
        inputs = count("image_urls") + count("reference_image_urls")
        return duration() * per_second + inputs * b["input_image_credits"]
    if not formula and "resolution_credit_rates" in b:  # flux-3/*: per second
        return duration() * price(b["resolution_credit_rates"], get("resolution"), "resolution")
    raise AssertionError(f"no oracle for {entry.model_id}: {b}")


# ---- the inputs ---------------------------------------------------------------------------

PRICE_FIELDS = (
    "resolution",
    "duration",
    "sound",
    "quality",
    "generate_audio",
    "texture",
    "texture_quality",
    "geometry_quality",
    "quad",
    "enable_pbr",
    "n",
    "face_count",
    "size",
)
LIST_FIELDS = ("image_urls", "reference_image_urls", "reference_video_urls", "video_urls")
MAX_COMBINATIONS = 200


def _values(entry: Entry, name: str) -> list[Any]:
    billing = entry.billing or {}
    spec = entry.input_schema.get("properties", {}).get(name)
    if spec is None:
        if name == "quality" and "quality_credits" in billing:
            return [*sorted(billing["quality_credits"]), ABSENT]
        return []
    if name == "size" and "enum" not in spec:
        return ["auto", "1:1", "16:9", "21:9", "3840x2160", "2304x1536", ABSENT]
    if "enum" in spec:
        return [*spec["enum"], ABSENT]
    if spec.get("type") == "boolean":
        return [True, False, ABSENT]
    if spec.get("type") in ("integer", "number"):
        low, high = spec.get("minimum", 1), spec.get("maximum", 4)
        return [*sorted({low, high, (low + high) // 2}), ABSENT]
    return []


def variations(entry: Entry) -> Iterator[dict[str, Any]]:
    """Every example; then the first example (or {}) with the price fields varied together
    when the combinations are few, one at a time otherwise; then the image and video
    lists at several lengths, and `video_url` and the Hunyuan views given or not."""
    yield from (dict(example) for example in entry.examples)
    base = dict(entry.examples[0]) if entry.examples else {}
    axes = {name: values for name in PRICE_FIELDS if (values := _values(entry, name))}
    if math.prod(len(values) for values in axes.values()) <= MAX_COMBINATIONS:
        for combination in itertools.product(*axes.values()):
            yield _with(base, dict(zip(axes, combination, strict=True)))
    else:
        for name, values in axes.items():
            for one in values:
                yield _with(base, {name: one})
    props = entry.input_schema.get("properties", {})
    for name in LIST_FIELDS:
        if name in props:
            for length in (0, 1, 2, 7):
                yield _with(base, {name: [URL] * length if length else ABSENT})
    for name in ("video_url", "top_image_url"):
        if name in props:
            yield _with(base, {name: URL})
            yield _with(base, {name: ABSENT})


def _with(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    x = dict(base)
    for name, value in changes.items():
        if value is ABSENT:
            x.pop(name, None)
        else:
            x[name] = value
    return x


# ---- every model --------------------------------------------------------------------------


def outcome(result: Estimate) -> float | str:
    if result.credits is None:
        assert result.usd is None
        assert result.reason
        assert len(result.reason) <= 200
        return result.reason
    assert result.reason is None
    assert result.usd is not None
    assert result.usd == pytest.approx(round(result.credits * 0.005, 4), abs=1e-4)
    return result.credits


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_every_model_is_priced_from_its_own_tables(model_id: str) -> None:
    entry = MODELS[model_id]
    cases = list(variations(entry))
    assert cases
    for x in cases:
        want = expected(entry, x)
        got = outcome(estimate(entry, x))
        if isinstance(want, str):
            assert got == want, x
        else:
            assert got == pytest.approx(want, abs=1e-9), x


def test_the_variations_are_many_and_reach_every_kind_of_outcome() -> None:
    outcomes: collections.Counter[str] = collections.Counter()
    total = 0
    for entry in MODELS.values():
        for x in variations(entry):
            total += 1
            reason = estimate(entry, x).reason
            outcomes[(reason or "estimated").split(" ")[0].rstrip(":")] += 1
    assert total > 4500
    assert set(outcomes) == {"estimated", "depends", "no", "token-based"}


# ---- well-known prices, by hand ------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "job_input", "credits"),
    [
        # the issue: "a 1080p 10 s Wan 2.5 video is 180 credits"
        ("wan2.5-image-to-video", {"resolution": "1080p", "duration": 10}, 180),
        ("wan2.5-text-to-video", {"aspect_ratio": "1920*1080", "duration": 10}, 180),
        ("wan2.5-image-to-video", {}, 60),  # defaults: 720p, 5 s
        # the issue: "a Sora 2 Pro second up to 112"
        ("sora-2-pro-official", {"resolution": "1080p", "duration": 4}, 4 * 112),
        ("sora-2-pro-official", {"resolution": "1080p", "duration": 20}, 2240),
        ("sora-2-pro-official", {}, 4 * 80),  # defaults: 1024p, 4 s
        ("kling-2.6", {"sound": True, "duration": 10}, 240),
        ("kling-2.6", {"sound": False, "duration": 5}, 65),
        ("elevenlabs-music", {"text": "a", "duration": 45}, 128),  # $0.64 per started minute
        ("elevenlabs-music", {"text": "a", "duration": 61}, 256),
        ("elevenlabs-music", {"text": "a", "duration": 600}, 1280),
        ("hunyuan-3d/v3.1/pro/image-to-3d", {"image_urls": [URL]}, 60),
        ("hunyuan-3d/v3.1/pro/image-to-3d", {"enable_pbr": True, "face_count": 500000}, 108),
        ("hunyuan-3d/v3.1/pro/image-to-3d", {"top_image_url": URL, "back_image_url": URL}, 84),
        ("hunyuan-3d/v3.1/rapid/text-to-3d", {"prompt": "a", "enable_pbr": True}, 60),
        ("tripo3d-h3.1-image-to-3d", {}, 45),
        ("tripo3d-h3.1-image-to-3d", {"texture": False}, 30),
        (
            "tripo3d-h3.1-image-to-3d",
            {"texture_quality": "detailed", "geometry_quality": "detailed", "quad": True},
            97.5,
        ),
        ("tripo3d-p1-text-to-3d", {}, 70),
        ("grok-imagine-image-quality", {"n": 2, "resolution": "2K", "image_urls": [URL] * 3}, 28),
        ("gpt-image-2", {"quality": "high", "resolution": "4K", "size": "1:1"}, 35.52),
        ("gpt-image-2", {"quality": "high", "resolution": "4K", "size": "16:9"}, 64.16),
        ("gpt-image-2", {"quality": "medium", "resolution": "4K", "size": "3840x2160"}, 16.16),
        ("gpt-image-2", {}, 2),  # low, 1K
        ("gpt-image-1-official", {"quality": "high"}, 30),
        ("omni-flash", {"video_urls": [URL], "resolution": "4k"}, 400),
        ("omni-flash", {"resolution": "4k", "duration": 10}, 450),
        ("omni-flash", {}, 150),  # 720p, 6 s
        ("hailuo-03", {"duration": 10, "reference_image_urls": [URL] * 7}, 10 * 21 + 2 * 6.4),
        ("hailuo-03", {}, 105),  # its `default_credits`
        ("seedance-2", {"resolution": "720p", "duration": 5}, 200),
        ("seedance-2.5", {"resolution": "480p", "duration": 10}, 190),
        ("flux-3/extend-video", {"resolution": "1080p"}, 5 * 106),
        (
            "grok-imagine-video-1.5",
            {"duration": 6, "resolution": "1080p", "image_urls": [URL]},
            272,
        ),
        ("seedream-4", {"n": 4}, 20),
        ("kling-o3-image", {"n": 2, "resolution": "4K"}, 14),
        ("qwen-image-3-pro", {"resolution": "2K", "image_urls": [URL, URL]}, 13),
        ("qwen-image-3", {}, 4.8),  # 1K and 2K cost the same: no need to know the default
        ("seedance-1.5-pro", {"resolution": "1080p", "duration": 8}, 70),  # audio or not
        ("veo3.1-quality-official", {"resolution": "4k", "duration": 8}, 576),  # sound: true
        ("veo3.1-lite-official", {"duration": 8, "sound": False}, 28.8),
        ("kling-3.0-turbo/pro", {}, 110),  # 5 s by default
        ("kling-3.0-turbo/pro", {"multi_prompt": [{"duration": 4}, {"duration": 6}]}, 220),
        ("happy-horse", {"duration": 5, "resolution": "720p"}, 80),
        ("wan2.7-edit-video", {"duration": 5}, 60),
        ("poyo-ai/video-upscaler", {}, 0.1),
        ("veo3.1-extend", {"duration": 7}, 384),
        ("gpt-4o-image", {"n": 4}, 4),  # per request: its `n` says nothing of billing
    ],
)
def test_well_known_prices(model_id: str, job_input: dict[str, Any], credits: float) -> None:
    result = estimate(MODELS[model_id], job_input)
    assert result.reason is None
    assert result.credits == pytest.approx(credits)
    assert result.usd == pytest.approx(round(credits * 0.005, 4))


def test_usd_is_credits_at_half_a_cent_rounded_to_four_places() -> None:
    assert estimate(MODELS["sora-2-pro-official"], {"resolution": "1080p", "duration": 20}) == (
        Estimate(credits=2240.0, usd=11.2)
    )
    assert estimate(MODELS["poyo-ai/video-upscaler"], {}) == Estimate(0.1, 0.0005)
    assert estimate(MODELS["gpt-image-1.5-official"], {"quality": "low"}) == Estimate(1.6, 0.008)
    assert estimate(MODELS["kling-o1-image-edit"], {"n": 3}) == Estimate(10.5, 0.0525)
    # half-up at the fifth place: 0.7 credits is $0.0035 exactly
    assert estimate(MODELS["poyo-ai/video-background-removal"], {}).usd == 0.0035


def test_millicredits_are_exact_thousandths_for_sums() -> None:
    assert estimate(
        MODELS["gpt-image-2"], {"quality": "high", "resolution": "2K"}
    ).millicredits == (35520)
    hailuo = estimate(MODELS["hailuo-03"], {"duration": 10, "reference_image_urls": [URL] * 7})
    assert hailuo.millicredits == 222800
    assert estimate(MODELS["poyo-ai/video-upscaler"], {}).millicredits == 100
    assert Estimate(0.00049, 0.0).millicredits == 0
    assert Estimate(0.0005, 0.0).millicredits == 1  # half-up
    assert estimate(MODELS["elevenlabs-v3-tts"], {}).millicredits is None


def test_a_reason_fits_in_200_characters() -> None:
    long = Estimate.unknown("x" * 500)
    assert long.reason is not None
    assert len(long.reason) == 200
    assert long.reason.endswith("…")
    odd_key = estimate(MODELS["seedance-2"], {"duration": 5, "resolution": "r" * 1000})
    assert odd_key.reason is not None
    assert odd_key.reason.startswith("no price in the catalog for resolution 'rrr")
    assert len(odd_key.reason) == 200


@pytest.mark.parametrize(
    ("model_id", "job_input", "reason"),
    [
        ("elevenlabs-v3-tts", {"text": "hello"}, TOKEN_BASED),
        ("elevenlabs-tts-turbo-2-5", {"text": "hello"}, TEXT_LENGTH),
        ("gemini-3-1-flash-tts", {"text": "hello"}, TEXT_LENGTH),
        ("xai-tts-1", {"text": "hello"}, TEXT_LENGTH),
        ("flux-dev", {"n": 1, "size": "1:1"}, OUTPUT_MEGAPIXELS),
        ("flux-schnell", {}, OUTPUT_MEGAPIXELS),
        (
            "seedance-2",
            {"duration": 5, "resolution": "720p", "reference_video_urls": [URL]},
            SOURCE_LENGTH,
        ),
        (
            "seedance-2.5",
            {"duration": 5, "resolution": "720p", "reference_video_urls": [URL]},
            SOURCE_LENGTH,
        ),
        ("hailuo-03", {"reference_video_urls": [URL]}, SOURCE_LENGTH),
        ("happy-horse", {"video_url": URL, "resolution": "720p"}, SOURCE_LENGTH),
        ("wan2.7-edit-video", {"duration": 0, "video_url": URL}, SOURCE_LENGTH),
        ("gpt-image-1-official", {}, UNSET.format(field="quality")),
        ("qwen-image-3-pro", {}, UNSET.format(field="resolution")),
        ("grok-imagine", {}, UNSET.format(field="duration")),
        ("wan2.7-text-to-video", {}, UNSET.format(field="duration")),
        ("elevenlabs-music", {"text": "a"}, UNSET.format(field="duration")),  # its choice
        (
            "seedance-2-fast",
            {"resolution": "4k", "duration": 5},
            NO_PRICE.format(where="resolution", key="4k"),
        ),
        (
            "nano-banana-2-new",
            {"resolution": "0.5K"},
            NO_PRICE.format(where="resolution", key="0.5K"),
        ),
        (
            "hailuo-2.3",
            {"resolution": "1080p", "duration": 10},
            NO_PRICE.format(where="duration", key="10"),
        ),
        (
            "veo3.1-lite-official",
            {"resolution": "4k", "duration": 8},
            NO_PRICE.format(where="resolution", key="4k"),
        ),
    ],
)
def test_null_estimates_say_why(model_id: str, job_input: dict[str, Any], reason: str) -> None:
    assert estimate(MODELS[model_id], job_input) == Estimate(None, None, reason)


# ---- decisions ----------------------------------------------------------------------------


def test_defaults_are_applied_as_poyo_would() -> None:
    # veo3.1-fast-official: sound defaults to true, resolution to 720p
    entry = MODELS["veo3.1-fast-official"]
    assert estimate(entry, {"duration": 8}).credits == 8 * 15
    assert estimate(entry, {"duration": 8, "sound": False}).credits == 8 * 10
    # null is absent: the default applies (nullable fields)
    assert estimate(entry, {"duration": 8, "sound": None}).credits == 8 * 15


def test_a_field_without_default_is_enumerated_and_priced_when_every_value_agrees() -> None:
    entry = MODELS["seedance-1.5-pro"]  # generate_audio has no default
    assert estimate(entry, {"resolution": "1080p", "duration": 4}).credits == 40
    assert estimate(entry, {"resolution": "720p", "duration": 4}).reason == UNSET.format(
        field="generate_audio"
    )
    hailuo = MODELS["hailuo-02"]  # mode is derived: text and image cost the same here
    assert estimate(hailuo, {"resolution": "768P", "duration": 10}).credits == 70
    assert estimate(hailuo, {"duration": 10}).reason == UNSET.format(field="resolution")


def test_the_count_of_images_multiplies_where_the_catalog_says_so() -> None:
    multiplied = {
        model_id
        for model_id, entry in MODELS.items()
        if (entry.billing or {}).get("type") not in ("token",)
        and not static_reason(entry.billing)
        and effective_formula(entry.billing or {}, entry.input_schema).startswith(
            "number_of_images * ("
        )
    }
    assert multiplied == PER_IMAGE
    for model_id in PER_IMAGE:
        one = estimate(MODELS[model_id], {"n": 1, "resolution": "1K"})
        three = estimate(MODELS[model_id], {"n": 3, "resolution": "1K"})
        assert one.credits is not None
        assert three.credits == pytest.approx(3 * one.credits)


def test_synthesised_formulas() -> None:
    def formula(model_id: str) -> str:
        entry = MODELS[model_id]
        return effective_formula(entry.billing or {}, entry.input_schema)

    assert formula("meshy-6-text-to-3d") == "credits"
    assert formula("seedream-4") == "number_of_images * (credits)"
    assert formula("flux-3/text-to-video") == "duration * resolution_credit_rates[resolution]"
    assert formula("grok-imagine-video-1.5") == (
        "(duration * resolution_credits[resolution]) + input_image_count * input_image_credits"
    )
    assert formula("qwen-image-3") == (
        "(resolution_credits[resolution]) + input_image_count * input_image_credits"
    )
    # its formula bills the input images already (reference_image_count * 2)
    assert formula("grok-imagine-image-quality") == (
        "number_of_images * resolution_credits[resolution] + reference_image_count * 2"
    )
    assert formula("seedance-2.5") == "billed_seconds * credit_rules[resolution][video_input_mode]"


def test_composition_plans_and_shots_give_the_duration() -> None:
    music = MODELS["elevenlabs-music"]
    plan = {"sections": [{"duration": 20}, {"duration": 25}, {"duration": 30}]}
    assert estimate(music, {"composition_plan": plan}).credits == 256  # 75 s: 2 minutes
    loose = {"composition_plan": plan, "respect_sections_durations": False}
    assert estimate(music, loose).reason == UNSET.format(field="duration")
    turbo = MODELS["kling-3.0-turbo/standard"]
    shots = {"multi_prompt": [{"duration": 3}, {"duration": 3}], "duration": 8}
    assert estimate(turbo, shots).credits == 8 * 17  # a given duration wins
    assert estimate(turbo, {"multi_prompt": [{"duration": 3}, {}]}).credits == 5 * 17


def test_custom_face_count_is_any_face_count_given() -> None:
    entry = MODELS["hunyuan-3d/v3.1/pro/text-to-3d"]
    assert estimate(entry, {"prompt": "a"}).credits == 60
    assert estimate(entry, {"prompt": "a", "face_count": 500000}).credits == 84
    assert estimate(entry, {"prompt": "a", "face_count": 40000}).credits == 84
    assert estimate(entry, {"prompt": "a", "enable_pbr": False}).credits == 60


# ---- rules the catalog does not have (yet) -------------------------------------------------

SCHEMA = {"properties": {"quality": {"enum": ["a", "b"]}, "flag": {"type": "boolean"}}}


@pytest.mark.parametrize(
    ("billing", "job_input", "result"),
    [
        (None, {}, Estimate(None, None, NO_RULE)),
        ({}, {}, Estimate(None, None, NO_RULE)),
        ({"type": "fixed", "unit": "request", "credits": 3}, {}, Estimate(3.0, 0.015)),
        ({"type": "tiered", "formula": "t[quality]", "t": {"a": 2, "b": 2}}, {}, Estimate(2, 0.01)),
        ({"formula": "t[quality]", "t": {"a": 1, "b": 2}}, {"quality": "b"}, Estimate(2, 0.01)),
        ({"formula": "flag ? 1 : 1"}, {}, Estimate(1, 0.005)),
        (
            {"formula": "Charged by the phase of the moon."},
            {},
            Estimate(
                None, None, NOT_UNDERSTOOD.format(detail="unexpected character '.' at position 32")
            ),
        ),
        (
            {"formula": "mystery * 2"},
            {},
            Estimate(None, None, NOT_UNDERSTOOD.format(detail="unknown name 'mystery'")),
        ),
        (
            {"formula": "1" + " + 1" * 200},
            {},
            Estimate(
                None, None, NOT_UNDERSTOOD.format(detail="formula longer than 500 characters")
            ),
        ),
        (
            {"type": "tiered", "unit": "second"},
            {},
            Estimate(
                None, None, NOT_UNDERSTOOD.format(detail="no formula, credits or price table")
            ),
        ),
        (
            {"formula": "0 - 5"},
            {},
            Estimate(None, None, NOT_PRICEABLE.format(detail="the rule gives a negative price")),
        ),
        (
            {"formula": "10 / (1 - 1)"},
            {},
            Estimate(None, None, NOT_PRICEABLE.format(detail="division by zero")),
        ),
        (
            {"formula": "'free'"},
            {},
            Estimate(
                None, None, NOT_PRICEABLE.format(detail="the rule gives a string, not a price")
            ),
        ),
        ({"formula": "text_characters * 2"}, {"text": "abc"}, Estimate(None, None, TEXT_LENGTH)),
    ],
)
def test_rules_in_other_shapes(
    billing: dict[str, Any] | None, job_input: dict[str, Any], result: Estimate
) -> None:
    assert estimate_rule(billing, SCHEMA, job_input) == result


def test_enumerating_unset_fields_is_bounded() -> None:
    fields = {f"f{i}": {"enum": list(range(4))} for i in range(6)}  # 4**6 combinations
    formula = " + ".join(f"t[f{i}]" for i in range(6))
    billing = {"formula": formula, "t": {str(v): 1 for v in range(4)}}
    result = estimate_rule(billing, {"properties": fields}, {})
    assert result == Estimate(None, None, UNSET.format(field="f0"))
    assert MAX_RUNS < 4**6
    two = estimate_rule({"formula": "t[f0] + t[f1]", "t": billing["t"]}, {"properties": fields}, {})
    assert two.credits == 2


# ---- the counts ---------------------------------------------------------------------------


def test_summary_of_the_152_models() -> None:
    never = {model_id: static_reason(e.billing) for model_id, e in MODELS.items()}
    by_reason = collections.Counter(reason or "estimated" for reason in never.values())
    examples: collections.Counter[str] = collections.Counter()
    for entry in MODELS.values():
        for example in entry.examples:
            result = estimate(entry, example)
            examples[result.reason or "estimated"] += 1
    print("\nmodels:", dict(by_reason))
    print("examples:", dict(examples))
    assert len(MODELS) == 152
    assert by_reason == {
        "estimated": 146,
        TEXT_LENGTH: 3,
        OUTPUT_MEGAPIXELS: 2,
        TOKEN_BASED: 1,
    }
    assert {m for m, r in never.items() if r} == {
        "elevenlabs-v3-tts",
        "elevenlabs-tts-turbo-2-5",
        "gemini-3-1-flash-tts",
        "xai-tts-1",
        "flux-dev",
        "flux-schnell",
    }
    assert examples == {
        "estimated": 358,
        SOURCE_LENGTH: 11,
        TEXT_LENGTH: 9,
        UNSET.format(field="quality"): 8,
        UNSET.format(field="resolution"): 5,
        OUTPUT_MEGAPIXELS: 3,
        TOKEN_BASED: 2,
        NO_PRICE.format(where="resolution", key="0.5K"): 2,
        UNSET.format(field="duration"): 2,
        NO_PRICE.format(where="resolution", key="4k"): 2,
    }


def test_every_rule_shape_is_counted() -> None:
    shapes = collections.Counter(
        (str((e.billing or {}).get("type")), str((e.billing or {}).get("unit")))
        for e in MODELS.values()
    )
    assert shapes == {
        ("fixed", "request"): 57,
        ("parameterized", "request"): 21,
        ("tiered", "request"): 19,
        ("parameterized", "second"): 13,
        ("tiered", "second"): 7,
        ("dynamic", "second"): 7,
        ("tiered", "image"): 6,
        ("None", "second"): 5,
        ("parameterized", "video"): 4,
        ("dynamic", "1000_characters"): 3,
        ("parameterized", "image"): 3,
        ("tiered", "video"): 3,
        ("dynamic", "output_megapixel"): 2,
        ("dynamic", "started_minute"): 1,
        ("token", "token"): 1,
    }


def test_every_derived_variable_is_documented() -> None:
    from tests.support import REPO_ROOT

    doc = (REPO_ROOT / "docs" / "BILLING.md").read_text()
    for name, variable in VARIABLES.items():
        assert f"`{name}`" in doc, name
        assert variable.meaning
