"""Fuzz a live server with schemathesis: no 5xx, and every answer matches the OpenAPI document.

`python -m bench.fuzz` (what `make fuzz` and CI run):

1. starts the real service (`poyo-relay serve`) on a loopback port, in sandbox mode (the
   built-in PoYo simulator), on a fresh SQLite database in a temporary directory, migrated
   with `poyo-relay migrate`, and creates an API key with `poyo-relay keys create`;
2. run "api": schemathesis against its `/openapi.json`, every operation, with
   `Authorization: Bearer <key>`, phases examples, coverage, fuzzing and stateful (links
   from a created job to its reads), a bounded number of examples per operation;
3. run "callbacks": the provider callback again, this time at a real job's URL with its
   valid per-job credential, so the fuzzed bodies reach parsing and storage instead of
   stopping at the credential check (run "api" proves random credentials are refused);
4. prints what was tried, by status, from schemathesis' own reports and from the server's
   request counter, and exits non-zero on any check failure, any 5xx, or any unhandled
   error in the server's log.

Checks: not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance. Only loopback addresses are used: the background worker is
off (`RUN_WORKER=false`) because it is the only part that calls a webhook URL, and
generated webhook URLs name arbitrary hosts; for the same reason private targets are
allowed, so that registering an endpoint resolves nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from app.callbacks.credentials import CallbackCredentials
from app.keyring.models import ServerKey

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
PHASES = "examples,coverage,fuzzing,stateful"
# The callback's links lead nowhere (its credential is never in a response): no stateful phase.
CALLBACK_PHASES = "examples,coverage,fuzzing"
CALLBACK_PATH = "/v1/callbacks/poyo/{job_id}/{token}"
_METRIC = re.compile(
    r'^poyo_relay_http_requests_total\{(?P<labels>(?:[^"}]|"(?:[^"\\]|\\.)*")*)\}'
    r"\s+(?P<value>[0-9.e+]+)$",
    re.M,
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class RunResult:
    name: str
    exit_code: int
    statuses: Counter[int] = field(default_factory=Counter)
    test_cases: int = 0
    failures: int = 0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Without the worker no job ends: a stream would stay open and `?wait=60` would wait a
# minute, past the fuzzer's read timeout. Waits are pinned to half a second and streams
# left out here; both are tested in tests/test_streams.py, over real HTTP.
API_CONFIG = """
[[operations]]
include-path-regex = "^/v1/jobs"
parameters = { wait = 0.5 }
"""


def _server_env(tmp: Path, port: int, database_url: str | None = None) -> dict[str, str]:
    """Only what we set: never the developer's `.env` (cwd is the temporary directory),
    never a provider key (sandbox mode), never a proxy (loopback only)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.lower().endswith("_proxy") and not key.startswith(("POYO_", "DATABASE_"))
    }
    env.update(
        {
            "DATABASE_URL": database_url or f"sqlite+aiosqlite:///{tmp / 'relay.db'}",
            "POYO_API_KEY": "",
            "POYO_BASE_URL": "https://api.poyo.ai",
            "SANDBOX_URL": "",
            "POYO_WEBHOOK_SECRET": "",
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "CALLBACK_SECRET": secrets.token_urlsafe(32),
            "RUN_WORKER": "false",
            # Registering a webhook endpoint resolves its host unless private targets are
            # allowed: generated URLs name arbitrary hosts, and no DNS query may leave.
            "WEBHOOK_ALLOW_PRIVATE": "true",
            "RATE_LIMIT_JOBS_PER_MINUTE": "1000000",
            "SANDBOX_QUEUE_SECONDS": "0.05",
            "SANDBOX_RUN_SECONDS": "0.2",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            "NO_PROXY": "*",
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    return env


def _postgres_admin_url() -> str:
    url = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _postgres(statement: str) -> None:
    conn = await asyncpg.connect(_postgres_admin_url(), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def _postgres_database() -> Iterator[str]:
    """A fresh database on the server of TEST_POSTGRES_URL, dropped afterwards."""
    name = f"poyo_relay_fuzz_{secrets.token_hex(6)}"
    asyncio.run(_postgres(f'CREATE DATABASE "{name}"'))
    try:
        admin = _postgres_admin_url()
        yield "postgresql+asyncpg://" + admin.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"poyo-relay {' '.join(args)} failed:\n{completed.stderr}")
    return completed.stdout


@contextlib.contextmanager
def _server(env: dict[str, str], cwd: Path, port: int, log_path: Path) -> Iterator[str]:
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{log_path.read_text()[-4000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not become ready in 30 s")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _server_counts(url: str) -> Counter[tuple[str, str, str]]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    counts: Counter[tuple[str, str, str]] = Counter()
    for match in _METRIC.finditer(text):
        labels = dict(_LABEL.findall(match.group("labels")))
        key = (labels.get("route", ""), labels.get("method", ""), labels.get("status", ""))
        counts[key] += int(float(match.group("value")))
    return counts


def _schemathesis(
    name: str,
    url: str,
    key: str,
    workdir: Path,
    *,
    max_examples: int,
    seed: int,
    phases: str,
    extra: list[str],
    config: str | None = None,
) -> RunResult:
    report_dir = workdir / f"report-{name}"
    command = [sys.executable, "-m", "schemathesis.cli"]
    if config is not None:
        config_path = workdir / f"{name}.toml"
        config_path.write_text(config)
        command += ["--config-file", str(config_path)]
    command += [
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        phases,
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--report",
        "ndjson,json",
        "--report-dir",
        str(report_dir),
        "--no-color",
        *extra,
    ]
    print(f"\n==> schemathesis run {name!r}", flush=True)
    env = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")}
    completed = subprocess.run(
        command, cwd=workdir, env={**env, "NO_PROXY": "*"}, check=False, timeout=1800
    )
    result = RunResult(name=name, exit_code=completed.returncode)
    for path in report_dir.glob("*.ndjson"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            finished = event.get("ScenarioFinished")
            if not finished:
                continue
            for interaction in finished["recorder"].get("interactions", {}).values():
                response = interaction.get("response")
                if response is not None:
                    result.statuses[int(response["status_code"])] += 1
    for path in report_dir.glob("*.json"):
        summary = json.loads(path.read_text())
        result.test_cases = int(summary["test_cases"]["generated"])
        result.failures = int(summary["test_cases"]["with_failures"]) + int(
            summary["test_cases"]["errored"]
        )
    return result


def _by_class(statuses: Counter[int]) -> Counter[str]:
    classes: Counter[str] = Counter()
    for status, count in statuses.items():
        classes[f"{status // 100}xx"] += count
    return classes


def _describe(result: RunResult) -> str:
    classes = _by_class(result.statuses)
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(result.statuses.items()))
    return (
        f"run {result.name!r}: {result.test_cases} test cases, {result.requests} requests "
        f"(2xx {classes['2xx']}, 4xx {classes['4xx']}, 5xx {classes['5xx']}; {codes}); "
        f"failures {result.failures}, schemathesis exit code {result.exit_code}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument(
        "--max-examples",
        type=int,
        default=int(os.environ.get("FUZZ_MAX_EXAMPLES", "60")),
        help="test cases per operation and phase (default 60; FUZZ_MAX_EXAMPLES)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=int(os.environ.get("FUZZ_SEED", "20251112")),
        help="schemathesis seed, for repeatable runs (FUZZ_SEED)",
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default=os.environ.get("FUZZ_DATABASE", "sqlite"),
        help="sqlite (default): a file in the work directory; postgresql: a fresh database "
        "on TEST_POSTGRES_URL's server (FUZZ_DATABASE)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the database, server log and reports here (default: a temporary directory)",
    )
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="poyo-relay-fuzz-")))
        else:
            tmp = args.workdir.resolve()
            tmp.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        database_url = None
        if args.database == "postgresql":
            database_url = stack.enter_context(_postgres_database())
        env = _server_env(tmp, port, database_url)
        _cli(env, tmp, "migrate")
        key = _cli(env, tmp, "keys", "create", "fuzz").split()[-1]
        server_log = tmp / "server.log"
        results: list[RunResult] = []
        with _server(env, tmp, port, server_log) as url:
            before = _server_counts(url)
            results.append(
                _schemathesis(
                    "api",
                    url,
                    key,
                    tmp,
                    max_examples=args.max_examples,
                    seed=args.seed,
                    phases=PHASES,
                    extra=["--exclude-path-regex", "/stream$"],
                    config=API_CONFIG,
                )
            )
            created = httpx.post(
                f"{url}/v1/jobs",
                json={"model": "wan2.5-text-to-video", "input": {"prompt": "fuzz target"}},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            created.raise_for_status()
            job = created.json()
            token = CallbackCredentials(
                key=ServerKey(env["CALLBACK_SECRET"].encode()), public_base_url=url
            ).token(job["id"])
            # Half the bodies name the job's real task, so they get past the task check.
            config = (
                f'[dictionaries.task_ids]\nvalues = ["{job["provider"]["task_id"]}"]\n\n'
                "[[operations]]\n"
                f'include-path = "{CALLBACK_PATH}"\n'
                f'parameters = {{ job_id = "{job["id"]}", token = "{token}", '
                '"body.task_id" = { dictionary = "task_ids", probability = 0.5 }, '
                '"body.data.task_id" = { dictionary = "task_ids", probability = 0.5 } }\n'
            )
            results.append(
                _schemathesis(
                    "callbacks",
                    url,
                    key,
                    tmp,
                    max_examples=args.max_examples,
                    seed=args.seed,
                    phases=CALLBACK_PHASES,
                    extra=["--include-path", CALLBACK_PATH],
                    config=config,
                )
            )
            after = _server_counts(url)
        served = after - before
        log_text = server_log.read_text(errors="replace")
        unhandled = log_text.count('"unhandled_error"')

    served_total = sum(served.values())
    served_5xx = sum(count for (_r, _m, status), count in served.items() if status == "5xx")
    tried = sum(result.requests for result in results)
    statuses = sum((result.statuses for result in results), Counter[int]())
    classes = _by_class(statuses)
    print("\n==> fuzz summary")
    print(
        f"{args.database}; schemathesis seed {args.seed}, at most {args.max_examples} examples "
        f"per operation and phase; checks: {', '.join(CHECKS)}"
    )
    for result in results:
        print(_describe(result))
    print(
        f"total: {tried} requests tried, {classes['2xx']} accepted (2xx), "
        f"{classes['4xx']} refused (4xx), {classes['5xx']} server errors (5xx)"
    )
    print(
        f"server side: {served_total} requests served (with the sandbox's own submit, status "
        f"and callback traffic), {served_5xx} answered 5xx; unhandled errors logged: {unhandled}"
    )
    problems = []
    for result in results:
        if result.exit_code != 0 or result.failures:
            problems.append(f"run {result.name!r} failed (exit {result.exit_code})")
        if result.requests == 0:
            problems.append(f"run {result.name!r} sent no requests")
    if classes["5xx"] or served_5xx:
        problems.append("server errors (5xx) were answered")
    if unhandled:
        problems.append(f"{unhandled} unhandled errors in the server log")
    if problems:
        print("FUZZ FAILED: " + "; ".join(problems))
        return 1
    print("fuzz OK: 5xx = 0, every response matched the OpenAPI document")
    return 0


if __name__ == "__main__":
    sys.exit(main())
