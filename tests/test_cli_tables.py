"""What `poyo-relay` prints in a terminal 80 columns wide (and in a pipe, which rich treats
as one): ids, statuses, models and names are whole, never cut with `…`, and no line is
wider; `--help` labels no flag `<bool>`; a failed job shows no progress; an option that
mirrors a setting has the setting's default. Run as a real process, as a user would."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import typer.main

from app.cli import cli
from app.cli.mirrors import options_mirroring_settings
from app.config import Settings
from tests.clirun import Result, clean_env, run_cli
from tests.conftest import Service, ServiceFactory
from tests.support import IMAGE_JOB

KEY_ID = re.compile(r"\bkey_[0-9a-z]{26}\b")
ENDPOINT_ID = re.compile(r"\bep_[0-9a-z]{26}\b")


def narrow(
    service: Service | None = None, /, *, columns: int | None = 80, **values: str
) -> dict[str, str]:
    """The environment of a user of the service at `columns` columns (None: a pipe with
    no COLUMNS, which rich renders at 80)."""
    if service is not None:
        values |= {"PUBLIC_BASE_URL": service.url, "POYO_RELAY_API_KEY": service.client.key}
    env = clean_env(**values)
    if columns is None:
        del env["COLUMNS"]
    else:
        env["COLUMNS"] = str(columns)
    return env


def fits(result: Result, width: int = 80, *, cut: bool = False) -> list[str]:
    """The lines of stdout, each checked to be at most `width` wide and, unless `cut`, to
    have nothing cut short with `…`."""
    assert result.code in (0, 1), result
    lines = result.stdout.splitlines()
    assert lines, result
    for line in lines:
        assert len(line) <= width, f"{len(line)} > {width}: {line!r}\n{result}"
        assert cut or "…" not in line, f"cut short: {line!r}\n{result}"
    return lines


def row_of(lines: list[str], first: str) -> list[str]:
    """The cells (split on white space) of the one line that starts with `first`."""
    [row] = [line.split() for line in lines if line.split()[:1] == [first]]
    return row


def column(lines: list[str], first: str, header: str) -> str:
    """The whole text of the row starting with `first` in the column under `header` (the
    next column's header ends it), over the lines it folds onto."""
    start = lines[0].index(header)
    end = start + len(header)
    while end < len(lines[0]) and not (lines[0][end - 1] == " " and lines[0][end] != " "):
        end += 1
    at = next(i for i, line in enumerate(lines) if line.startswith(first))
    parts = [lines[at][start:end].strip()]
    for line in lines[at + 1 :]:
        if line[:start].strip():  # the next row
            break
        parts.append(line[start:end].strip())
    return "".join(parts)


async def _jobs(service: Service) -> list[dict[str, Any]]:
    """A succeeded job, a failed one, and one of the model with the longest id."""
    client = service.client
    models = (await client.get("/v1/models")).json()["data"]
    longest = max((model["id"] for model in models), key=len)
    assert len(longest) >= 30, longest  # e.g. hunyuan-3d/v3.1/rapid/image-to-3d
    example = (await client.get(f"/v1/models/{longest}")).json()["example"]
    failing = {**IMAGE_JOB, "input": {**IMAGE_JOB["input"], "prompt": "snow [fail]"}}
    created = []
    for body in (IMAGE_JOB, failing, {"model": longest, "input": example}):
        response = await client.create_job(body)
        assert response.status_code == 201, response.text
        created.append(response.json())
    return [await client.wait_for_status(job["id"], {"succeeded", "failed"}) for job in created]


async def test_jobs_list_keeps_ids_models_and_statuses_whole_at_80_columns(
    service: Service, tmp_path: Path
) -> None:
    jobs = await _jobs(service)
    ok, bad, long = jobs
    assert (ok["status"], bad["status"]) == ("succeeded", "failed")
    assert bad["progress"] == 100  # PoYo's last figure, which the API keeps
    assert long["status"] == "succeeded", long

    for columns in (80, None):  # a terminal 80 columns wide; a pipe without COLUMNS
        lines = fits(
            await run_cli("jobs", "list", env=narrow(service, columns=columns), cwd=tmp_path)
        )
        assert lines[0].split()[:3] == ["id", "model", "status"]
        for job in jobs:
            assert row_of(lines, job["id"])[:3] == [job["id"], job["model"], job["status"]]
        # The less important columns come only when there is room; the failed job's
        # progress is never shown, whatever PoYo last said (the API keeps its figure).
        assert "created" not in lines[0]
        if "progress" in lines[0]:
            assert row_of(lines, ok["id"])[3] == "100%"
            assert row_of(lines, bad["id"])[3] == "—"

    wide = fits(await run_cli("jobs", "list", env=narrow(service, columns=200), cwd=tmp_path), 200)
    assert wide[0].split() == ["id", "model", "status", "progress", "created", "completed"]
    assert row_of(wide, ok["id"])[3:] == [
        "100%",
        ok["created_at"][:19] + "Z",
        ok["completed_at"][:19] + "Z",
    ]
    failed_row = row_of(wide, bad["id"])
    assert failed_row[3] == "—"
    assert "%" not in " ".join(failed_row)

    shown = await run_cli("jobs", "show", bad["id"], env=narrow(service), cwd=tmp_path)
    assert shown.code == 1, shown
    lines = fits(shown, cut=True)  # an event's data is summed up (`…`) in 160 characters
    assert row_of(lines, "progress") == ["progress", "—"]
    assert row_of(lines, "id") == ["id", bad["id"]]
    assert row_of(lines, "model") == ["model", bad["model"]]
    assert "100%" not in shown.stdout


async def test_submit_wait_shows_no_progress_for_a_failed_job(
    service: Service, tmp_path: Path
) -> None:
    result = await run_cli(
        "submit", "-m", IMAGE_JOB["model"], "image_urls=https://example.com/fox.jpg",
        "--prompt", "a fox [fail]", "--wait", env=narrow(service), cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 1, result
    [line] = [line for line in result.stderr.splitlines() if line.startswith("job_")][-1:]
    job_id, status = line.split()
    assert status == "failed", result
    assert (await service.client.job(job_id))["status"] == "failed"


async def test_keys_list_keeps_key_ids_whole_at_80_columns(
    database_url: str, tmp_path: Path
) -> None:
    names = ["alice", "ops.admin-team_2", "n" * 64]
    ids = {}
    for name in names:
        created = await run_cli(
            "keys", "create", name, "--admin", env=narrow(DATABASE_URL=database_url), cwd=tmp_path
        )
        assert created.code == 0, created
        match = KEY_ID.search(created.stdout)
        assert match is not None, created
        ids[name] = match.group()
        # the key (prk_<id>_<secret>) carries the id
        assert created.last_word.split("_")[1] == ids[name].removeprefix("key_")
    revoked = await run_cli(
        "keys", "revoke", "alice", env=narrow(DATABASE_URL=database_url), cwd=tmp_path
    )
    assert revoked.code == 0, revoked

    for columns in (80, None):
        listed = await run_cli(
            "keys", "list", env=narrow(columns=columns, DATABASE_URL=database_url), cwd=tmp_path
        )
        lines = fits(listed)
        assert lines[0].split()[:4] == ["id", "name", "status", "admin"]
        assert row_of(lines, ids["alice"])[:4] == [ids["alice"], "alice", "revoked", "yes"]
        team = ids["ops.admin-team_2"]
        assert row_of(lines, team)[:4] == [team, "ops.admin-team_2", "active", "yes"]
        # 30 + 64 characters cannot share 80 columns: the name folds, whole, the id does not
        long = row_of(lines, ids["n" * 64])
        assert long[0] == ids["n" * 64]
        assert long[2:4] == ["active", "yes"]
        assert column(lines, ids["n" * 64], "name") == "n" * 64

    wide = fits(
        await run_cli(
            "keys", "list", env=narrow(columns=200, DATABASE_URL=database_url), cwd=tmp_path
        ),
        200,
    )
    assert wide[0].split() == ["id", "name", "status", "admin", "revoked", "at", "created", "at"]
    assert len(row_of(wide, ids["alice"])) == 6  # with both times


async def test_models_list_keeps_model_ids_and_categories_whole_at_80_columns(
    service: Service, tmp_path: Path
) -> None:
    models = (await service.client.get("/v1/models")).json()["data"]
    listed = await run_cli("models", "list", env=narrow(service), cwd=tmp_path)
    assert listed.code == 0, listed
    lines = fits(listed, cut=True)
    for model in models:
        # the price, a summary (`models show` has it all), may be cut short; nothing else
        assert row_of(lines, model["id"])[:2] == [model["id"], model["category"]]
    assert len(lines) == len(models) + 2  # the header, a line a model, the count


async def test_webhook_endpoints_keep_id_and_state_whole_and_fold_a_long_url(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    service = await start_service(webhook_allow_private=True)
    url = "http://127.0.0.1:9/hooks/" + "a-rather-long-path-segment/" * 4 + "end"
    added = await run_cli(
        "webhooks", "endpoints", "add", url, "--disabled", "--description", "never called",
        env=narrow(service), cwd=tmp_path,
    )  # fmt: skip
    assert added.code == 0, added
    match = ENDPOINT_ID.search(added.stdout)
    assert match is not None, added
    lines = fits(await run_cli("webhooks", "endpoints", env=narrow(service), cwd=tmp_path))
    assert row_of(lines, match.group())[:2] == [match.group(), "no"]
    # the URL whole, folded over the lines under it, then its notes
    assert column(lines, match.group(), "url").startswith(url + "events: all job events")


async def test_config_and_status_fit_80_columns(database_url: str, tmp_path: Path) -> None:
    long_url = "https://relay.example.com/a/rather/long/path/to/the/service/" + "x" * 40
    env = narrow(DATABASE_URL=database_url, PUBLIC_BASE_URL=long_url)
    lines = fits(await run_cli("config", env=env, cwd=tmp_path))
    assert lines[0].split() == ["setting", "value", "source"]
    for name in Settings.model_fields:
        assert row_of(lines, name.upper())[0] == name.upper()
    assert column(lines, "PUBLIC_BASE_URL", "value") == long_url
    assert row_of(lines, "PUBLIC_BASE_URL")[-1] == "environment"

    status = fits(await run_cli("status", env=env, cwd=tmp_path))
    assert any(line.split() == ["failed", "0"] for line in status), status


async def test_help_labels_no_flag_bool(tmp_path: Path) -> None:
    paths = list(_command_paths(typer.main.get_command(cli), ()))
    assert ("submit",) in paths
    assert ("webhooks", "endpoints", "add") in paths
    env = narrow(columns=100)
    limit = asyncio.Semaphore(8)

    async def help_of(path: tuple[str, ...]) -> Result:
        async with limit:
            return await run_cli(*path, "--help", env=env, cwd=tmp_path)

    helps = await asyncio.gather(*(help_of(path) for path in paths))
    for path, result in zip(paths, helps, strict=True):
        assert result.code == 0, (path, result)
        assert "--help" in result.stdout, (path, result)
        assert "<bool>" not in result.output, (path, result)
    submit = helps[paths.index(("submit",))].stdout
    for flag in ("--wait", "--yes", "--json"):
        [line] = [line for line in submit.splitlines() if f" {flag} " in line]
        assert "<" not in line, line
    assert "<float range>" in submit  # options that take a value keep their type


def _command_paths(command: Any, path: tuple[str, ...]) -> Any:
    yield path
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _command_paths(sub, (*path, name))


def test_options_mirroring_a_setting_have_its_default() -> None:
    mirrored = options_mirroring_settings()
    by_option = {(m.command, m.option): m.setting for m in mirrored}
    assert by_option[("sandbox", "--run-seconds")] == "sandbox_run_seconds"
    assert by_option[("sandbox", "--queue-seconds")] == "sandbox_queue_seconds"
    for option in mirrored:
        assert option.default == Settings.model_fields[option.setting].default, option
        assert option.default == option.setting_default, option

    # The same, straight from the click command.
    sandbox = typer.main.get_command(cli).commands["sandbox"]  # type: ignore[attr-defined]
    defaults = {param.name: param.default for param in sandbox.params}
    assert defaults["run_seconds"] == Settings.model_fields["sandbox_run_seconds"].default
    assert defaults["queue_seconds"] == Settings.model_fields["sandbox_queue_seconds"].default
