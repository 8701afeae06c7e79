"""Input schemas of the supported models (docs/API.md). Adding a model is one entry below."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from app.catalog.fields import HttpUrl, ModelInput, NegativePrompt, Prompt, Seed
from app.catalog.registry import Catalog, ModelEntry


class Wan25ImageToVideoInput(ModelInput):
    prompt: Prompt
    image_urls: Annotated[list[HttpUrl], Field(min_length=1, max_length=1)]
    resolution: Literal["480p", "720p", "1080p"] = "720p"
    duration: Literal[5, 10] = 5
    seed: Seed | None = None
    negative_prompt: NegativePrompt | None = None
    audio: HttpUrl | None = Field(default=None, description="URL of a wav or mp3 file")


class Wan25TextToVideoInput(ModelInput):
    prompt: Prompt
    aspect_ratio: (
        Literal["832*480", "480*832", "1280*720", "720*1280", "1920*1080", "1080*1920"] | None
    ) = None
    duration: Literal[5, 10] = 5
    seed: Seed | None = None
    negative_prompt: NegativePrompt | None = None
    audio: HttpUrl | None = Field(default=None, description="URL of a wav or mp3 file")


CATALOG = Catalog(
    [
        ModelEntry(
            name="wan2.5-image-to-video",
            description="Wan 2.5: animate one image into a 5 or 10 second video.",
            input_schema=Wan25ImageToVideoInput,
        ),
        ModelEntry(
            name="wan2.5-text-to-video",
            description="Wan 2.5: a 5 or 10 second video from a text prompt.",
            input_schema=Wan25TextToVideoInput,
        ),
    ]
)
