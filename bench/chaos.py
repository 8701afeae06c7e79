"""The chaos run: real processes over loopback, provider faults, lost callbacks, kill -9.

    python -m bench.chaos [--jobs N] [--clients C] [--kills K] [--sqlite] [--smoke]

It creates a fresh database (PostgreSQL by default, dropped at the end; `--sqlite` for a
file), starts the PoYo simulator (`poyo-relay sandbox`) with provider errors (500, 429
with Retry-After, reset connections), dropped, duplicated and reordered callbacks, and the
service (`poyo-relay serve`, embedded worker) with short reconcile, grace and lease times.
Concurrent clients submit jobs with an `Idempotency-Key` and retry on connection errors
and 5xx as a real client would, while the service is killed with SIGKILL and restarted.
When the clients are done and the kills made, it waits until nothing moves any more and
prints what happened. Exit status 0 when the goal is met: no job lost, none stranded, and
no more jobs with a second provider task than kills.

The process helpers at the top are shared with the crash, shutdown and multi-worker tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.jobs.models import IdempotencyKey, Job, JobEvent
from bench.common import create_database, drop_database, free_port, service_env

REPO_ROOT = Path(__file__).resolve().parent.parent
TERMINAL = ("succeeded", "failed")


# ---- processes (shared with tests) ---------------------------------------------------------


def relay_argv(*args: str) -> list[str]:
    """`poyo-relay ARGS` run by this interpreter (the project's virtualenv)."""
    return [sys.executable, "-m", "app.cli", *args]


def process_env(values: Mapping[str, str]) -> dict[str, str]:
    """A service's environment (see `bench.common.service_env`) with quiet JSON logs, plus
    `values`. Run children in a directory without a `.env`."""
    return service_env(
        {"LOG_FORMAT": "json", "LOG_LEVEL": "WARNING", "ACCESS_LOG": "false", **values}
    )


@dataclass
class Child:
    """A child process whose output goes to a log file; signalled by its own pid."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.cwd / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def start(self) -> Child:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n==== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def send(self, sig: signal.Signals) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    async def wait_exit(self, seconds: float) -> int | None:
        """The exit code, or None if it still runs after `seconds`."""
        assert self.proc is not None
        deadline = time.monotonic() + seconds
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return self.proc.returncode

    async def wait_http(self, url: str, seconds: float = 30.0) -> None:
        """Until GET `url` answers 200; fail early if the process dies."""
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if not self.alive:
                    raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready in {seconds}s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        try:
            content = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(content[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def relay_child(
    command: str,
    *,
    cwd: Path,
    database_url: str,
    provider_url: str,
    provider_key: str,
    public_url: str,
    port: int | None = None,
    name: str | None = None,
    **settings: object,
) -> Child:
    """A `poyo-relay serve` or `poyo-relay worker` child against the given provider.

    Extra keyword arguments are settings: `worker_lease_seconds=5` → WORKER_LEASE_SECONDS.
    """
    argv = relay_argv(command) if port is None else relay_argv(command, "--port", str(port))
    env = process_env(
        {
            "DATABASE_URL": database_url,
            "PUBLIC_BASE_URL": public_url,
            "POYO_BASE_URL": provider_url,
            "POYO_API_KEY": provider_key,
            "RATE_LIMIT_JOBS_PER_MINUTE": "0",
            **{key.upper(): str(value) for key, value in settings.items()},
        }
    )
    return Child(name or command, argv, env, cwd)


def run_relay(args: Sequence[str], env: Mapping[str, str], cwd: Path) -> str:
    """Run a short `poyo-relay` command; its stdout, or an error with its output."""
    result = subprocess.run(
        relay_argv(*args),
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"poyo-relay {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


# ---- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    jobs: int
    clients: int
    kills: int
    sqlite: bool
    seed: int
    settle_timeout: float
    keep_logs: bool
    fail_share: float = 0.05


@dataclass
class ClientLog:
    acked: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    replies: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    inconsistent: list[str] = field(default_factory=list)
    unacknowledged: list[str] = field(default_factory=list)
    posts: int = 0


PROVIDER_FAULTS = {
    # 20 % of provider calls fail, a third each way: the rolls are made in this order.
    "rate_limit_rate": 1 / 15,
    "submit_error_rate": (1 / 15) / (14 / 15),
    "status_error_rate": (1 / 15) / (14 / 15),
    "reset_rate": (1 / 15) / (13 / 15),
    "retry_after_seconds": 1,
    "drop_callback_rate": 0.30,
    "duplicate_callback_rate": 0.20,
    "reorder_callback_rate": 0.10,
}

SERVICE_SETTINGS = {
    "RECONCILE_AFTER_SECONDS": "5",
    "UNCERTAIN_SUBMIT_GRACE_SECONDS": "20",
    "WORKER_LEASE_SECONDS": "5",
    "WORKER_POLL_SECONDS": "0.5",
    "RETRY_BASE_SECONDS": "0.5",
    "RETRY_MAX_SECONDS": "5",
    "SUBMIT_MAX_ATTEMPTS": "25",
    "PROVIDER_TIMEOUT_SECONDS": "4",
    "PROVIDER_CONNECT_TIMEOUT_SECONDS": "2",
    "RATE_LIMIT_JOBS_PER_MINUTE": "0",
    # The simulator is on loopback: its files are archived as PoYo's are, through the kills.
    "ARCHIVE_ALLOW_PRIVATE": "true",
}


def job_body(index: int, plan: Plan, rng: random.Random) -> dict[str, Any]:
    fails = rng.random() < plan.fail_share
    prompt = f"chaos job {index}" + (" [fail]" if fails else "")
    if index % 2:
        return {"model": "wan2.5-text-to-video", "input": {"prompt": prompt}}
    return {
        "model": "wan2.5-image-to-video",
        "input": {"prompt": prompt, "image_urls": ["https://example.com/chaos.jpg"]},
        "metadata": {"index": str(index)},
    }


def say(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="poyo-chaos-"))
    try:
        yield path
    finally:
        if keep:
            say(f"logs kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


class Chaos:
    def __init__(self, plan: Plan, cwd: Path, database_url: str) -> None:
        self.plan = plan
        self.cwd = cwd
        self.database_url = database_url
        self.rng = random.Random(plan.seed)
        self.sim_port = free_port()
        self.port = free_port()
        self.provider_key = f"chaos-provider-{uuid.uuid4().hex[:8]}"
        self.simulator = Child(
            "simulator",
            relay_argv(
                "sandbox",
                "--port",
                str(self.sim_port),
                "--queue-seconds",
                "0.5",
                "--run-seconds",
                "2",
                "--api-key",
                self.provider_key,
                "--seed",
                str(plan.seed),
            ),
            process_env({}),
            cwd,
        )
        self.service = Child(
            "service",
            relay_argv("serve", "--port", str(self.port)),
            process_env(
                {
                    "DATABASE_URL": database_url,
                    "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port}",
                    "POYO_BASE_URL": f"http://127.0.0.1:{self.sim_port}",
                    "POYO_API_KEY": self.provider_key,
                    **SERVICE_SETTINGS,
                }
            ),
            cwd,
        )
        self.clients = ClientLog()
        self.kills = 0
        self.downtime = 0.0
        self.clients_done = asyncio.Event()
        self.progress = asyncio.Event()  # set at every acknowledgement

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    async def run(self) -> dict[str, Any]:
        env = self.service.env
        output = await asyncio.to_thread(run_relay, ["keys", "create", "chaos"], env, self.cwd)
        api_key = output.split()[-1]
        try:
            self.simulator.start()
            await self.simulator.wait_http(self.sim_url + "/_sandbox/faults")
            async with httpx.AsyncClient(base_url=self.sim_url, timeout=10) as sim:
                response = await sim.patch("/_sandbox/faults", json=PROVIDER_FAULTS)
                response.raise_for_status()
            self.service.start()
            await self.service.wait_http(self.url + "/readyz")
            say(
                f"service on {self.url} ({'SQLite' if self.plan.sqlite else 'PostgreSQL'}), "
                f"simulator on {self.sim_url}; {self.plan.jobs} jobs, "
                f"{self.plan.clients} clients, {self.plan.kills}+ kills"
            )
            started = time.monotonic()
            killer = asyncio.create_task(self.killer())
            await self.submit_all(api_key)
            self.clients_done.set()
            self.progress.set()
            say(
                f"clients done in {time.monotonic() - started:.0f}s: "
                f"{len(self.clients.acked)} acknowledged"
            )
            await killer
            settled, settle_seconds = await self.settle()
            report = await self.report(settled, settle_seconds, time.monotonic() - started)
            self.service.send(signal.SIGTERM)
            signalled = time.monotonic()
            code = await self.service.wait_exit(15)
            took = time.monotonic() - signalled
            report["service_exit"] = f"code {code} after {took:.1f}s" if code is not None else None
            return report
        finally:
            self.service.kill()
            self.simulator.kill()

    # ---- clients -----------------------------------------------------------------------

    async def submit_all(self, api_key: str) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(self.plan.jobs):
            queue.put_nowait(index)
        bodies = {index: job_body(index, self.plan, self.rng) for index in range(self.plan.jobs)}
        run_id = uuid.uuid4().hex[:8]
        limits = httpx.Limits(max_connections=self.plan.clients)
        headers = {"Authorization": f"Bearer {api_key}"}
        async with httpx.AsyncClient(
            base_url=self.url, timeout=30, limits=limits, headers=headers
        ) as http:

            async def client() -> None:
                while True:
                    try:
                        index = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    await self.submit_one(http, f"chaos-{run_id}-{index}", bodies[index])

            await asyncio.gather(*(client() for _ in range(self.plan.clients)))

    async def submit_one(self, http: httpx.AsyncClient, key: str, body: dict[str, Any]) -> None:
        """POST until acknowledged, retrying with the same key as a careful client does."""
        delay = 0.2
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            self.clients.posts += 1
            try:
                response = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError as exc:
                self.clients.transport_errors[type(exc).__name__] += 1
            else:
                self.clients.replies[response.status_code] += 1
                if response.status_code in (200, 201):
                    job_id = response.json()["id"]
                    known = self.clients.acked.setdefault(key, job_id)
                    self.progress.set()
                    if known != job_id:
                        self.clients.inconsistent.append(key)
                    return
                if response.status_code < 500 and response.status_code != 429:
                    say(f"unexpected {response.status_code} for {key}: {response.text[:200]}")
                    self.clients.unacknowledged.append(key)
                    return
            await asyncio.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, 3.0)
        self.clients.unacknowledged.append(key)

    # ---- kills -------------------------------------------------------------------------

    async def killer(self) -> None:
        """SIGKILL the service `kills` times, spread evenly over the submissions: the k-th
        kill comes once k/(kills+1) of the jobs are acknowledged (a little later, at random),
        so every kill lands while clients are busy, however fast the machine is."""
        for number in range(1, self.plan.kills + 1):
            threshold = number * self.plan.jobs // (self.plan.kills + 1)
            while len(self.clients.acked) < threshold and not self.clients_done.is_set():
                self.progress.clear()
                await self.progress.wait()
            await asyncio.sleep(self.rng.uniform(0.0, 0.5))
            self.service.kill()
            self.kills += 1
            down = time.monotonic()
            await asyncio.sleep(self.rng.uniform(0.0, 1.0))
            self.service.start()
            await self.service.wait_http(self.url + "/readyz", seconds=60)
            self.downtime += time.monotonic() - down
            say(
                f"kill #{self.kills}: down {time.monotonic() - down:.1f}s, "
                f"{len(self.clients.acked)}/{self.plan.jobs} acknowledged so far"
            )

    # ---- the end -----------------------------------------------------------------------

    async def job_rows(self) -> list[tuple[str, str, dict[str, Any] | None, str | None]]:
        engine = create_async_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(select(Job.id, Job.status, Job.error, Job.input))
                result = []
                for job_id, status, error, job_input in rows:
                    prompt = job_input.get("prompt") if isinstance(job_input, dict) else None
                    result.append((job_id, status, error, prompt))
                return result
        finally:
            await engine.dispose()

    async def keyed_jobs(self) -> dict[str, str]:
        engine = create_async_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(select(IdempotencyKey.key, IdempotencyKey.job_id))
                return {str(key): str(job_id) for key, job_id in rows}
        finally:
            await engine.dispose()

    async def event_counts(self) -> tuple[dict[str, int], dict[str, list[str]]]:
        """How often each event type was recorded, and the trail of the given jobs."""
        engine = create_async_engine(self.database_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    select(JobEvent.type, func.count()).group_by(JobEvent.type)
                )
                counts = {str(type_): int(count) for type_, count in rows}
                stats = await self.sim_stats()
                trails: dict[str, list[str]] = {}
                for job_id in stats.get("multiple_task_job_ids", [])[:20]:
                    events = await conn.execute(
                        select(JobEvent.type, JobEvent.data)
                        .where(JobEvent.job_id == job_id)
                        .order_by(JobEvent.id)
                    )
                    trails[job_id] = [
                        str(type_)
                        + (" (outcome unknown)" if (data or {}).get("outcome_unknown") else "")
                        for type_, data in events
                    ]
                return dict(sorted(counts.items())), trails
        finally:
            await engine.dispose()

    async def sim_stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.sim_url, timeout=10) as sim:
            return (await sim.get("/_sandbox/stats")).json()  # type: ignore[no-any-return]

    async def settle(self) -> tuple[bool, float]:
        """Wait until every job is terminal and the provider has no callback left to send."""
        started = time.monotonic()
        deadline = started + self.plan.settle_timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            rows = await self.job_rows()
            open_jobs = sum(1 for _, status, _, _ in rows if status not in TERMINAL)
            pending_callbacks = (await self.sim_stats())["pending_callbacks"]
            if open_jobs == 0 and pending_callbacks == 0:
                return True, time.monotonic() - started
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                say(f"settling: {open_jobs} jobs open, {pending_callbacks} callbacks to send")
            await asyncio.sleep(1.0)
        return False, time.monotonic() - started

    async def report(self, settled: bool, settle_seconds: float, seconds: float) -> dict[str, Any]:
        rows = await self.job_rows()
        stats = await self.sim_stats()
        keyed = await self.keyed_jobs()
        in_db = {job_id for job_id, _, _, _ in rows}
        acked = self.clients.acked
        lost_acked = sorted(key for key, job_id in acked.items() if job_id not in in_db)
        lost_keyed = sorted(key for key, job_id in keyed.items() if job_id not in in_db)
        keys_used = set(acked) | set(self.clients.unacknowledged)
        missing_keys = sorted(key for key in acked if key not in keyed)
        outcomes: Counter[str] = Counter()
        wrong = []
        for job_id, status, error, prompt in rows:
            code = (error or {}).get("code") if status == "failed" else None
            outcomes[f"{status}:{code}" if code else str(status)] += 1
            expected_fail = bool(prompt and "[fail]" in prompt)
            if status in TERMINAL and (status == "failed") != expected_fail:
                wrong.append(job_id)
        faults = dict(sorted(stats["faults_injected"].items()))
        events, trails = await self.event_counts()
        return {
            "backend": "sqlite" if self.plan.sqlite else "postgresql",
            "seconds": round(seconds, 1),
            "settled": settled,
            "settle_seconds": round(settle_seconds, 1),
            "jobs_requested": self.plan.jobs,
            "jobs_created": len(rows),
            "keys_used": len(keys_used),
            "acknowledged": len(acked),
            "unacknowledged": len(self.clients.unacknowledged),
            "client_posts": self.clients.posts,
            "client_replies": dict(sorted(self.clients.replies.items())),
            "client_transport_errors": dict(self.clients.transport_errors),
            "inconsistent_replays": len(self.clients.inconsistent),
            "kills": self.kills,
            "downtime_seconds": round(self.downtime, 1),
            "faults_injected_total": sum(faults.values()),
            "faults_injected": faults,
            "callback_deliveries": stats["callback_deliveries"],
            "not_terminal": sum(1 for _, status, _, _ in rows if status not in TERMINAL),
            "lost": len(lost_acked) + len(lost_keyed),
            "lost_examples": (lost_acked + lost_keyed)[:10],
            "acked_without_key_row": len(missing_keys),
            "outcomes": dict(sorted(outcomes.items())),
            "unexpected_outcomes": len(wrong),
            "unexpected_examples": wrong[:10],
            "provider_tasks": stats["tasks"],
            "provider_jobs": stats["jobs"],
            "jobs_with_multiple_tasks": stats["jobs_with_multiple_tasks"],
            "multiple_task_job_ids": stats.get("multiple_task_job_ids", [])[:10],
            "events": events,
            "multiple_task_trails": trails,
        }


def print_report(report: Mapping[str, Any], command: str) -> bool:
    goal = bool(
        report["lost"] == 0
        and report["not_terminal"] == 0
        and report["jobs_with_multiple_tasks"] <= report["kills"]
        and report["unacknowledged"] == 0
        and report["inconsistent_replays"] == 0
    )
    lines = [
        ("command", command),
        ("backend", report["backend"]),
        ("run time (s)", report["seconds"]),
        ("jobs created", f"{report['jobs_created']} (requested {report['jobs_requested']})"),
        ("client POSTs", f"{report['client_posts']} replies {report['client_replies']}"),
        ("client transport errors", report["client_transport_errors"] or 0),
        ("acknowledged / unacknowledged", f"{report['acknowledged']} / {report['unacknowledged']}"),
        ("replays naming another job", report["inconsistent_replays"]),
        ("kills (SIGKILL + restart)", f"{report['kills']} ({report['downtime_seconds']}s down)"),
        ("faults injected", report["faults_injected_total"]),
        *((f"  {name}", count) for name, count in report["faults_injected"].items()),
        ("callback deliveries", report["callback_deliveries"]),
        ("settled", f"{report['settled']} after {report['settle_seconds']}s"),
        ("jobs not terminal at the end", report["not_terminal"]),
        ("jobs lost", report["lost"]),
        ("outcomes", report["outcomes"]),
        ("unexpected outcomes", report["unexpected_outcomes"]),
        ("provider tasks / jobs seen", f"{report['provider_tasks']} / {report['provider_jobs']}"),
        ("jobs with more than one provider task", report["jobs_with_multiple_tasks"]),
        ("events recorded", report["events"]),
        ("service exit after SIGTERM", report.get("service_exit")),
        ("goal (0 lost, 0 stranded, duplicates <= kills)", "MET" if goal else "NOT MET"),
    ]
    width = max(len(name) for name, _ in lines)
    print()
    for name, value in lines:
        print(f"{name.ljust(width)}  {value}")
    for name in ("lost_examples", "unexpected_examples"):
        if report[name]:
            print(f"{name}: {', '.join(report[name])}")
    for job_id, trail in report["multiple_task_trails"].items():
        print(f"two or more provider tasks: {job_id}: {' > '.join(trail)}")
    sys.stdout.flush()
    return goal


def parse_args(argv: Sequence[str] | None = None) -> tuple[Plan, str]:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--jobs", type=int, default=None, help="jobs to submit (default 1000)")
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients (16)")
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs, spread (6)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI: 30 jobs, 1 kill")
    parser.add_argument("--seed", type=int, default=20_251_125)
    parser.add_argument("--settle-timeout", type=float, default=300.0)
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs")
    args = parser.parse_args(argv)
    jobs = args.jobs if args.jobs is not None else (30 if args.smoke else 1000)
    clients = args.clients if args.clients is not None else (4 if args.smoke else 16)
    kills = args.kills if args.kills is not None else (1 if args.smoke else 6)
    plan = Plan(
        jobs=jobs,
        clients=clients,
        kills=kills,
        sqlite=args.sqlite,
        seed=args.seed,
        settle_timeout=args.settle_timeout,
        keep_logs=args.keep_logs,
    )
    command = "python -m bench.chaos " + " ".join(argv if argv is not None else sys.argv[1:])
    return plan, command.strip()


async def main_async(plan: Plan, command: str) -> bool:
    with workdir(plan.keep_logs) as cwd:
        database = await create_database("sqlite" if plan.sqlite else "postgresql", cwd)
        try:
            chaos = Chaos(plan, cwd, database.url)
            try:
                report = await chaos.run()
            except BaseException:
                for child in (chaos.service, chaos.simulator):
                    print(f"--- {child.name} log tail\n{child.log_tail()}", file=sys.stderr)
                raise
            if plan.keep_logs:
                (cwd / "report.json").write_text(json.dumps(report, indent=2, default=str))
            return print_report(report, command)
        finally:
            await drop_database(database)


def main(argv: Sequence[str] | None = None) -> int:
    plan, command = parse_args(argv)
    return 0 if asyncio.run(main_async(plan, command)) else 1


if __name__ == "__main__":
    sys.exit(main())
