"""What a job will cost before it is sent, from the model's billing rule in PoYo's catalog.
Pure: no I/O. docs/BILLING.md explains every decision below.

`estimate(entry, job_input)` turns the rule into one formula (`effective_formula`), binds
its variables from the input (the VARIABLES table; the schema's `default` for an absent
field, as PoYo applies it) and evaluates it with app/billing/formula.py. When the price
cannot be known before the job runs (tokens, text length, output size, the length of a
video PoYo measures, a field the input leaves to an unpublished default, a value the
catalog has no price for) the estimate is null and says why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from app.billing import formula as f
from app.catalog.document import Entry
from app.catalog.strict import UNDECLARED_INPUTS

USD_PER_CREDIT = Fraction(5, 1000)  # 1 credit ≈ US$0.005 (PoYo: "$0.64/min = 128 credits")
DECIMALS = 4  # credits and usd are rounded half-up to 4 decimal places
MAX_RUNS = 64  # evaluations tried over the candidate values of unset fields
MAX_REASON = 200  # characters: a reason is stored with the job

# Why an estimate is null. The first three hold for every input of their models.
TOKEN_BASED = "token-based: charged by tokens used"  # noqa: S105 - not a secret
TEXT_LENGTH = "depends on input length: charged per 1,000 characters of text"
OUTPUT_MEGAPIXELS = "depends on the output: output megapixels"
SOURCE_LENGTH = "depends on the length of an input video, which PoYo measures"
UNSET = "depends on {field}, which the input leaves to PoYo's unpublished default"
NO_PRICE = "no price in the catalog for {where} {key!r}"
NO_RULE = "no billing rule in the catalog"
NOT_UNDERSTOOD = "billing rule not understood: {detail}"
NOT_PRICEABLE = "cannot price this input: {detail}"

# Billing rules whose `formula` is prose, and the formula it states. Matched on the exact
# text (whitespace aside): a reworded rule is "not understood" until reviewed here.
PROSE_FORMULAS = {
    "Without video input: output duration * rate. With video input: (input video billing "
    "duration + output duration) * with_video rate.": (
        "billed_seconds * credit_rules[resolution][video_input_mode]"
    ),
}

# The count of output images, by the name the schema gives it.
COUNT_FIELDS = ("n", "num_images", "number_of_images")
# A count field whose description says so is billed per image (`n` of seedream-4,
# wan-2.7-image, kling-o3-image, ...), even where the rule's unit is "request".
BILLED_BY_COUNT = re.compile(r"credit|billing|billed|charged", re.IGNORECASE)
# Hunyuan 3D's extra views: any of them makes a multiview request.
MULTIVIEW_FIELDS = (
    "top_image_url",
    "back_image_url",
    "left_image_url",
    "right_image_url",
    "bottom_image_url",
    "left_front_image_url",
    "right_front_image_url",
)
TRUE_4K_SIZES = ("16:9", "9:16", "21:9")
_CUSTOM_SIZE = re.compile(r"^\s*(\d+)\s*[x*]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Estimate:
    """`credits` and `usd` are both null, or neither; `reason` says why they are null (at
    most MAX_REASON characters)."""

    credits: float | None
    usd: float | None
    reason: str | None = None

    @classmethod
    def unknown(cls, reason: str) -> Estimate:
        if len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 1] + "…"
        return cls(None, None, reason)

    @property
    def millicredits(self) -> int | None:
        """`credits` in exact thousandths of a credit (rounded half-up), for sums."""
        if self.credits is None:
            return None
        return int(Fraction(repr(self.credits)) * 1000 + Fraction(1, 2))

    @classmethod
    def of(cls, credits: Fraction) -> Estimate:
        return cls(_rounded(credits), _rounded(credits * USD_PER_CREDIT))


def _rounded(value: Fraction) -> float:
    scale = 10**DECIMALS
    return float(Fraction(int(value * scale + Fraction(1, 2)), scale))


def estimate(entry: Entry, job_input: Mapping[str, Any]) -> Estimate:
    """The cost of running `entry` (a catalog model) on `job_input`."""
    return estimate_rule(entry.billing, entry.input_schema, job_input)


def estimate_rule(
    billing: Mapping[str, Any] | None, input_schema: Mapping[str, Any], job_input: Mapping[str, Any]
) -> Estimate:
    """The same, from the billing rule and input schema themselves."""
    if not billing:
        return Estimate.unknown(NO_RULE)
    reason = static_reason(billing)
    if reason is not None:
        return Estimate.unknown(reason)
    try:
        text = effective_formula(billing, input_schema)
        node = f.parse(text)
        credits = _price(_Context(billing, input_schema, job_input), node)
    except _Unknowable as unknowable:
        return Estimate.unknown(unknowable.reason)
    except f.FormulaKeyError as missing:
        return Estimate.unknown(NO_PRICE.format(where=missing.where, key=missing.key))
    except (f.FormulaSyntaxError, f.FormulaLimitError, f.FormulaNameError) as error:
        return Estimate.unknown(NOT_UNDERSTOOD.format(detail=error))
    except f.FormulaError as error:
        return Estimate.unknown(NOT_PRICEABLE.format(detail=error))
    if credits < 0:
        return Estimate.unknown(NOT_PRICEABLE.format(detail="the rule gives a negative price"))
    return Estimate.of(credits)


def static_reason(billing: Mapping[str, Any] | None) -> str | None:
    """Why no input of this rule can be priced before the job runs, or None."""
    if not billing:
        return NO_RULE
    if billing.get("type") == "token":
        return TOKEN_BASED
    text = _normalised(billing.get("formula"))
    try:
        variables = f.names(f.parse(PROSE_FORMULAS.get(text, text))) if text else frozenset()
    except f.FormulaError:
        return None
    return next((ALWAYS_UNKNOWN[name] for name in sorted(variables & ALWAYS_UNKNOWN.keys())), None)


def effective_formula(billing: Mapping[str, Any], input_schema: Mapping[str, Any]) -> str:
    """The formula an estimate evaluates: the rule's own, or the one its shape states.

    - `formula` (prose ones via PROSE_FORMULAS), else the fixed `credits`, else the one
      price table named `<field>_credits` / `<field>_credit_rates` after an input field,
      per second (`duration *`) when the unit is "second";
    - `+ input_image_count * input_image_credits` where the rule has `input_image_credits`
      and its formula does not bill input images already;
    - `number_of_images * (...)` where the count of images is billed (unit "image", or
      the count field says so) and the formula does not multiply by it already.
    Raises _Unknowable when the rule has no price in any of these shapes."""
    properties = _properties(input_schema)
    text = _normalised(billing.get("formula"))
    text = PROSE_FORMULAS.get(text, text)
    if not text:
        text = _formula_from_shape(billing, properties)
    variables = f.names(f.parse(text))
    if _number(billing.get("input_image_credits")) and not variables & {
        "reference_image_count",
        "input_image_count",
    }:
        text = f"({text}) + input_image_count * input_image_credits"
    if "number_of_images" not in variables and _billed_by_count(billing, properties):
        text = f"number_of_images * ({text})"
    return text


def _formula_from_shape(billing: Mapping[str, Any], properties: Mapping[str, Any]) -> str:
    if _number(billing.get("credits")):
        return "credits"
    tables = [
        (name, field)
        for name, value in billing.items()
        if isinstance(value, dict)
        and (field := re.sub(r"_(credits|credit_rates)$", "", name)) != name
        and field in properties
    ]
    if len(tables) != 1:
        raise _Unknowable(NOT_UNDERSTOOD.format(detail="no formula, credits or price table"))
    name, field = tables[0]
    return f"duration * {name}[{field}]" if billing.get("unit") == "second" else f"{name}[{field}]"


def _billed_by_count(billing: Mapping[str, Any], properties: Mapping[str, Any]) -> bool:
    field = next((name for name in COUNT_FIELDS if name in properties), None)
    if field is None:
        return False
    description = str(properties[field].get("description") or "")
    return billing.get("unit") == "image" or bool(BILLED_BY_COUNT.search(description))


def _normalised(text: Any) -> str:
    return " ".join(text.split()) if isinstance(text, str) else ""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _properties(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    properties = schema.get("properties")
    return properties if isinstance(properties, dict) else {}


# ---- evaluation over unset fields ---------------------------------------------------------


class _Unknowable(Exception):
    """The price depends on something not known before the job runs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Unset(Exception):
    """An input field the price depends on is absent and has no default."""

    def __init__(self, field: str, candidates: list[Any]) -> None:
        super().__init__(field)
        self.field = field
        self.candidates = candidates


