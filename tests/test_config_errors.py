"""Invalid configuration stops every entry point at start: one clear line per problem on
stderr, exit code 2, never a traceback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.clirun import UVICORN, clean_env, run_cli
from tests.support import free_socket

BAD = {
    "DATABASE_URL": "mysql://relay@db/relay",
    "RUN_WORKER": "maybe",
    "WORKER_POLL_SECONDS": "-1",
    "PUBLIC_BASE_URL": "relay.example.com",
}
EXPECTED = [
    "error: invalid setting DATABASE_URL: must be a sqlite+aiosqlite:// or "
    "postgresql+asyncpg:// URL",
    "error: invalid setting PUBLIC_BASE_URL: must start with http:// or https://",
    "error: invalid setting RUN_WORKER: Input should be a valid boolean, unable to interpret input",
    "error: invalid setting WORKER_POLL_SECONDS: Input should be greater than 0",
]


def problems(stderr: str) -> list[str]:
    return sorted(line.strip() for line in stderr.splitlines() if line.strip())


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--port", "0"],
        ["worker"],
        ["migrate"],
        ["config"],
        ["keys", "list"],
        ["prune", "--older-than", "90d"],
    ],
)
async def test_cli_commands_refuse_invalid_settings(command: list[str], tmp_path: Path) -> None:
    result = await run_cli(*command, env=clean_env(**BAD), cwd=tmp_path)
    assert result.code == 2, result
    assert problems(result.stderr) == EXPECTED
    assert "Traceback" not in result.output


async def test_uvicorn_app_main_refuses_invalid_settings(tmp_path: Path) -> None:
    """`uvicorn app.main:app` alone is the service: it fails the same way."""
    sock = free_socket()
    try:
        process = await asyncio.create_subprocess_exec(
            UVICORN,
            "app.main:app",
            "--fd",
            str(sock.fileno()),
            env=clean_env(**BAD),
            cwd=tmp_path,
            pass_fds=[sock.fileno()],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        sock.close()
    assert process.returncode == 2, (stdout, stderr)
    assert problems(stderr.decode()) == EXPECTED
    assert b"Traceback" not in stdout + stderr


async def test_the_dotenv_file_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# local settings\nLOG_LEVEL=LOUD\nAPI_MAX_BODY_BYTES=12\n")
    result = await run_cli("config", env=clean_env(), cwd=tmp_path)
    assert result.code == 2, result
    assert problems(result.stderr) == [
        "error: invalid setting API_MAX_BODY_BYTES: Input should be greater than or equal to 1024",
        "error: invalid setting LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
    ]

    (tmp_path / ".env").write_text("LOG_LEVEL=WARNING\nAPI_MAX_BODY_BYTES=2048\n")
    fixed = await run_cli("config", env=clean_env(), cwd=tmp_path)
    assert fixed.code == 0, fixed
    rows = {line.split()[0]: line.split()[1:] for line in fixed.stdout.splitlines() if line}
    assert rows["LOG_LEVEL"] == ["WARNING", "environment"]
    assert rows["API_MAX_BODY_BYTES"] == ["2048", "environment"]


async def test_alembic_refuses_invalid_settings(tmp_path: Path) -> None:
    alembic = Path(UVICORN).with_name("alembic")
    process = await asyncio.create_subprocess_exec(
        str(alembic),
        "-c",
        str(Path(__file__).resolve().parent.parent / "alembic.ini"),
        "upgrade",
        "head",
        env=clean_env(**BAD),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2, (stdout, stderr)
    assert problems(stderr.decode()) == EXPECTED
    assert b"Traceback" not in stdout + stderr


async def test_log_level_is_read_in_any_case(tmp_path: Path) -> None:
    result = await run_cli("config", env=clean_env(LOG_LEVEL="debug"), cwd=tmp_path)
    assert result.code == 0, result
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line}
    assert rows["LOG_LEVEL"] == ["DEBUG", "environment"]
