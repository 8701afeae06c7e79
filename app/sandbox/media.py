"""Small real files of each kind, made by code, for the simulator's finished tasks: a PNG,
a WAV, a GLB and TTS timestamps (a video is the MP4 shipped beside this module)."""

from __future__ import annotations

import io
import math
import struct
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path

import orjson

SAMPLE_VIDEO = Path(__file__).parent / "static" / "sample.mp4"
IMAGE_SIZE = 64


@dataclass(frozen=True)
class Kind:
    file_type: str  # PoYo's `file_type`
    extension: str
    media_type: str


VIDEO = Kind("video", "mp4", "video/mp4")
IMAGE = Kind("image", "png", "image/png")
AUDIO = Kind("audio", "wav", "audio/wav")
MODEL_3D = Kind("3d", "glb", "model/gltf-binary")
TIMESTAMPS = Kind("json", "json", "application/json")
KINDS = {kind.extension: kind for kind in (VIDEO, IMAGE, AUDIO, MODEL_3D, TIMESTAMPS)}


def png(seed: int, size: int = IMAGE_SIZE) -> bytes:
    """A size x size RGB gradient, its colours drawn from `seed`."""
    red, green, blue = seed & 0xFF, (seed >> 8) & 0xFF, (seed >> 16) & 0xFF
    rows = b"".join(
        b"\x00"
        + bytes(v for x in range(size) for v in (red, (green + 4 * y) % 256, (blue + 4 * x) % 256))
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def wav(seconds: float = 1.0, frequency: float = 440.0, rate: int = 8000) -> bytes:
    """A mono 16-bit sine tone."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        frames = (
            struct.pack("<h", int(12000 * math.sin(2 * math.pi * frequency * i / rate)))
            for i in range(int(seconds * rate))
        )
        out.writeframes(b"".join(frames))
    return buffer.getvalue()


def glb() -> bytes:
    """A glTF 2.0 binary holding one triangle."""
    positions = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0)
    gltf = {
        "asset": {"version": "2.0", "generator": "poyo-relay sandbox"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "buffers": [{"byteLength": len(positions)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(positions)}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 0],
            }
        ],
    }
    json_chunk = orjson.dumps(gltf)
    json_chunk += b" " * (-len(json_chunk) % 4)
    bin_chunk = positions + b"\x00" * (-len(positions) % 4)
    body = (
        struct.pack("<I4s", len(json_chunk), b"JSON")
        + json_chunk
        + struct.pack("<I4s", len(bin_chunk), b"BIN\x00")
        + bin_chunk
    )
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def timestamps(text: str, seconds: float = 1.0) -> bytes:
    """Word timings over `seconds`, as TTS providers give them beside the audio."""
    words = text.split() or ["(silence)"]
    step = seconds / len(words)
    spans = [
        {"word": word, "start": round(i * step, 3), "end": round((i + 1) * step, 3)}
        for i, word in enumerate(words[:200])
    ]
    return orjson.dumps({"words": spans})


def render(kind: Kind, seed: int, text: str) -> bytes:
    if kind is IMAGE:
        return png(seed)
    if kind is AUDIO:
        return wav(frequency=220 + seed % 440)
    if kind is MODEL_3D:
        return glb()
    if kind is TIMESTAMPS:
        return timestamps(text)
    return SAMPLE_VIDEO.read_bytes()