def _price(context: _Context, node: f.Node) -> Fraction:
    """The price; where an unset field's every allowed value (its enum, or true/false)
    gives the same price, that price: PoYo's default is one of them."""
    runs = [0]

    def run(bound: dict[str, Any]) -> Fraction:
        runs[0] += 1
        try:
            value = f.evaluate(node, _Variables(context.bind(bound)), short_tables=True)
        except _Unset as unset:
            if not unset.candidates or runs[0] + len(unset.candidates) > MAX_RUNS:
                raise _Unknowable(UNSET.format(field=unset.field)) from None
            prices: set[Fraction | None] = set()
            for candidate in unset.candidates:
                try:
                    prices.add(run({**bound, unset.field: candidate}))
                except (_Unknowable, f.FormulaError):
                    prices.add(None)
            (price,) = prices if len(prices) == 1 else (None,)
            if price is None:
                raise _Unknowable(UNSET.format(field=unset.field)) from None
            return price
        if not isinstance(value, Fraction):
            raise f.FormulaTypeError(f"the rule gives a {f.kind_of(value)}, not a price")
        return value

    return run({})


# ---- variables ----------------------------------------------------------------------------

_MISSING = object()


class _Context:
    """The input as PoYo reads it: given values, else the schema's defaults."""

    def __init__(
        self,
        billing: Mapping[str, Any],
        schema: Mapping[str, Any],
        job_input: Mapping[str, Any],
        bound: Mapping[str, Any] | None = None,
    ) -> None:
        self.billing = billing
        self.schema = schema
        self.properties = _properties(schema)
        self.input = job_input
        self.bound = bound or {}

    def bind(self, bound: Mapping[str, Any]) -> _Context:
        return _Context(self.billing, self.schema, self.input, bound)

    def given(self, field: str) -> bool:
        """Present with a meaningful value: not null, not "", not []."""
        value = self.input.get(field)
        return value is not None and not (isinstance(value, str | list | dict) and not value)

    def count(self, field: str) -> int:
        value = self.input.get(field)
        return len(value) if isinstance(value, list) else 0

    def value(self, field: str, fallback: Callable[[], Any] | None = None) -> Any:
        """The field's value: given, else `fallback()` (when not None), else the schema's
        default; else _Unset, which lists the values PoYo's default could take."""
        value = self.input.get(field)
        if value is not None:
            return value
        if fallback is not None and (derived := fallback()) is not None:
            return derived
        spec = self.properties.get(field)
        if isinstance(spec, dict) and spec.get("default") is not None:
            return spec["default"]
        if field in self.bound:
            return self.bound[field]
        raise _Unset(field, _candidates(spec))

    def table_keys(self, table: str) -> set[str]:
        value = self.billing.get(table)
        return set(value) if isinstance(value, dict) else set()


