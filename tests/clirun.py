"""Run the real `poyo-relay` executable (and `uvicorn`) in a subprocess, as a user would."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings

BIN = Path(sys.executable).parent
POYO_RELAY = str(BIN / "poyo-relay") if (BIN / "poyo-relay").exists() else "poyo-relay"
UVICORN = str(BIN / "uvicorn") if (BIN / "uvicorn").exists() else (shutil.which("uvicorn") or "")
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}


def clean_env(**values: str) -> dict[str, str]:
    """The test process's environment without any setting (CI may set some), plus `values`.

    Pydantic-settings matches names case-insensitively, so every case is removed.
    """
    env = {key: value for key, value in os.environ.items() if key.upper() not in SETTINGS_ENV}
    env |= {"COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    env |= values
    return env


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def last_word(self) -> str:
        return self.stdout.split()[-1]

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


async def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> Result:
    """`poyo-relay ARGS` in `cwd` (which holds no `.env` unless a test puts one there).

    Asynchronous, so that servers running in the test's event loop keep serving.
    """
    proc = await asyncio.create_subprocess_exec(
        POYO_RELAY,
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, stdout.decode(), stderr.decode())
