"""The `poyo-relay` command line, run as a real process against a live service and simulator.

Exit codes: 0 ok, 1 the job (or operation) failed, 2 usage or configuration error.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.db import Database
from app.jobs.models import Job
from app.timeutil import utcnow
from tests.clirun import clean_env, run_cli
from tests.conftest import Service
from tests.support import IMAGE_JOB, free_socket, make_settings
from tests.test_prune import seed

IMAGE = "https://example.com/fox.jpg"
I2V = "wan2.5-image-to-video"


def client_env(service: Service, key: str | None = None) -> dict[str, str]:
    """What a user of `submit`/`jobs` sets: where the service is and their API key."""
    return clean_env(
        PUBLIC_BASE_URL=service.url,
        POYO_RELAY_API_KEY=key if key is not None else service.client.key,
    )


async def test_keys_create_prints_a_key_that_works_and_revoke_stops_it_at_once(
    service: Service, tmp_path: Path
) -> None:
    env = clean_env(DATABASE_URL=service.settings.database_url)
    created = await run_cli("keys", "create", "alice", env=env, cwd=tmp_path)
    assert created.code == 0, created
    key = created.last_word
    assert key.startswith("prk_")

    http = service.client.http
    auth = {"Authorization": f"Bearer {key}"}
    assert (await http.get("/v1/jobs", headers=auth)).status_code == 200

    listed = await run_cli("keys", "list", env=env, cwd=tmp_path)
    assert listed.code == 0, listed
    assert "alice" in listed.stdout
    assert key not in listed.output
    assert key.split("_", 2)[2] not in listed.output  # the secret is never shown again

    revoked = await run_cli("keys", "revoke", "alice", env=env, cwd=tmp_path)
    assert revoked.code == 0, revoked
    assert "revoked 1 key" in revoked.stdout
    # no restart, no cache: the very next request is refused
    refused = await http.get("/v1/jobs", headers=auth)
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"

    again = await run_cli("keys", "revoke", "alice", env=env, cwd=tmp_path)
    assert again.code == 1, again
    bad_name = await run_cli("keys", "create", "not a name!", env=env, cwd=tmp_path)
    assert bad_name.code == 2, bad_name


async def test_submit_wait_follows_the_job_and_prints_the_output_url(
    service: Service, tmp_path: Path
) -> None:
    result = await run_cli(
        "submit",
        "--model",
        I2V,
        f"image_urls={IMAGE}",
        "--prompt",
        "a red fox running through snow",
        "resolution=480p",
        "duration=5",
        "--wait",
        env=client_env(service),
        cwd=tmp_path,
    )
    assert result.code == 0, result
    url = result.stdout.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:")
    # progress went to stderr, ending at 100 %
    assert "succeeded 100%" in result.stderr
    async with httpx.AsyncClient() as http:
        video = await http.get(url)
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"

    [job] = (await service.client.get("/v1/jobs")).json()["data"]
    assert job["status"] == "succeeded"
    assert job["outputs"][0]["url"] == url
    # typed by the model's schema: duration the integer 5, image_urls a list
    assert job["input"] == {
        "image_urls": [IMAGE],
        "prompt": "a red fox running through snow",
        "resolution": "480p",
        "duration": 5,
    }


async def test_submit_wait_exits_1_when_the_job_fails(service: Service, tmp_path: Path) -> None:
    result = await run_cli(
        "submit",
        "-m",
        I2V,
        f"image_urls={IMAGE}",
        "--prompt",
        "a fox [fail]",
        "--wait",
        env=client_env(service),
        cwd=tmp_path,
    )
    assert result.code == 1, result
    assert "failed" in result.stderr
    assert "provider_failed" in result.stderr
    assert result.stdout.strip() == ""


async def test_submit_without_wait_prints_the_job_id(service: Service, tmp_path: Path) -> None:
    result = await run_cli(
        "submit",
        "-m",
        I2V,
        f"image_urls={IMAGE}",
        "-p",
        "a quiet lake",
        env=client_env(service),
        cwd=tmp_path,
    )
    assert result.code == 0, result
    job = await service.client.job(result.last_word)
    assert job["input"]["prompt"] == "a quiet lake"

    # a provider rejection is a failed job at once: exit 1 without --wait
    rejected = await run_cli(
        "submit",
        "-m",
        I2V,
        f"image_urls={IMAGE}",
        "-p",
        "[reject] this",
        env=client_env(service),
        cwd=tmp_path,
    )
    assert rejected.code == 1, rejected
    assert "provider_rejected" in rejected.stderr


async def test_submit_is_idempotent_with_a_key(service: Service, tmp_path: Path) -> None:
    args = (
        "submit",
        "-m",
        I2V,
        f"image_urls={IMAGE}",
        "-p",
        "once",
        "--idempotency-key",
        "order-42",
        "--json",
    )
    first = await run_cli(*args, env=client_env(service), cwd=tmp_path)
    second = await run_cli(*args, env=client_env(service), cwd=tmp_path)
    assert first.code == second.code == 0, (first, second)
    assert json.loads(first.stdout)["id"] == json.loads(second.stdout)["id"]
    assert len((await service.client.get("/v1/jobs")).json()["data"]) == 1


async def test_usage_and_configuration_errors_exit_2(service: Service, tmp_path: Path) -> None:
    env = client_env(service)
    missing_prompt = await run_cli(
        "submit", "-m", I2V, f"image_urls={IMAGE}", env=env, cwd=tmp_path
    )
    assert missing_prompt.code == 2, missing_prompt
    assert "input.prompt: field required" in missing_prompt.stderr
    assert "nothing was sent" in missing_prompt.stderr

    # checked against the model's schema before anything is sent: each field is named
    bad = await run_cli(
        "submit",
        "-m",
        I2V,
        "image_urls=ftp://example.com/a.jpg",
        "-p",
        "x",
        "duration=7",
        "colour=red",
        env=env,
        cwd=tmp_path,
    )
    assert bad.code == 2, bad
    for field in ("input.image_urls.0", "input.duration", "input.colour: unknown field"):
        assert field in bad.stderr, bad
    not_a_number = await run_cli(
        "submit",
        "-m",
        I2V,
        f"image_urls={IMAGE}",
        "-p",
        "x",
        "duration=five",
        env=env,
        cwd=tmp_path,
    )
    assert not_a_number.code == 2, not_a_number
    # The field and what it must be (the wording is app/catalog/compiled.py's).
    [problem] = [line for line in not_a_number.stderr.splitlines() if "input.duration:" in line]
    assert "integer" in problem, not_a_number
    no_model = await run_cli("submit", "-p", "x", env=env, cwd=tmp_path)
    assert no_model.code == 2, no_model
    unknown_model = await run_cli("submit", "-m", "wan9-nothing", "-p", "x", env=env, cwd=tmp_path)
    assert unknown_model.code == 2, unknown_model
    assert "unknown model" in unknown_model.stderr
    not_a_pair = await run_cli("submit", "-m", I2V, "prompt", env=env, cwd=tmp_path)
    assert not_a_pair.code == 2, not_a_pair
    assert "field=value" in not_a_pair.stderr

    no_key = await run_cli(
        "submit", "-m", I2V, "-p", "x", env=client_env(service, key=""), cwd=tmp_path
    )
    assert no_key.code == 2, no_key
    assert "POYO_RELAY_API_KEY" in no_key.stderr

    wrong_key = await run_cli(
        "jobs", "list", "--api-key", "prk_not_a_real_key", env=env, cwd=tmp_path
    )
    assert wrong_key.code == 2, wrong_key
    assert "401" in wrong_key.stderr

    bad_limit = await run_cli("jobs", "list", "--limit", "0", env=env, cwd=tmp_path)
    assert bad_limit.code == 2, bad_limit
    bad_age = await run_cli("prune", "--older-than", "soon", env=env, cwd=tmp_path)
    assert bad_age.code == 2, bad_age
    unknown = await run_cli("frobnicate", env=env, cwd=tmp_path)
    assert unknown.code == 2, unknown

    bad_config = await run_cli(
        "jobs", "list", env=env | {"WORKER_POLL_SECONDS": "often"}, cwd=tmp_path
    )
    assert bad_config.code == 2, bad_config
    assert bad_config.stderr.strip().splitlines() == [
        "error: invalid setting WORKER_POLL_SECONDS: Input should be a valid number, "
        "unable to parse string as a number"
    ]

    # nothing was created by any of it
    assert (await service.client.get("/v1/jobs")).json()["data"] == []


async def test_an_unreachable_service_exits_1(service: Service, tmp_path: Path) -> None:
    closed = free_socket()  # bound, never listening: connections are refused
    try:
        port = closed.getsockname()[1]
        result = await run_cli(
            "jobs",
            "list",
            "--base-url",
            f"http://127.0.0.1:{port}",
            env=client_env(service),
            cwd=tmp_path,
        )
    finally:
        closed.close()
    assert result.code == 1, result
    assert "cannot reach the service" in result.stderr
    assert "Traceback" not in result.output


async def test_jobs_list_and_show(service: Service, tmp_path: Path) -> None:
    client = service.client
    ok = (await client.create_job(IMAGE_JOB)).json()
    failing = {**IMAGE_JOB, "input": {**IMAGE_JOB["input"], "prompt": "snow [fail]"}}
    bad = (await client.create_job(failing)).json()
    await client.wait_for_status(ok["id"], {"succeeded"})
    await client.wait_for_status(bad["id"], {"failed"})
    env = client_env(service)

    listed = await run_cli("jobs", "list", env=env, cwd=tmp_path)
    assert listed.code == 0, listed
    assert ok["id"] in listed.stdout
    assert bad["id"] in listed.stdout
    # newest first
    assert listed.stdout.index(bad["id"]) < listed.stdout.index(ok["id"])

    only_failed = await run_cli("jobs", "list", "--status", "failed", env=env, cwd=tmp_path)
    assert only_failed.code == 0, only_failed
    assert bad["id"] in only_failed.stdout
    assert ok["id"] not in only_failed.stdout

    other_model = await run_cli(
        "jobs", "list", "--model", "wan2.5-text-to-video", env=env, cwd=tmp_path
    )
    assert other_model.code == 0, other_model
    assert "no jobs" in other_model.stdout

    first_page = await run_cli("jobs", "list", "--limit", "1", "--json", env=env, cwd=tmp_path)
    page = json.loads(first_page.stdout)
    assert [job["id"] for job in page["data"]] == [bad["id"]]
    second_page = await run_cli(
        "jobs", "list", "--limit", "1", "--cursor", page["next_cursor"], env=env, cwd=tmp_path
    )
    assert ok["id"] in second_page.stdout
    assert bad["id"] not in second_page.stdout

    shown = await run_cli("jobs", "show", ok["id"], env=env, cwd=tmp_path)
    assert shown.code == 0, shown
    done = await client.job(ok["id"])
    assert done["outputs"][0]["url"] in shown.stdout
    assert done["provider"]["task_id"] in shown.stdout
    for event_type in ("job.created", "provider.submitted", "callback.received", "provider.polled"):
        assert event_type in shown.stdout

    shown_failed = await run_cli("jobs", "show", bad["id"], env=env, cwd=tmp_path)
    assert shown_failed.code == 1, shown_failed
    assert "provider_failed" in shown_failed.stdout

    as_json = await run_cli("jobs", "show", ok["id"], "--json", env=env, cwd=tmp_path)
    body = json.loads(as_json.stdout)
    assert body["id"] == ok["id"]
    assert [e["type"] for e in body["events"]] == [e["type"] for e in await client.events(ok["id"])]

    unknown = await run_cli("jobs", "show", "job_00000000000000000000000000", env=env, cwd=tmp_path)
    assert unknown.code == 1, unknown
    assert "no job" in unknown.stderr

    # another tenant's key sees none of it
    other = await service.new_client("tenant-b")
    theirs = await run_cli("jobs", "list", env=client_env(service, other.key), cwd=tmp_path)
    assert theirs.code == 0, theirs
    assert ok["id"] not in theirs.stdout
    assert "no jobs" in theirs.stdout


async def test_config_masks_secrets(tmp_path: Path) -> None:
    provider_key = "sk-live-provider-key-7f3a9c1e"
    relay_key = "prk_01jd0000000000000000000000_secretsecretsecretsecretsecretsecretsecr"
    env = clean_env(
        POYO_API_KEY=provider_key,
        POYO_RELAY_API_KEY=relay_key,
        CALLBACK_SECRET="callback-secret-0a1b2c3d",
        DATABASE_URL="postgresql+asyncpg://relay:hunter2-db-password@db.internal:5432/relay",
        WORKER_POLL_SECONDS="2.5",
    )
    result = await run_cli("config", env=env, cwd=tmp_path)
    assert result.code == 0, result
    for secret in (provider_key, relay_key, "callback-secret-0a1b2c3d", "hunter2-db-password"):
        assert secret not in result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line}
    assert rows["DATABASE_URL"][0] == "postgresql+asyncpg://relay:********@db.internal:5432/relay"
    assert rows["POYO_API_KEY"] == ["********", "environment"]
    assert rows["POYO_RELAY_API_KEY"] == ["********", "environment"]
    assert rows["POYO_WEBHOOK_SECRET"] == ["(empty)", "default"]
    assert rows["WORKER_POLL_SECONDS"] == ["2.5", "environment"]
    assert rows["RUN_WORKER"] == ["True", "default"]
    # with a provider key set, this is not sandbox mode
    assert rows["(sandbox"] == ["mode)", "False", "derived"]


async def test_prune_command(database_url: str, tmp_path: Path) -> None:
    db = Database(make_settings(database_url=database_url))
    try:
        ids = await seed(db, utcnow())
        env = clean_env(DATABASE_URL=database_url)

        events_only = await run_cli("prune", "--older-than", "90d", env=env, cwd=tmp_path)
        assert events_only.code == 0, events_only
        assert (
            "12 events, 0 jobs (0 output files), 2 expired idempotency keys, 1 rate-limit windows"
            in (events_only.stdout)
        )

        with_jobs = await run_cli(
            "prune", "--older-than", "90d", "--jobs", "--batch-size", "1", env=env, cwd=tmp_path
        )
        assert with_jobs.code == 0, with_jobs
        # their old events went in the first run
        assert "0 events, 2 jobs" in with_jobs.stdout
        async with db.read() as session:
            left = set((await session.execute(select(Job.id))).scalars())
            count = (await session.execute(select(func.count()).select_from(Job))).scalar_one()
        assert ids["old_succeeded"] not in left
        assert ids["old_failed"] not in left
        assert count == 4

        # a cutoff in the future of every row: 2w leaves the 10-day-old job alone
        short = await run_cli("prune", "--older-than", "2w", "--jobs", env=env, cwd=tmp_path)
        assert short.code == 0, short
        assert "0 jobs" in short.stdout
        week = await run_cli("prune", "--older-than", "1w", "--jobs", env=env, cwd=tmp_path)
        assert "2 jobs" in week.stdout  # long_succeeded and recent_succeeded ended 10 days ago
    finally:
        await db.dispose()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_ages(text: str, expected: timedelta) -> None:
    from app.cli import parse_age

    assert parse_age(text) == expected


async def test_migrate_from_any_directory(tmp_path: Path) -> None:
    """Outside a checkout's root, `migrate` still finds the migrations next to the package."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    result = await run_cli("migrate", env=clean_env(DATABASE_URL=url), cwd=tmp_path)
    assert result.code == 0, result
    assert "database migrated to head" in result.stdout
    db = Database(make_settings(database_url=url))
    try:
        async with db.read() as session:
            assert (await session.execute(select(func.count()).select_from(Job))).scalar_one() == 0
    finally:
        await db.dispose()

    broken = await run_cli(
        "migrate",
        env=clean_env(DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:1/none"),
        cwd=tmp_path,
    )
    assert broken.code == 1, broken
    assert "migration failed" in broken.stderr
    assert "Traceback" not in broken.output


@pytest.mark.parametrize(
    ("database_url", "warned"),
    [
        ("sqlite+aiosqlite:///./relay.db", True),
        ("postgresql+asyncpg://postgres@127.0.0.1:5432/test", False),
    ],
)
async def test_serve_warns_that_sqlite_gains_nothing_from_several_workers(
    database_url: str, warned: bool, tmp_path: Path
) -> None:
    # The port is taken, so uvicorn stops right after the command has spoken.
    taken = free_socket()
    taken.listen()
    try:
        port = str(taken.getsockname()[1])
        result = await run_cli(
            "serve", "--port", port, "--workers", "2",
            env=clean_env(DATABASE_URL=database_url), cwd=tmp_path,
        )  # fmt: skip
    finally:
        taken.close()
    assert result.code != 0, result
    assert ("warning: SQLite has one writer" in result.stderr) is warned, result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("keys", "list"),
        ("archive", "verify"),
        ("archive", "backfill"),
        ("prune", "--older-than", "1d"),
    ],
)
async def test_a_database_without_its_schema_is_told_to_migrate(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    """Commands on a database that was never migrated say what to do, in one line."""
    env = clean_env(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/new.db")
    result = await run_cli(*command, env=env, cwd=tmp_path)
    assert result.code == 1, result
    assert "the database has no tables yet: run `poyo-relay migrate` first" in result.stderr
    assert "Traceback" not in result.output
    assert "SELECT" not in result.output