def _candidates(spec: Any) -> list[Any]:
    if not isinstance(spec, dict):
        return []
    if isinstance(spec.get("enum"), list):
        return [value for value in spec["enum"] if value is not None]
    return [True, False] if spec.get("type") == "boolean" else []


class _Variables(Mapping[str, Any]):
    """A formula's names, each resolved when the evaluator first reads it: billing
    tables and parameters, then VARIABLES, then input fields (with the inputs the rule
    reads but PoYo's schema omits: app/catalog/strict.py's UNDECLARED_INPUTS)."""

    def __init__(self, context: _Context) -> None:
        self.context = context
        billing = context.billing
        parameters = billing.get("parameters")
        self.billing: dict[str, Any] = {
            **{k: v for k, v in billing.items() if isinstance(v, dict) and k != "parameters"},
            **{k: v for k, v in billing.items() if _number(v)},
            **(
                {k: v for k, v in parameters.items() if _number(v)}
                if isinstance(parameters, dict)
                else {}
            ),
        }

    def __getitem__(self, name: str) -> Any:
        if name in self.billing:
            return self.billing[name]
        if name in VARIABLES:
            return VARIABLES[name].resolve(self.context)
        if name in self.context.properties or name in UNDECLARED_INPUTS:
            return self.context.value(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.billing)

    def __len__(self) -> int:
        return len(self.billing)


