"""`poyo-relay models list | show` and `submit --model` for any model, run as a process
against a live service in front of the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from app.catalog.compiled import Catalog
from app.catalog.document import load_snapshot
from tests.clirun import clean_env, run_cli
from tests.conftest import Service

CATALOG = Catalog(load_snapshot())


def client_env(service: Service) -> dict[str, str]:
    return clean_env(PUBLIC_BASE_URL=service.url, POYO_RELAY_API_KEY=service.client.key)


async def test_models_list_filters_by_category_and_words(service: Service, tmp_path: Path) -> None:
    env = client_env(service)
    three_d = await run_cli("models", "list", "--category", "3d", env=env, cwd=tmp_path)
    assert three_d.code == 0, three_d
    expected = sorted(m for m, s in CATALOG.models.items() if s.entry.category == "3d")
    listed = [line.split()[0] for line in three_d.stdout.splitlines()[1:-1]]
    assert sorted(listed) == expected
    assert f"{len(expected)} models (catalog {CATALOG.version})" in three_d.stdout

    kling = await run_cli(
        "models", "list", "--search", "kling 3.0", "--json", env=env, cwd=tmp_path
    )
    assert kling.code == 0, kling
    ids = {model["id"] for model in json.loads(kling.stdout)["data"]}
    assert "kling-3.0/pro" in ids
    assert all("kling" in model_id for model_id in ids)


async def test_models_show_gives_fields_defaults_allowed_values_example_and_price(
    service: Service, tmp_path: Path
) -> None:
    env = client_env(service)
    shown = await run_cli("models", "show", "wan2.5-image-to-video", env=env, cwd=tmp_path)
    assert shown.code == 0, shown
    text = shown.stdout
    assert "resolution" in text
    assert "default 720p" in text
    assert "480p | 720p | 1080p" in text
    assert "..1500 characters" in text
    assert "required" in text
    assert '"image_urls": [' in text  # the example
    assert "price_table[resolution][duration]" in text  # not eaten as console markup
    assert "1080p" in text

    slash = await run_cli("models", "show", "kling-3.0/pro", "--json", env=env, cwd=tmp_path)
    assert slash.code == 0, slash
    assert json.loads(slash.stdout)["input_schema"] == CATALOG.models["kling-3.0/pro"].schema

    chat = sorted(CATALOG.chat)[0]
    refused = await run_cli("models", "show", chat, env=env, cwd=tmp_path)
    assert refused.code == 1, refused  # not found, like `jobs show` of an unknown id
    assert "chat model" in refused.stderr


async def test_submit_any_model_with_pairs_json_and_files(service: Service, tmp_path: Path) -> None:
    env = client_env(service)
    # several images: one URL per output, all real PNG files
    images = await run_cli(
        "submit", "-m", "seedream-4", "-p", "three foxes", "n=3", "--wait",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert images.code == 0, images
    urls = images.stdout.split()
    assert len(urls) == 3
    async with httpx.AsyncClient() as http:
        for url in urls:
            png = await http.get(url)
            assert png.status_code == 200
            assert png.content.startswith(b"\x89PNG\r\n\x1a\n")

    # --input from a file, pairs on top, `:=` for raw JSON, repeated array pairs
    spec = tmp_path / "input.json"
    spec.write_text(json.dumps({"prompt": "from a file", "sound": False, "duration": 5}))
    kling_args = (
        "submit", "-m", "kling-3.0/pro", "--input", f"@{spec}", "duration:=8", "multi_shots=false",
        "image_urls=https://example.com/a.png", "image_urls=https://example.com/b.png", "--json",
    )  # fmt: skip
    # 8 s without sound at 39 credits a second: above the default 100, it asks first, and
    # with no one to ask (not a terminal) refuses; nothing is sent.
    before = len((await service.client.get("/v1/jobs", limit=100)).json()["data"])
    unasked = await run_cli(*kling_args, env=env, cwd=tmp_path)
    assert unasked.code == 2, unasked
    assert "estimate: 312 credits (~$1.56)" in unasked.stderr
    assert "--yes" in unasked.stderr
    assert len((await service.client.get("/v1/jobs", limit=100)).json()["data"]) == before
    kling = await run_cli(*kling_args, "--yes", env=env, cwd=tmp_path)
    assert kling.code == 0, kling
    assert "estimate: 312 credits" in kling.stderr
    assert job_cost(kling.stdout) == 312
    job = json.loads(kling.stdout)
    assert job["model"] == "kling-3.0/pro"
    below = await run_cli(*kling_args, "--confirm-above", "312", env=env, cwd=tmp_path)
    assert below.code == 0, below
    assert job["input"] == {
        "prompt": "from a file",
        "sound": False,
        "duration": 8,
        "multi_shots": False,
        "image_urls": ["https://example.com/a.png", "https://example.com/b.png"],
    }

    # a family rule is checked before sending too
    rule = await run_cli(
        "submit", "-m", "kling-3.0/pro", "sound=false", "multi_shots=true", "duration=5",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert rule.code == 2, rule
    assert "input.multi_prompt" in rule.stderr
    bad_json = await run_cli("submit", "-m", "nano-banana", "--input", "{", env=env, cwd=tmp_path)
    assert bad_json.code == 2, bad_json
    assert "--input is not JSON" in bad_json.stderr

    jobs = (await service.client.get("/v1/jobs")).json()["data"]
    # (the last kling job was sent twice: with --yes, and at its own price as the limit)
    assert sorted(job["model"] for job in jobs) == ["kling-3.0/pro"] * 2 + ["seedream-4"]


def job_cost(stdout: str) -> float:
    credits = json.loads(stdout)["cost"]["credits_estimated"]
    assert isinstance(credits, float | int)
    return float(credits)
