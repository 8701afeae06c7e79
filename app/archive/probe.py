"""What is cheap to read of a media file: an image's width and height (Pillow reads the
header only), an audio or video file's duration (mutagen reads the container's header:
MP4, WAV, MP3, FLAC, Ogg, …). Anything unreadable is simply unknown (None)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import mutagen
from PIL import Image

DURATION_DECIMALS = 3


@dataclass(frozen=True)
class MediaInfo:
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None


def probe(path: Path, content_type: str) -> MediaInfo:
    family = content_type.split("/", 1)[0]
    if family == "image":
        return _image(path)
    if family in {"audio", "video"}:
        return _duration(path)
    return MediaInfo()


def _image(path: Path) -> MediaInfo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # lazy: the pixels are never decoded
                width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return MediaInfo()
    return MediaInfo(width=width, height=height)


def _duration(path: Path) -> MediaInfo:
    try:
        media = mutagen.File(path)
    except (mutagen.MutagenError, OSError, ValueError):
        return MediaInfo()
    length = getattr(getattr(media, "info", None), "length", None)
    if not isinstance(length, int | float) or length <= 0:
        return MediaInfo()
    return MediaInfo(duration_seconds=round(float(length), DURATION_DECIMALS))