@dataclass(frozen=True)
class Variable:
    """A formula variable that is not simply the input field of that name."""

    meaning: str  # docs/BILLING.md quotes it
    resolve: Callable[[_Context], Any]


def _unknowable(reason: str) -> Callable[[_Context], Any]:
    def resolve(context: _Context) -> Any:
        raise _Unknowable(reason)

    return resolve


def _duration(context: _Context) -> Any:
    def from_parts() -> Any:
        shots = context.input.get("multi_prompt")
        if isinstance(shots, list) and shots:
            durations = [s.get("duration") if isinstance(s, dict) else None for s in shots]
            if all(_number(d) for d in durations):
                return sum(durations)
        plan = context.input.get("composition_plan")
        if isinstance(plan, dict) and context.input.get("respect_sections_durations") is not False:
            sections = plan.get("sections")
            if isinstance(sections, list) and sections:
                durations = [s.get("duration") if isinstance(s, dict) else None for s in sections]
                if all(_number(d) for d in durations):
                    return sum(durations)
        return None

    duration = context.value("duration", from_parts)
    if duration == 0:  # wan2.7-edit-video: "0 means PoYo probes the source video duration"
        raise _Unknowable(SOURCE_LENGTH)
    return duration


def _number_of_images(context: _Context) -> Any:
    field = next((name for name in COUNT_FIELDS if name in context.properties), None)
    return 1 if field is None else _value_or(context, field, 1)


def _value_or(context: _Context, field: str, absent: Any) -> Any:
    """The field's value or default; `absent` when it has neither."""
    try:
        return context.value(field)
    except _Unset:
        return absent


def _reference_image_count(context: _Context) -> int:
    if "reference_image_urls" in context.properties:
        return context.count("reference_image_urls")
    return context.count("image_urls")


def _billable_resolution(context: _Context) -> Any:
    resolution = context.value("resolution")
    if resolution != "4K":
        return resolution
    size = str(context.value("size") if "size" in context.properties else "")
    custom = _CUSTOM_SIZE.match(size)
    true_4k = size in TRUE_4K_SIZES or bool(custom and "3840" in custom.groups())
    return "4K" if true_4k else "2K"


def _mode(context: _Context) -> Any:
    if "mode" in context.properties:
        return context.value("mode")
    keys = context.table_keys("price_table")
    if {"generate", "video_edit"} <= keys:
        if context.given("video_url"):  # the output follows the source video
            raise _Unknowable(SOURCE_LENGTH)
        return "generate"
    if {"text_to_video", "image_to_video"} <= keys:
        return "image_to_video" if context.count("image_urls") else "text_to_video"
    raise _Unknowable(NOT_UNDERSTOOD.format(detail="a `mode` the price table does not name"))


def _size(context: _Context) -> Any:
    if "size" in context.properties:
        return context.value("size")
    return context.value("aspect_ratio")


