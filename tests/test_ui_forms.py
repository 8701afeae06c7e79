"""app/ui/forms.py over the snapshot catalog: every model's schema becomes a form, every
valid input derived from the catalog (its example, each enum value in turn) goes through
the form the way a browser submits it and comes back unchanged and still valid; what the
form cannot read is reported per field; the API's 422 details land on their fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.catalog.compiled import Catalog
from app.catalog.document import load_snapshot
from app.ui.forms import (
    MAX_VALUE_CHARS,
    FieldKind,
    FormField,
    field_errors,
    form_fields,
    parse_form,
)
from tests.derive import Case, valid_cases

CATALOG = Catalog(load_snapshot())
MODELS = sorted(CATALOG.models)
VALID = [case for model in MODELS for case in valid_cases(CATALOG.models[model])]


def fields_of(model: str) -> dict[str, FormField]:
    return {field.name: field for field in form_fields(CATALOG.models[model].schema)}


def browser_text(field: FormField, value: Any) -> str:
    """What a browser submits for `value` shown in `field`'s control: CRLF newlines from a
    textarea, none at all from a one-line input."""
    if field.kind is FieldKind.TEXT:
        assert isinstance(value, str)
        return value.replace("\r", "").replace("\n", "")  # <input type=text> drops newlines
    if field.kind is FieldKind.TEXTAREA:
        assert isinstance(value, str)
        return value.replace("\r\n", "\n").replace("\n", "\r\n")
    if field.kind is FieldKind.URL:
        assert isinstance(value, str)
        return value.strip()
    if field.kind is FieldKind.URL_LIST:
        assert isinstance(value, list)
        assert all(isinstance(item, str) and "\n" not in item for item in value)
        return "\r\n".join(value)
    if field.kind is FieldKind.BOOLEAN:
        assert isinstance(value, bool)
        return "true" if value else "false"
    if field.kind is FieldKind.SELECT:
        [text] = [t for t, v in zip(field.options, field.values, strict=True) if v == value]
        return text
    if field.kind in (FieldKind.INTEGER, FieldKind.NUMBER):
        assert isinstance(value, int | float)
        assert not isinstance(value, bool)
        return repr(value)
    return json.dumps(value)


def browser_form(model: str, data: dict[str, Any]) -> dict[str, str]:
    fields = fields_of(model)
    form = {"csrf_token": "t0k3n", "model": model}  # the page's own fields, not inputs
    form.update({name: browser_text(fields[name], value) for name, value in data.items()})
    return form


# Schemas


@pytest.mark.parametrize("model", MODELS)
def test_every_property_of_every_model_becomes_one_field(model: str) -> None:
    schema = CATALOG.models[model].schema
    fields = form_fields(schema)
    assert sorted(f.name for f in fields) == sorted(schema["properties"])
    required = set(schema.get("required", []))
    flags = [f.required for f in fields]
    assert flags == sorted(flags, reverse=True), "required fields come first"
    assert {f.name for f in fields if f.required} == required
    in_schema_order = [name for name in schema["properties"] if name in required]
    in_schema_order += [name for name in schema["properties"] if name not in required]
    assert [f.name for f in fields] == in_schema_order
    for field in fields:
        assert field.label
        assert field.label[0].isupper()
        assert "_" not in field.label
        if field.kind in (FieldKind.SELECT, FieldKind.BOOLEAN):
            assert field.options, field.name
            assert field.default in ("", *field.options), field.name
        else:
            assert field.options == field.values == ()


def test_wan_image_to_video_fields() -> None:
    fields = form_fields(CATALOG.models["wan2.5-image-to-video"].schema)
    assert [f.name for f in fields[:2]] == ["prompt", "image_urls"]
    by_name = {f.name: f for f in fields}
    prompt = by_name["prompt"]
    assert (prompt.kind, prompt.required, prompt.max_length) == (FieldKind.TEXTAREA, True, 1500)
    assert prompt.label == "Prompt"
    assert prompt.description.startswith("Text prompt")
    urls = by_name["image_urls"]
    assert (urls.kind, urls.required, urls.max_items) == (FieldKind.URL_LIST, True, 1)
    assert urls.label == "Image urls"
    assert urls.max_length == 2048
    duration = by_name["duration"]
    assert duration.kind is FieldKind.SELECT
    assert not duration.required
    assert (duration.options, duration.values, duration.default) == (("5", "10"), (5, 10), "5")
    resolution = by_name["resolution"]
    assert (resolution.options, resolution.default) == (("480p", "720p", "1080p"), "720p")
    seed = by_name["seed"]
    assert (seed.kind, seed.default, seed.minimum, seed.maximum) == (
        FieldKind.INTEGER,
        "",
        None,
        None,
    )
    assert by_name["negative_prompt"].kind is FieldKind.TEXTAREA
    assert by_name["audio"].kind is FieldKind.TEXT


@pytest.mark.parametrize(
    ("model", "name", "kind"),
    [
        ("elevenlabs-music", "composition_plan", FieldKind.JSON),  # an object
        ("minimax-music-2.6", "audio_setting", FieldKind.JSON),
        ("minimax-music-2.6", "lyrics", FieldKind.TEXTAREA),
        ("seedream-4.5", "size", FieldKind.JSON),  # untyped: oneOf string or object
        ("elevenlabs-tts-turbo-2-5", "language_code", FieldKind.TEXT),  # ["string", "null"]
        ("elevenlabs-tts-turbo-2-5", "next_text", FieldKind.TEXTAREA),
        ("sora-2-beta", "image_urls", FieldKind.URL_LIST),  # strings without format: uri
        ("meshy-6-text-to-3d", "enable_pbr", FieldKind.BOOLEAN),
        ("kling-1.6/pro", "cfg_scale", FieldKind.NUMBER),
        ("gpt-image-2", "size", FieldKind.TEXT),
    ],
)
def test_kind_of_known_properties(model: str, name: str, kind: FieldKind) -> None:
    assert fields_of(model)[name].kind is kind


def test_every_kind_occurs_in_the_catalog() -> None:
    kinds = {f.kind for model in MODELS for f in fields_of(model).values()}
    assert kinds == set(FieldKind)


def test_numbers_carry_their_bounds_as_text() -> None:
    bounded = [
        (model, field)
        for model in MODELS
        for field in fields_of(model).values()
        if field.kind in (FieldKind.INTEGER, FieldKind.NUMBER) and field.minimum is not None
    ]
    assert bounded
    for model, field in bounded:
        prop = CATALOG.models[model].schema["properties"][field.name]
        assert float(field.minimum or "") == prop["minimum"]
        if "maximum" in prop:
            assert float(field.maximum or "") == prop["maximum"]


def test_an_empty_string_in_an_enum_is_the_empty_choice() -> None:
    # meshy-6: pose_mode's enum is ["a-pose", "t-pose", ""], its default "": the form's
    # empty choice omits the field, which leaves the default.
    pose = fields_of("meshy-6-text-to-3d")["pose_mode"]
    assert (pose.options, pose.default) == (("a-pose", "t-pose"), "")


def test_defaults_become_form_text() -> None:
    schema = {
        "type": "object",
        "properties": {
            "urls": {"type": "array", "items": {"type": "string"}, "default": ["a", "b"]},
            "flag": {"type": "boolean", "default": False},
            "plan": {"type": "object", "default": {"x": [1]}},
            "ratio": {"type": "number", "default": 0.1},
            "size": {"oneOf": [{"type": "string"}, {"type": "object"}], "default": "1:1"},
            "none": {"type": ["string", "null"], "default": None},
        },
    }
    defaults = {f.name: f.default for f in form_fields(schema)}
    assert defaults == {
        "urls": "a\nb",
        "flag": "false",
        "plan": '{"x": [1]}',
        "ratio": "0.1",
        "size": '"1:1"',  # JSON text: the field is read as JSON
        "none": "",
    }


@pytest.mark.parametrize("model", MODELS)
def test_every_default_reads_back_as_itself(model: str) -> None:
    fields = fields_of(model)
    properties = CATALOG.models[model].schema["properties"]
    form = {name: field.default for name, field in fields.items()}
    data, errors = parse_form(list(fields.values()), form)
    assert errors == {}
    expected = {
        name: prop["default"]
        for name, prop in properties.items()
        if prop.get("default") not in (None, "")  # blank: nothing to pre-fill
    }
    assert data == expected


# Round trips


@pytest.mark.parametrize("case", VALID, ids=lambda case: f"{case.model}:{case.label}")
def test_a_valid_input_survives_the_form(case: Case) -> None:
    properties = CATALOG.models[case.model].schema["properties"]
    # A form cannot send "" (an empty field is omitted); meshy-6's pose_mode example is "",
    # the field's default, so omitting it asks for the same thing.
    expected = {k: v for k, v in case.input.items() if k in properties and v != ""}
    fields = form_fields(CATALOG.models[case.model].schema)
    data, errors = parse_form(fields, browser_form(case.model, expected))
    assert errors == {}
    assert data == expected
    assert json.dumps(data, sort_keys=True) == json.dumps(expected, sort_keys=True)  # types
    if CATALOG.problems(case.model, case.input) == []:  # some enum values break a rule
        assert CATALOG.problems(case.model, data) == []


def test_every_model_has_an_example_to_round_trip() -> None:
    examples = {case.model for case in VALID if case.kind == "example"}
    assert examples == set(MODELS)


# parse_form


def _field(name: str, kind: FieldKind, **extra: Any) -> FormField:
    return FormField(
        name=name,
        kind=kind,
        label=name.capitalize(),
        description="",
        required=False,
        options=extra.pop("options", ()),
        minimum=None,
        maximum=None,
        max_length=None,
        max_items=None,
        default="",
        **extra,
    )


FIELDS = [
    _field("count", FieldKind.INTEGER),
    _field("scale", FieldKind.NUMBER),
    _field("plan", FieldKind.JSON),
    _field("prompt", FieldKind.TEXTAREA),
    _field("title", FieldKind.TEXT),
    _field("image", FieldKind.URL),
    _field("images", FieldKind.URL_LIST),
    _field("loud", FieldKind.BOOLEAN, options=("true", "false")),
    _field("duration", FieldKind.SELECT, options=("5", "10"), values=(5, 10)),
    _field("ratio", FieldKind.SELECT, options=("1", "16:9"), values=("1", "16:9")),
]


def parse(**form: str) -> tuple[dict[str, Any], dict[str, str]]:
    return parse_form(FIELDS, form)


def test_empty_and_blank_values_are_omitted_and_other_keys_ignored() -> None:
    form = {f.name: "" for f in FIELDS} | {"prompt": " \r\n ", "images": "\r\n", "csrf": "x"}
    assert parse(**form) == ({}, {})


def test_values_get_their_types() -> None:
    data, errors = parse(
        count=" 7 ",
        scale="2",
        plan='{"a": [1, 2.5, null, true]}',
        prompt="line one\r\nline two",
        title=" keep  spaces ",
        image=" https://example.com/a.png ",
        images=" https://example.com/1.png \r\n\r\nhttps://example.com/2.png\r\n",
        loud="false",
        duration="10",
        ratio="1",
    )
    assert errors == {}
    assert data == {
        "count": 7,
        "scale": 2,
        "plan": {"a": [1, 2.5, None, True]},
        "prompt": "line one\nline two",
        "title": " keep  spaces ",
        "image": "https://example.com/a.png",
        "images": ["https://example.com/1.png", "https://example.com/2.png"],
        "loud": False,
        "duration": 10,
        "ratio": "1",  # a string enum stays a string, even when it looks like a number
    }
    assert type(data["count"]) is int
    assert type(data["scale"]) is int
    assert type(data["duration"]) is int


@pytest.mark.parametrize(
    ("text", "value"),
    [("2.5", 2.5), ("-0.25", -0.25), (".5", 0.5), ("1e-3", 0.001), ("5.0", 5.0), ("-3", -3)],
)
def test_numbers(text: str, value: float) -> None:
    data, errors = parse(scale=text)
    assert (data, errors) == ({"scale": value}, {})
    assert type(data["scale"]) is type(value)


@pytest.mark.parametrize(
    ("form", "errors"),
    [
        ({"count": "abc"}, {"count": "must be a whole number"}),
        ({"count": "5.5"}, {"count": "must be a whole number"}),
        ({"count": "1_000"}, {"count": "must be a whole number"}),
        ({"count": "٣"}, {"count": "must be a whole number"}),  # digits of another script
        ({"count": "9" * 5000}, {"count": "too large a number"}),
        ({"scale": "nan"}, {"scale": "must be a number"}),
        ({"scale": "1e999"}, {"scale": "must be a number"}),
        ({"scale": "1,5"}, {"scale": "must be a number"}),
        ({"loud": "yes"}, {"loud": "must be true or false"}),
        ({"duration": "7"}, {"duration": "must be one of the options"}),
        (
            {"plan": "{bad"},
            {
                "plan": "not valid JSON: Expecting property name enclosed in "
                "double quotes (line 1, column 2)"
            },
        ),
        (
            {"plan": '{\n  "a": 1\n  "b": 2}'},
            {"plan": "not valid JSON: Expecting ',' delimiter (line 3, column 3)"},
        ),
        ({"plan": '{"a": NaN}'}, {"plan": "not valid JSON: NaN is not a JSON value"}),
        ({"plan": "[" * 50_000}, {"plan": "not valid JSON: nested too deeply"}),
    ],
)
def test_what_cannot_be_read_is_reported_per_field(
    form: dict[str, str], errors: dict[str, str]
) -> None:
    assert parse(**form, title="fine") == ({"title": "fine"}, errors)


def test_a_value_over_the_size_limit_is_refused_whatever_its_kind() -> None:
    at_limit = "x" * MAX_VALUE_CHARS
    assert parse(title=at_limit) == ({"title": at_limit}, {})
    form = {f.name: "x" * (MAX_VALUE_CHARS + 1) for f in FIELDS}
    data, errors = parse(**form)
    assert data == {}
    assert errors == dict.fromkeys(form, "too long: at most 100,000 characters")


def test_every_error_at_once() -> None:
    data, errors = parse(count="x", scale="y", plan="z", title="ok")
    assert data == {"title": "ok"}
    assert set(errors) == {"count", "scale", "plan"}


# field_errors


def test_field_errors_place_each_detail_on_its_field_in_order() -> None:
    details: list[dict[str, Any]] = [
        {"loc": ["body", "input", "prompt"], "msg": "field required", "type": "required"},
        {"loc": ["body", "input", "image_urls", 0], "msg": "must be an http(s) URL", "type": "url"},
        {"loc": ["body", "input"], "msg": "must be an object", "type": "type"},
        {"loc": ["body", "input", "prompt"], "msg": "too long", "type": "maxLength"},
        {"loc": ["body", "model"], "msg": "unknown model", "type": "model"},
        {"loc": ("body", "input", "seed"), "msg": "not an integer", "type": "type"},
        {"msg": "no loc", "type": "x"},
    ]
    assert field_errors(details) == {
        "prompt": ["field required", "too long"],
        "image_urls": ["must be an http(s) URL"],
        "": ["must be an object", "unknown model", "no loc"],
        "seed": ["not an integer"],
    }
    assert field_errors([]) == {}


def test_field_errors_of_the_catalog_name_form_fields() -> None:
    model = "wan2.5-image-to-video"
    data = {"image_urls": ["ftp://nope"], "duration": 7, "colour": "red"}
    problems = CATALOG.problems(model, data)
    errors = field_errors([dict(problem) for problem in problems])
    assert set(errors) == {"prompt", "image_urls", "duration", "colour"}
    assert errors["prompt"] == ["field required"]
    assert errors["colour"] == ["unknown field"]  # keyed by name, whether a field or not
