"""The sandbox plays every model: a job of each catalog category runs end to end through
the service and the simulator, and its outputs are real files of the model's kind (PNG,
MP4, WAV, GLB; `n` images when asked; TTS word timings beside the audio). The simulator
checks submissions against PoYo's published schema and honours Idempotency-Key."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import wave
import zlib
from typing import Any

import httpx
import pytest

from app.catalog.compiled import Catalog
from app.catalog.document import load_snapshot
from tests.conftest import SIMULATOR_KEY, Service, Simulator
from tests.support import eventually

CATALOG = Catalog(load_snapshot())
VIDEO_CATEGORIES = {"video", "img2vid", "text2vid", "video2video"}
AUDIO_CATEGORIES = {"audio", "text2audio", "audio2audio"}


def one_model_per_category() -> dict[str, str]:
    chosen: dict[str, str] = {}
    for model_id, spec in sorted(CATALOG.models.items()):
        chosen.setdefault(spec.entry.category, model_id)
    return chosen


def expected_type(model_id: str) -> str:
    category = CATALOG.models[model_id].entry.category
    if category == "3d":
        return "3d"
    if category in VIDEO_CATEGORIES or "video" in model_id:
        return "video"
    return "audio" if category in AUDIO_CATEGORIES else "image"


# ---- what a real file of each kind looks like ------------------------------------------


def check_png(data: bytes) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, pixels = 8, [], b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        chunks.append(kind)
        if kind == b"IDAT":
            pixels += body
        offset += 12 + length
    assert chunks[0] == b"IHDR"
    assert chunks[-1] == b"IEND"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (depth, colour) == (8, 2)
    assert len(zlib.decompress(pixels)) == height * (1 + 3 * width)


def check_wav(data: bytes) -> None:
    with wave.open(io.BytesIO(data)) as audio:
        assert audio.getnframes() > 0
        assert audio.getframerate() > 0


def check_glb(data: bytes) -> None:
    magic, version, length = struct.unpack("<4sII", data[:12])
    assert (magic, version, length) == (b"glTF", 2, len(data))
    chunk_length, chunk_type = struct.unpack("<I4s", data[12:20])
    assert chunk_type == b"JSON"
    gltf = json.loads(data[20 : 20 + chunk_length])
    assert gltf["asset"]["version"] == "2.0"
    assert gltf["meshes"]


def check_mp4(data: bytes) -> None:
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        boxes.append(kind)
        assert size >= 8
        offset += size
    assert offset == len(data)
    assert boxes[0] == b"ftyp"
    assert b"moov" in boxes


CHECKS = {
    "image": ("image/png", check_png),
    "video": ("video/mp4", check_mp4),
    "audio": ("audio/wav", check_wav),
    "3d": ("model/gltf-binary", check_glb),
    "json": ("application/json", lambda data: json.loads(data)),
}


async def download_and_check(output: dict[str, Any]) -> None:
    media_type, check = CHECKS[output["type"]]
    async with httpx.AsyncClient() as http:
        response = await http.get(output["url"])
    assert response.status_code == 200, output
    assert response.headers["content-type"].split(";")[0] == media_type
    check(response.content)


async def finished(service: Service, job_id: str) -> dict[str, Any]:
    job = await service.client.wait_for_status(job_id, {"succeeded", "failed"}, seconds=20)
    assert job["status"] == "succeeded", job
    return job


# ---- end to end ----------------------------------------------------------------------


async def test_a_job_of_every_category_returns_a_real_file_of_its_kind(service: Service) -> None:
    chosen = one_model_per_category()
    assert len(chosen) == 13
    created = {}
    for category, model_id in chosen.items():
        example = CATALOG.models[model_id].example
        response = await service.client.create_job({"model": model_id, "input": example})
        assert response.status_code == 201, (category, response.text)
        created[model_id] = response.json()["id"]
    for model_id, job_id in created.items():
        job = await finished(service, job_id)
        assert job["outputs"], model_id
        kinds = [output["type"] for output in job["outputs"]]
        assert kinds[0] == expected_type(model_id), (model_id, kinds)
        await asyncio.gather(*(download_and_check(output) for output in job["outputs"]))


async def test_n_images_when_asked_and_tts_timings_beside_the_audio(service: Service) -> None:
    images = await service.client.create_job(
        {"model": "seedream-4", "input": {"prompt": "four foxes", "n": 4}}
    )
    speech = await service.client.create_job(
        {"model": "elevenlabs-tts-turbo-2-5", "input": {"text": "hello there world"}}
    )
    assert images.status_code == speech.status_code == 201, (images.text, speech.text)
    four = await finished(service, images.json()["id"])
    assert [o["type"] for o in four["outputs"]] == ["image"] * 4
    assert len({o["url"] for o in four["outputs"]}) == 4
    spoken = await finished(service, speech.json()["id"])
    assert [o["type"] for o in spoken["outputs"]] == ["audio", "json"]
    for output in four["outputs"] + spoken["outputs"]:
        await download_and_check(output)
    async with httpx.AsyncClient() as http:
        timings = (await http.get(spoken["outputs"][1]["url"])).json()
    assert [w["word"] for w in timings["words"]] == ["hello", "there", "world"]


# ---- the simulator as PoYo --------------------------------------------------------------


def submit_body(model: str, input_: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "input": input_, "callback_url": "http://127.0.0.1:9/cb"}


AUTH = {"Authorization": f"Bearer {SIMULATOR_KEY}"}


async def test_the_simulator_refuses_what_poyos_schema_refuses(simulator: Simulator) -> None:
    refused = await simulator.http.post(
        "/api/generate/submit",
        json=submit_body("wan2.5-text-to-video", {"prompt": "x", "duration": 7}),
        headers=AUTH,
    )
    assert refused.status_code == 400
    assert "duration" in refused.json()["error"]["message"]
    for model in ("no-such-model", sorted(CATALOG.chat)[0]):
        unknown = await simulator.http.post(
            "/api/generate/submit", json=submit_body(model, {"prompt": "x"}), headers=AUTH
        )
        assert unknown.status_code == 400, model
    accepted = await simulator.http.post(
        "/api/generate/submit",
        json=submit_body("wan2.5-text-to-video", {"prompt": "x", "duration": 10}),
        headers=AUTH,
    )
    assert accepted.status_code == 200, accepted.text


@pytest.mark.parametrize("honoured", [True, False])
async def test_the_simulator_answers_a_repeated_idempotency_key_with_the_first_task(
    simulator: Simulator, honoured: bool
) -> None:
    await simulator.set_faults(honour_idempotency_keys=honoured)
    body = submit_body("nano-banana", {"prompt": "a fox"})
    tasks = []
    for key in ("job_a", "job_a", "job_b"):
        response = await simulator.http.post(
            "/api/generate/submit", json=body, headers=AUTH | {"Idempotency-Key": key}
        )
        assert response.status_code == 200
        tasks.append(response.json()["data"]["task_id"])
    assert (tasks[0] == tasks[1]) is honoured
    assert tasks[2] not in tasks[:2]
    started = await eventually(simulator.tasks, lambda t: len(t) == (2 if honoured else 3))
    assert len(started) == (2 if honoured else 3)