def _seconds_of_reference_videos(context: _Context) -> Any:
    if context.count("reference_video_urls"):
        raise _Unknowable(SOURCE_LENGTH)
    return 0


def _billed_seconds(context: _Context) -> Any:
    if context.count("reference_video_urls"):
        raise _Unknowable(SOURCE_LENGTH)
    return _duration(context)


VARIABLES: dict[str, Variable] = {
    "duration": Variable(
        "`duration`; if absent, the sum of `multi_prompt[].duration` (Kling shots), or of "
        "`composition_plan.sections[].duration` unless `respect_sections_durations` is "
        "false (ElevenLabs Music); else its default. 0 (wan2.7-edit-video: PoYo probes the "
        "source video) gives no estimate",
        _duration,
    ),
    "enable_pbr": Variable(
        "`enable_pbr`; absent: false (an add-on not asked for)",
        lambda c: _value_or(c, "enable_pbr", False),
    ),
    "number_of_images": Variable(
        "`n` (or `num_images`, `number_of_images`), else its default, else 1",
        _number_of_images,
    ),
    "reference_image_count": Variable(
        "the number of `reference_image_urls` where the schema has that field, "
        "else of `image_urls`",
        _reference_image_count,
    ),
    "input_image_count": Variable(
        "the number of `image_urls` plus `reference_image_urls`",
        lambda c: c.count("image_urls") + c.count("reference_image_urls"),
    ),
    "is_multiview": Variable(
        "true when any extra view is given: " + ", ".join(f"`{v}`" for v in MULTIVIEW_FIELDS),
        lambda c: any(c.given(field) for field in MULTIVIEW_FIELDS),
    ),
    "has_custom_face_count": Variable(
        "true when `face_count` is given (even at its default value)",
        lambda c: c.given("face_count"),
    ),
    "texture_mode": Variable(
        '"none" when `texture` is false, else `texture_quality`',
        lambda c: c.value("texture_quality") if c.value("texture") is not False else "none",
    ),
    "billable_resolution": Variable(
        "`resolution`, except that 4K is billed as 2K unless `size` is 16:9, 9:16, 21:9 "
        "or a custom size with a 3840-pixel edge (gpt-image-2)",
        _billable_resolution,
    ),
    "mode": Variable(
        "`mode` where the schema has it; else from the price table's keys: "
        '"image_to_video" with `image_urls`, else "text_to_video" (hailuo-02); '
        '"generate", or with `video_url` video editing, billed by the source video\'s '
        "length, which gives no estimate (happy-horse)",
        _mode,
    ),
    "size": Variable("`size`, or `aspect_ratio` where the schema has no `size`", _size),
    "resolution_group": Variable(
        '"4k" when `resolution` is 4k, else "standard"',
        lambda c: "4k" if str(c.value("resolution")).lower() == "4k" else "standard",
    ),
    "has_video_input": Variable(
        "true when `video_urls` is non-empty", lambda c: c.count("video_urls") > 0
    ),
    "video_input_mode": Variable(
        '"with_video" when `reference_video_urls` is non-empty, else "without_video"',
        lambda c: "with_video" if c.count("reference_video_urls") else "without_video",
    ),
    "billed_seconds": Variable(
        "`duration` without `reference_video_urls`; with them, the videos' length is "
        "added, which gives no estimate",
        _billed_seconds,
    ),
    "reference_video_seconds": Variable(
        "0 without `reference_video_urls`; with them no estimate (their length)",
        _seconds_of_reference_videos,
    ),
    "text_characters": Variable(
        "the text's length: no estimate (the issue: input-length-dependent)",
        _unknowable(TEXT_LENGTH),
    ),
    "output_megapixels": Variable("the output's size: no estimate", _unknowable(OUTPUT_MEGAPIXELS)),
}

# Variables no input determines: a rule naming one is never estimated.
ALWAYS_UNKNOWN = {"text_characters": TEXT_LENGTH, "output_megapixels": OUTPUT_MEGAPIXELS}
