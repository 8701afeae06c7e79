"""Rules PoYo states in its descriptions but its JSON Schemas cannot say, one small named
predicate each, by model family. Pure. A rule is broken when its predicate holds; the
error points at `field` and says `message`. docs/CATALOG.md lists each with its source
text; tests/test_family_rules.py checks each on a valid and an invalid input, and that the
invalid one is refused by the rule and nothing else.

Rules stated only as "X only for Y" or in ambiguous words are not enforced (the catalog
reference lists them too): a request PoYo would take must never be refused here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeGuard

from app.errors import ErrorItem

Input = dict[str, Any]
Broken = Callable[[str, Input], bool]


@dataclass(frozen=True)
class Rule:
    name: str
    family: str
    models: frozenset[str]
    field: str  # where the error points
    message: str
    broken: Broken


RULES: list[Rule] = []


def rule(
    name: str, family: str, models: Iterable[str], field: str, message: str
) -> Callable[[Broken], Broken]:
    def register(broken: Broken) -> Broken:
        RULES.append(Rule(name, family, frozenset(models), field, message, broken))
        return broken

    return register


def check(model_id: str, data: Input, rules: Iterable[Rule]) -> list[ErrorItem]:
    """The rules among `rules` that `data` breaks for `model_id`."""
    return [
        ErrorItem(loc=["body", "input", r.field], msg=r.message, type=f"rule:{r.name}")
        for r in rules
        if model_id in r.models and r.broken(model_id, data)
    ]


# ---- helpers ------------------------------------------------------------------------------


def given(x: Input, key: str) -> bool:
    """Present with a meaningful value: not null, not "", not []."""
    value = x.get(key)
    return value is not None and not (isinstance(value, str | list | dict) and len(value) == 0)


def count(x: Input, key: str) -> int:
    value = x.get(key)
    return len(value) if isinstance(value, list) else 0


def blank(x: Input, key: str) -> bool:
    value = x.get(key)
    return not (isinstance(value, str) and value.strip())


def number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def decimals(value: float) -> int:
    """Decimal places as written (0.655 has 3)."""
    exponent = Decimal(repr(value)).as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def shots_total(x: Input, default: float | None = None) -> float | None:
    """The sum of multi_prompt[].duration (None if a shot has none and there is no default)."""
    total = 0.0
    for shot in x.get("multi_prompt") or []:
        duration = shot.get("duration", default) if isinstance(shot, dict) else None
        if not number(duration):
            return None
        total += duration
    return total


# fmt: off
# (Each rule in a few lines: the decorator says what it is, the body when it is broken.)

# ---- Sora 2 -------------------------------------------------------------------------------


@rule("sora2pro_auto_aspect_ratio_requires_image", "Sora 2", ["sora-2-pro-official"],
      "aspect_ratio",
      'aspect_ratio "auto" follows the input image: give image_urls, or choose a ratio')
def _(m: str, x: Input) -> bool:
    return x.get("aspect_ratio") == "auto" and count(x, "image_urls") == 0


# ---- Veo 3.1 ------------------------------------------------------------------------------

VEO_OFFICIAL = ["veo3.1-fast-official", "veo3.1-lite-official", "veo3.1-quality-official"]


def veo_reference_mode(x: Input) -> bool:
    """`reference` mode, said or inferred from 3 images."""
    mode = x.get("generation_type")
    return mode == "reference" or ("generation_type" not in x and count(x, "image_urls") == 3)


@rule("veo31_lite_no_image_urls", "Veo 3.1", ["veo3.1-lite"], "image_urls",
      "veo3.1-lite is text-to-video only: it takes no image_urls")
def _(m: str, x: Input) -> bool:
    return "image_urls" in x


@rule("veo31_lite_no_generation_type", "Veo 3.1", ["veo3.1-lite"], "generation_type",
      "veo3.1-lite is text-to-video only: it takes no generation_type")
def _(m: str, x: Input) -> bool:
    return "generation_type" in x


@rule("veo31_quality_no_reference_mode", "Veo 3.1", ["veo3.1-quality"], "generation_type",
      "veo3.1-quality has no reference mode (3 reference images): use veo3.1-fast")
def _(m: str, x: Input) -> bool:
    return veo_reference_mode(x)


VEO_MODES = ["veo3.1-fast", "veo3.1-quality", *VEO_OFFICIAL]


@rule("veo31_generation_type_image_count", "Veo 3.1", VEO_MODES, "image_urls",
      'generation_type "frame" takes exactly 2 image_urls (first, last), "reference" exactly 3')
def _(m: str, x: Input) -> bool:
    mode, images = x.get("generation_type"), count(x, "image_urls")
    return (mode == "frame" and images != 2) or (mode == "reference" and images != 3)


@rule("veo31off_duration_values", "Veo 3.1", VEO_OFFICIAL, "duration",
      "duration must be 4, 6 or 8 seconds")
def _(m: str, x: Input) -> bool:
    return "duration" in x and x["duration"] not in (4, 6, 8)


@rule("veo31off_reference_mode_duration_8", "Veo 3.1", VEO_OFFICIAL, "duration",
      "reference mode (3 images) makes 8-second videos only: duration must be 8")
def _(m: str, x: Input) -> bool:
    return veo_reference_mode(x) and "duration" in x and x["duration"] != 8


@rule("veo31off_lite_two_images_duration_8", "Veo 3.1", ["veo3.1-lite-official"], "duration",
      "first-and-last-frame videos (2 images) on veo3.1-lite-official must be 8 seconds")
def _(m: str, x: Input) -> bool:
    two = count(x, "image_urls") == 2 or x.get("generation_type") == "frame"
    return two and "duration" in x and x["duration"] != 8


@rule("veo31off_lite_1080p_duration_8", "Veo 3.1", ["veo3.1-lite-official"], "duration",
      "1080p on veo3.1-lite-official requires duration 8")
def _(m: str, x: Input) -> bool:
    return x.get("resolution") == "1080p" and "duration" in x and x["duration"] != 8


@rule("veo31off_lite_max_2_images", "Veo 3.1", ["veo3.1-lite-official"], "image_urls",
      "veo3.1-lite-official takes at most 2 image_urls")
def _(m: str, x: Input) -> bool:
    return count(x, "image_urls") > 2


@rule("veo31off_auto_aspect_ratio_requires_images", "Veo 3.1", VEO_OFFICIAL, "aspect_ratio",
      'aspect_ratio "auto" follows the input images: give image_urls, or choose a ratio')
def _(m: str, x: Input) -> bool:
    return x.get("aspect_ratio") == "auto" and count(x, "image_urls") == 0


# ---- Kling --------------------------------------------------------------------------------

KLING_30 = ["kling-3.0/pro", "kling-3.0/standard"]
KLING_O3 = ["kling-o3/pro", "kling-o3/standard", "kling-o3/4K"]
KLING_SHOTS = [*KLING_30, "kling-3.0/4K", *KLING_O3]
KLING_TURBO = ["kling-3.0-turbo/pro", "kling-3.0-turbo/standard"]
KLING_16 = ["kling-1.6/pro", "kling-1.6/standard"]


@rule("kling26_end_frame_requires_sound_off", "Kling", ["kling-2.6"], "sound",
      "sound must be false when end_image_url is set")
def _(m: str, x: Input) -> bool:
    return given(x, "end_image_url") and x.get("sound") is True


@rule("kling_multishot_requires_sound", "Kling", KLING_SHOTS, "sound",
      "multi-shot videos (multi_shots true) need sound true")
def _(m: str, x: Input) -> bool:
    return x.get("multi_shots") is True and x.get("sound") is False


@rule("kling_prompt_required_single_shot", "Kling", KLING_SHOTS, "prompt",
      "prompt is required unless multi_shots is true")
def _(m: str, x: Input) -> bool:
    return x.get("multi_shots") is False and blank(x, "prompt")


@rule("kling_multi_prompt_required_multishot", "Kling", KLING_SHOTS, "multi_prompt",
      "multi_prompt is required when multi_shots is true")
def _(m: str, x: Input) -> bool:
    return x.get("multi_shots") is True and count(x, "multi_prompt") == 0


@rule("kling_duration_equals_shot_total", "Kling", KLING_SHOTS, "duration",
      "duration must equal the sum of the multi_prompt shot durations")
def _(m: str, x: Input) -> bool:
    if x.get("multi_shots") is not True or count(x, "multi_prompt") == 0 or "duration" not in x:
        return False
    total = shots_total(x)
    return total is not None and x["duration"] != total


@rule("kling_image_urls_max_2", "Kling", KLING_SHOTS, "image_urls",
      "image_urls takes at most 2 frames (start and end)")
def _(m: str, x: Input) -> bool:
    return count(x, "image_urls") > 2


@rule("kling30_multishot_start_frame_only", "Kling", KLING_30, "image_urls",
      "multi-shot videos take a start frame only: at most 1 image_urls")
def _(m: str, x: Input) -> bool:
    return x.get("multi_shots") is True and count(x, "image_urls") > 1


@rule("kling_elements_require_image_urls", "Kling", [*KLING_30, "kling-3.0/4K"], "kling_elements",
      "kling_elements need a start frame in image_urls")
def _(m: str, x: Input) -> bool:
    return count(x, "kling_elements") > 0 and count(x, "image_urls") == 0


@rule("kling30_element_media_shape", "Kling", KLING_30, "kling_elements",
      "each element gives either 2-4 element_input_urls or exactly 1 element_input_video_urls")
def _(m: str, x: Input) -> bool:
    for element in x.get("kling_elements") or []:
        if not isinstance(element, dict):
            continue
        images = len(element.get("element_input_urls") or [])
        videos = len(element.get("element_input_video_urls") or [])
        if bool(images) == bool(videos) or (images and not 2 <= images <= 4) or videos > 1:
            return True
    return False


@rule("klingo3_elements_require_reference_mode", "Kling", KLING_O3, "kling_elements",
      "kling_elements are for reference-to-video: give reference_image_urls")
def _(m: str, x: Input) -> bool:
    return count(x, "kling_elements") > 0 and count(x, "reference_image_urls") == 0


@rule("klingo3_reference_images_max_4", "Kling", KLING_O3, "reference_image_urls",
      "reference_image_urls takes at most 4 images")
def _(m: str, x: Input) -> bool:
    return count(x, "reference_image_urls") > 4


@rule("kling30turbo_prompt_multi_prompt_exclusive", "Kling", KLING_TURBO, "multi_prompt",
      "give prompt or multi_prompt, not both")
def _(m: str, x: Input) -> bool:
    return not blank(x, "prompt") and count(x, "multi_prompt") > 0


@rule("kling30turbo_multi_prompt_total_max_15", "Kling", KLING_TURBO, "multi_prompt",
      "the multi_prompt shots must last 15 seconds at most in all (a shot without duration: 5)")
def _(m: str, x: Input) -> bool:
    total = shots_total(x, default=5)
    return count(x, "multi_prompt") > 0 and total is not None and total > 15


@rule("kling30turbo_duration_equals_shot_total", "Kling", KLING_TURBO, "duration",
      "duration must equal the sum of the multi_prompt shot durations")
def _(m: str, x: Input) -> bool:
    if count(x, "multi_prompt") == 0 or "duration" not in x:
        return False
    total = shots_total(x, default=5)
    return total is not None and x["duration"] != total


@rule("kling30turbo_no_aspect_ratio_with_image", "Kling", KLING_TURBO, "aspect_ratio",
      "aspect_ratio is for text-to-video: leave it out with image_urls")
def _(m: str, x: Input) -> bool:
    return "aspect_ratio" in x and count(x, "image_urls") > 0


@rule("kling16_image_urls_exclusive", "Kling", KLING_16, "image_urls",
      "image_urls cannot be combined with start_image_url, end_image_url or cfg_scale")
def _(m: str, x: Input) -> bool:
    others = given(x, "start_image_url") or given(x, "end_image_url") or "cfg_scale" in x
    return count(x, "image_urls") > 0 and others


@rule("kling16_end_image_requires_start_image", "Kling", KLING_16, "end_image_url",
      "end_image_url needs start_image_url")
def _(m: str, x: Input) -> bool:
    return given(x, "end_image_url") and not given(x, "start_image_url")


@rule("kling_standard_end_image_pro_only", "Kling", ["kling-1.6/standard", "kling-2.1/standard"],
      "end_image_url",
      "end frames (end_image_url) are for the pro model only")
def _(m: str, x: Input) -> bool:
    return given(x, "end_image_url")


@rule("kling16_standard_no_aspect_ratio_i2v", "Kling", ["kling-1.6/standard"], "aspect_ratio",
      "image-to-video (start_image_url) on kling-1.6/standard takes no aspect_ratio")
def _(m: str, x: Input) -> bool:
    image_to_video = given(x, "start_image_url") and count(x, "image_urls") == 0
    return image_to_video and "aspect_ratio" in x


@rule("kling30mc_elements_require_video_orientation", "Kling", ["kling-3.0-motion-control"],
      "character_orientation",
      'kling_elements need character_orientation "video"')
def _(m: str, x: Input) -> bool:
    return count(x, "kling_elements") > 0 and x.get("character_orientation") != "video"


@rule("klingo3image_auto_size_edit_only", "Kling", ["kling-o3-image"], "size",
      'size "auto" is for editing (kling-o3-image-edit)')
def _(m: str, x: Input) -> bool:
    return x.get("size") == "auto"


# ---- image editing (Nano Banana, Seedream, Flux, GPT Image, Kling) ----------------------------

EDIT_MODELS = [
    "kling-o3-image-edit",
    "nano-banana-2-lite-edit",
    "nano-banana-2-official-edit",
    "nano-banana-2-new-edit",
    "nano-banana-pro-edit",
    "nano-banana-2-edit",
    "seedream-4-edit",
    "seedream-4.5-edit",
    "seedream-5.0-lite-edit",
    "seedream-5.0-pro-edit",
    "flux-kontext-pro-edit",
    "flux-kontext-max-edit",
    "flux-2-pro-edit",
    "flux-2-flex-edit",
    "gpt-image-2-edit",
]


@rule("edit_model_requires_image_urls", "Image editing", EDIT_MODELS, "image_urls",
      "an edit model needs the image(s) to edit in image_urls")
def _(m: str, x: Input) -> bool:
    return count(x, "image_urls") == 0


# ---- Seedance -----------------------------------------------------------------------------

SEEDANCE_2 = ["seedance-2", "seedance-2-fast"]
REFERENCES = ("reference_image_urls", "reference_video_urls", "reference_audio_urls")


@rule("seedance2_duration_range", "Seedance", SEEDANCE_2, "duration",
      "duration must be 4 to 15 seconds")
def _(m: str, x: Input) -> bool:
    return number(x.get("duration")) and not 4 <= x["duration"] <= 15


@rule("seedance2fast_resolution_480p_720p", "Seedance", ["seedance-2-fast"], "resolution",
      "seedance-2-fast renders 480p or 720p only")
def _(m: str, x: Input) -> bool:
    return x.get("resolution") in ("1080p", "4k")


def _images_with_references(m: str, x: Input) -> bool:
    return count(x, "image_urls") > 0 and any(count(x, key) > 0 for key in REFERENCES)


def _audio_without_visual_reference(m: str, x: Input) -> bool:
    visual = count(x, "reference_image_urls") + count(x, "reference_video_urls")
    return count(x, "reference_audio_urls") > 0 and visual == 0


for _family, _models in (("Seedance", [*SEEDANCE_2, "seedance-2-mini"]), ("Hailuo", ["hailuo-03"])):
    _prefix = "seedance2" if _family == "Seedance" else "hailuo03"
    rule(
        f"{_prefix}_image_urls_exclusive_with_references",
        _family,
        _models,
        "image_urls",
        "image_urls (first/last frame) cannot be combined with reference_*_urls",
    )(_images_with_references)
    rule(
        f"{_prefix}_reference_audio_requires_visual_reference",
        _family,
        _models,
        "reference_audio_urls",
        "reference_audio_urls needs a reference image or video too",
    )(_audio_without_visual_reference)


# ---- Hailuo -------------------------------------------------------------------------------


@rule("hailuo02_end_frame_requires_768p", "Hailuo", ["hailuo-02"], "resolution",
      'an end frame (end_image_url) needs resolution "768P"')
def _(m: str, x: Input) -> bool:
    return given(x, "end_image_url") and "resolution" in x and x["resolution"] != "768P"


# ---- Nano Banana --------------------------------------------------------------------------

NANO_NEW = ["nano-banana-2-new", "nano-banana-2-new-edit"]


@rule("nb2lite_image_urls_not_supported", "Nano Banana", ["nano-banana-2-lite"], "image_urls",
      "nano-banana-2-lite is text-to-image: use nano-banana-2-lite-edit for image_urls")
def _(m: str, x: Input) -> bool:
    return "image_urls" in x


@rule("nb2new_size_values", "Nano Banana", NANO_NEW, "size",
      'size "auto", "4:1", "1:4", "8:1" and "1:8" are not available on this model')
def _(m: str, x: Input) -> bool:
    return x.get("size") in ("auto", "4:1", "1:4", "8:1", "1:8")


@rule("nb2new_resolution_values", "Nano Banana", NANO_NEW, "resolution",
      'resolution "0.5K" is not available on this model')
def _(m: str, x: Input) -> bool:
    return x.get("resolution") == "0.5K"


NANO_14 = [
    "nano-banana-2-official", "nano-banana-2-official-edit", *NANO_NEW, "nano-banana-pro-edit"
]


@rule("nb_max_14_images", "Nano Banana", NANO_14, "image_urls",
      "image_urls takes at most 14 images")
def _(m: str, x: Input) -> bool:
    return count(x, "image_urls") > 14


@rule("nb2classic_no_auto_size", "Nano Banana", ["nano-banana-2", "nano-banana-2-edit"], "size",
      'size "auto" is not available on this model')
def _(m: str, x: Input) -> bool:
    return x.get("size") == "auto"


# ---- Seedream -----------------------------------------------------------------------------


@rule("seedream4_images_plus_n_max_15", "Seedream", ["seedream-4", "seedream-4-edit"], "n",
      "input images plus images to make (n) must be 15 at most")
def _(m: str, x: Input) -> bool:
    made = x["n"] if number(x.get("n")) else 1
    return count(x, "image_urls") + made > 15


# ---- Flux ---------------------------------------------------------------------------------

FLUX_2 = ["flux-2-pro", "flux-2-flex", "flux-2-pro-edit", "flux-2-flex-edit"]


@rule("flux2_auto_size_requires_image", "Flux", FLUX_2, "size",
      'size "auto" follows the first input image: give image_urls, or choose a size')
def _(m: str, x: Input) -> bool:
    return x.get("size") == "auto" and count(x, "image_urls") == 0


# ---- GPT Image ----------------------------------------------------------------------------

GPT_IMAGE_2 = ["gpt-image-2", "gpt-image-2-edit"]
GPT_IMAGE_2_PRESETS = (
    "auto",
    "1:1",
    "2:3",
    "3:2",
    "4:3",
    "3:4",
    "4:5",
    "5:4",
    "16:9",
    "9:16",
    "21:9",
)
CUSTOM_SIZE = re.compile(r"^\d+x\d+$")


@rule("gptimage2_size_format", "GPT Image", GPT_IMAGE_2, "size",
      'size is a preset ratio ("1:1", "16:9", "auto", …) or WIDTHxHEIGHT')
def _(m: str, x: Input) -> bool:
    size = x.get("size")
    return isinstance(size, str) and size not in GPT_IMAGE_2_PRESETS and not CUSTOM_SIZE.match(size)


@rule("gptimage2_custom_size_requires_2k_4k", "GPT Image", GPT_IMAGE_2, "resolution",
      'a custom WIDTHxHEIGHT size needs resolution "2K" or "4K"')
def _(m: str, x: Input) -> bool:
    size = x.get("size")
    custom = isinstance(size, str) and CUSTOM_SIZE.match(size) is not None
    return custom and x.get("resolution", "1K") not in ("2K", "4K")


# ---- music --------------------------------------------------------------------------------

SUNO_LIMITS: dict[str, list[tuple[str, set[str], int, str | None]]] = {
    # model: (field, mv values, most characters, only when this flag is true)
    "generate-music": [("prompt", {"V4"}, 3000, "custom_mode"), ("style", {"V4"}, 200, None)],
    "upload-and-cover-audio": [("prompt", {"V4"}, 3000, "custom_mode")],
    "upload-and-extend-audio": [
        ("prompt", {"V4"}, 3000, None),
        ("style", {"V4"}, 200, None),
        ("title", {"V4", "V4_5ALL"}, 80, None),
    ],
}
SUNO_CUSTOM = ["generate-music", "upload-and-cover-audio"]
PERSONA_FLAG = {
    "generate-music": "custom_mode",
    "upload-and-cover-audio": "custom_mode",
    "extend-music": "default_param_flag",
}
TWO_DECIMALS = {
    **dict.fromkeys(
        [
            "add-instrumental",
            "add-vocals",
            "extend-music",
            "generate-music",
            "upload-and-cover-audio",
            "upload-and-extend-audio",
        ],
        ("audio_weight", "style_weight", "weirdness_constraint"),
    ),
    "replace-section": ("infill_start_s", "infill_end_s"),
}


@rule("minimax_music_lyrics_or_flag", "Music", ["minimax-music-2.6"], "lyrics",
      "give lyrics, or set is_instrumental or lyrics_optimizer")
def _(m: str, x: Input) -> bool:
    flag = x.get("is_instrumental") is True or x.get("lyrics_optimizer") is True
    return blank(x, "lyrics") and not flag


@rule("elevenlabs_music_text_xor_composition_plan", "Music", ["elevenlabs-music"], "text",
      "give text or composition_plan, exactly one of them")
def _(m: str, x: Input) -> bool:
    return (x.get("text") is not None) == (x.get("composition_plan") is not None)


@rule("elevenlabs_music_text_only_fields", "Music", ["elevenlabs-music"], "duration",
      "duration and is_instrumental go with text, not with composition_plan")
def _(m: str, x: Input) -> bool:
    return ("duration" in x or "is_instrumental" in x) and "text" not in x


@rule("elevenlabs_music_plan_only_fields", "Music", ["elevenlabs-music"],
      "respect_sections_durations",
      "respect_sections_durations goes with composition_plan")
def _(m: str, x: Input) -> bool:
    return "respect_sections_durations" in x and "composition_plan" not in x


@rule("suno_custom_mode_requires_style_title", "Music", SUNO_CUSTOM, "style",
      "custom_mode needs style and title")
def _(m: str, x: Input) -> bool:
    return x.get("custom_mode") is True and (blank(x, "style") or blank(x, "title"))


@rule("extend_music_custom_requires_fields", "Music", ["extend-music"], "default_param_flag",
      "default_param_flag true needs prompt, style, title and continue_at")
def _(m: str, x: Input) -> bool:
    missing = blank(x, "prompt") or blank(x, "style") or blank(x, "title")
    return x.get("default_param_flag") is True and (missing or "continue_at" not in x)


@rule("upload_extend_custom_requires_fields", "Music", ["upload-and-extend-audio"],
      "default_param_flag",
      "default_param_flag true needs style and title (and prompt unless instrumental)")
def _(m: str, x: Input) -> bool:
    lyrics_missing = x.get("instrumental") is False and blank(x, "prompt")
    missing = blank(x, "style") or blank(x, "title") or lyrics_missing
    return x.get("default_param_flag") is True and missing


@rule("suno_noncustom_prompt_max_500", "Music", SUNO_CUSTOM, "prompt",
      "without custom_mode, prompt is 500 characters at most")
def _(m: str, x: Input) -> bool:
    prompt = x.get("prompt")
    return x.get("custom_mode") is False and isinstance(prompt, str) and len(prompt) > 500


@rule("suno_per_mv_length_limits", "Music", list(SUNO_LIMITS), "mv",
      "this mv allows shorter texts: V4 prompt 3000, style 200, title 80 characters")
def _(m: str, x: Input) -> bool:
    for name, versions, most, flag in SUNO_LIMITS[m]:
        value = x.get(name)
        applies = x.get("mv") in versions and (flag is None or x.get(flag) is True)
        if applies and isinstance(value, str) and len(value) > most:
            return True
    return False


@rule("suno_persona_requires_custom_mode", "Music", list(PERSONA_FLAG), "persona_id",
      "persona_id needs custom mode (custom_mode, or default_param_flag on extend-music)")
def _(m: str, x: Input) -> bool:
    return given(x, "persona_id") and x.get(PERSONA_FLAG[m]) is not True


def _more_than_two_decimals(field: str) -> Broken:
    def broken(m: str, x: Input) -> bool:
        return number(value := x.get(field)) and decimals(value) > 2

    return broken


for _field in sorted({field for fields in TWO_DECIMALS.values() for field in fields}):
    rule(
        f"{_field}_two_decimal_places",
        "Music",
        [model for model, fields in TWO_DECIMALS.items() if _field in fields],
        _field,
        f"{_field} takes at most 2 decimal places",
    )(_more_than_two_decimals(_field))


@rule("replace_section_end_after_start", "Music", ["replace-section"], "infill_end_s",
      "infill_end_s must come after infill_start_s")
def _(m: str, x: Input) -> bool:
    start, end = x.get("infill_start_s"), x.get("infill_end_s")
    return number(start) and number(end) and end <= start


@rule("generate_lyrics_max_200_words", "Music", ["generate-lyrics"], "prompt",
      "prompt is 200 words at most")
def _(m: str, x: Input) -> bool:
    prompt = x.get("prompt")
    return isinstance(prompt, str) and len(prompt.split()) > 200


# ---- speech -------------------------------------------------------------------------------


def _speaker_ids(x: Input) -> list[Any]:
    return [s.get("speaker_id") for s in x.get("speakers") or [] if isinstance(s, dict)]


@rule("gemini_tts_unique_speaker_ids", "Speech", ["gemini-3-1-flash-tts"], "speakers",
      "each speaker needs its own speaker_id")
def _(m: str, x: Input) -> bool:
    ids = _speaker_ids(x)
    return len(ids) != len(set(map(str, ids)))


@rule("gemini_tts_speaker_prefix_in_text", "Speech", ["gemini-3-1-flash-tts"], "text",
      'each speaker_id must start a line of text ("Alice: …")')
def _(m: str, x: Input) -> bool:
    text = x["text"] if isinstance(x.get("text"), str) else ""
    return any(
        isinstance(speaker, str)
        and not re.search(r"(?m)^[ \t]*" + re.escape(speaker) + r"[ \t]*:", text)
        for speaker in _speaker_ids(x)
    )


# ---- 3D -----------------------------------------------------------------------------------

HUNYUAN_TEXT = ["hunyuan-3d/v3.1/pro/text-to-3d", "hunyuan-3d/v3.1/rapid/text-to-3d"]
HUNYUAN_IMAGE = ["hunyuan-3d/v3.1/pro/image-to-3d", "hunyuan-3d/v3.1/rapid/image-to-3d"]
PROMPTED_3D = [
    *HUNYUAN_TEXT,
    "meshy-6-text-to-3d",
    "tripo3d-h3.1-text-to-3d",
    "tripo3d-p1-text-to-3d",
]
IMAGES_3D = {
    # model: (fewest, most) image_urls
    "hunyuan-3d/v3.1/pro/image-to-3d": (1, None),
    "hunyuan-3d/v3.1/rapid/image-to-3d": (1, None),
    "meshy-6-image-to-3d": (1, 1),
    "meshy-6-multi-image-to-3d": (1, None),
    "tripo3d-h3.1-image-to-3d": (1, 1),
    "tripo3d-p1-image-to-3d": (1, 1),
    "tripo3d-h3.1-multiview-to-3d": (2, 4),
}


@rule("text_to_3d_requires_prompt", "3D", PROMPTED_3D, "prompt",
      "text-to-3D needs a prompt")
def _(m: str, x: Input) -> bool:
    return blank(x, "prompt")


@rule("hunyuan_prompt_length", "3D", [*HUNYUAN_TEXT, *HUNYUAN_IMAGE], "prompt",
      "prompt is 1024 characters at most on pro models, 200 on rapid ones")
def _(m: str, x: Input) -> bool:
    prompt = x.get("prompt")
    return isinstance(prompt, str) and len(prompt) > (1024 if "/pro/" in m else 200)


@rule("image_to_3d_image_count", "3D", list(IMAGES_3D), "image_urls",
      "image-to-3D needs its input images: 1 (multi-image: 1 or more; multiview: 2 to 4)")
def _(m: str, x: Input) -> bool:
    fewest, most = IMAGES_3D[m]
    images = count(x, "image_urls")
    return images < fewest or (most is not None and images > most)


# ---- Wan, Happy Horse, Z-Image, Omni Flash -------------------------------------------------

WAN27: dict[str, Callable[[float], bool]] = {
    # model: allowed duration
    "wan2.7-text-to-video": lambda d: d in (5, 10, 15),
    "wan2.7-image-to-video": lambda d: 2 <= d <= 15,
    "wan2.7-reference-to-video": lambda d: 2 <= d <= 10,
    "wan2.7-edit-video": lambda d: d == 0 or 2 <= d <= 10,
}
HAPPY_HORSE = ["happy-horse", "happy-horse-1.1"]


@rule("wan26_v2v_no_15s", "Wan", ["wan2.6-video-to-video"], "duration",
      "video-to-video makes 5 or 10 seconds, not 15")
def _(m: str, x: Input) -> bool:
    return x.get("duration") == 15


WAN27_PROMPTED = ["wan2.7-text-to-video", "wan2.7-reference-to-video", "wan2.7-edit-video"]


@rule("wan27_prompt_required", "Wan", WAN27_PROMPTED, "prompt",
      "prompt is required")
def _(m: str, x: Input) -> bool:
    return blank(x, "prompt")


@rule("wan27_duration_by_mode", "Wan", list(WAN27), "duration",
      "duration out of range: text 5, 10 or 15; image 2-15; reference 2-10; edit 0 or 2-10")
def _(m: str, x: Input) -> bool:
    return number(x.get("duration")) and not WAN27[m](x["duration"])


@rule("wan27_edit_requires_video_url", "Wan", ["wan2.7-edit-video"], "video_url",
      "video editing needs video_url")
def _(m: str, x: Input) -> bool:
    return not given(x, "video_url")


@rule("happyhorse_prompt_required_unless_i2v", "Happy Horse", HAPPY_HORSE, "prompt",
      "prompt is required unless image_urls is given (image-to-video)")
def _(m: str, x: Input) -> bool:
    return blank(x, "prompt") and count(x, "image_urls") == 0


@rule("happyhorse_image_urls_exclusive", "Happy Horse", HAPPY_HORSE, "image_urls",
      "image_urls cannot be combined with reference_image_urls (or, on happy-horse, video_url)")
def _(m: str, x: Input) -> bool:
    others = count(x, "reference_image_urls") > 0 or (m == "happy-horse" and given(x, "video_url"))
    return count(x, "image_urls") > 0 and others


@rule("happyhorse_reference_image_count", "Happy Horse", ["happy-horse"], "reference_image_urls",
      "reference_image_urls takes at most 9 images (5 with video_url)")
def _(m: str, x: Input) -> bool:
    return count(x, "reference_image_urls") > (5 if given(x, "video_url") else 9)


@rule("zimage_size_required_text_to_image", "Z-Image", ["z-image"], "size",
      "text-to-image (no image_urls) needs size")
def _(m: str, x: Input) -> bool:
    return count(x, "image_urls") == 0 and "size" not in x


@rule("zimage_exactly_one_image", "Z-Image", ["z-image"], "image_urls",
      "image_urls, when given, holds exactly 1 image")
def _(m: str, x: Input) -> bool:
    return isinstance(x.get("image_urls"), list) and len(x["image_urls"]) != 1


@rule("omniflash_image_count_0_1_3", "Omni Flash", ["omni-flash"], "image_urls",
      "image_urls takes 1 or 3 images, not 2")
def _(m: str, x: Input) -> bool:
    return count(x, "image_urls") == 2


@rule("omniflash_no_duration_with_video", "Omni Flash", ["omni-flash"], "duration",
      "duration follows the input video: leave it out with video_urls")
def _(m: str, x: Input) -> bool:
    return "duration" in x and count(x, "video_urls") > 0
# fmt: on
