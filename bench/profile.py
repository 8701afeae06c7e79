"""py-spy on a server process under load, summarised as where the CPU time goes.

`py-spy record --format raw` writes collapsed stacks ("frame;frame;... count"); the summary
gives the top leaf frames, the time per library (the innermost frame that belongs to a
known library or to the app), and the inclusive time of the app's own functions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.common import print_table

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")
_PACKAGES = (
    ("sqlalchemy/", "sqlalchemy"),
    ("asyncpg/", "asyncpg"),
    ("aiosqlite/", "aiosqlite"),
    ("starlette/", "starlette"),
    ("fastapi/", "fastapi"),
    ("uvicorn/", "uvicorn"),
    ("structlog/", "structlog"),
    ("pydantic/", "pydantic"),
    ("pydantic_core/", "pydantic"),
    ("prometheus_client/", "prometheus_client"),
    ("anyio/", "anyio"),
    ("httptools/", "httptools"),
    ("uvloop/", "uvloop"),
    ("greenlet/", "greenlet"),
    ("app/", "app"),
    ("bench/", "bench"),
    ("logging/", "logging (stdlib)"),
    ("sqlite3/", "sqlite3 (stdlib)"),
    ("json/", "json (stdlib)"),
    ("asyncio/", "asyncio (stdlib)"),
    ("threading.py", "threading (stdlib)"),
    ("concurrent/", "concurrent (stdlib)"),
    ("uuid.py", "uuid (stdlib)"),
    ("libsqlite3", "sqlite (C library)"),
    ("_sqlite3", "sqlite3 (stdlib)"),
    ("orjson", "orjson"),
    ("traceback.py", "traceback (stdlib)"),
)


def available() -> bool:
    return py_spy() is not None


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


# Where a thread waits rather than works. py-spy's own idle detection does not work on every
# kernel (it did not on the machine this was written on), so idle samples are dropped here:
# those whose innermost native frame is a wait, or whose innermost Python frame is one.
IDLE_NATIVE = {
    "epoll_pwait",
    "epoll_wait",
    "clock_nanosleep",
    "nanosleep",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "pthread_cond_clockwait",
    "sem_wait",
    "sem_timedwait",
    "sem_clockwait",
    "__futex_abstimed_wait_common",
    "futex_wait",
    "poll",
    "ppoll",
    "select",
    "pselect",
    "accept4",
}
IDLE_PYTHON = {
    "Condition.wait",
    "Event.wait",
    "Thread.join",
    "Connection._recv",  # multiprocessing: uvicorn's worker waiting on its supervisor
    "Connection.poll",
    "_connection_worker_thread",  # aiosqlite's thread waiting for its next call
    "SimpleQueue.get",
    "Queue.get",
    "_worker",  # concurrent.futures thread pool waiting for work
    "select",
}
# Frames that only carry the interpreter or libc: attribution looks past them.
_CARRIERS = ("libpython", "libc.so", "libpthread", "ld-linux", "python3.1", "libm.so")


def start(pid: int, seconds: float, output: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """Start recording `pid` for `seconds`: only the thread holding the GIL, i.e. Python CPU.

    (--native would tell waiting from working too, but lost most samples of the busy thread
    on the machine this was written on.)"""
    exe = py_spy()
    assert exe is not None
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(output),
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@dataclass
class Frame:
    func: str
    file: str
    line: str

    @property
    def package(self) -> str | None:
        # py-spy names files relative to their sys.path entry ("asyncpg/connection.py").
        path = "/" + self.file
        for needle, name in _PACKAGES:
            if "/" + needle in path:
                return name
        return None

    @property
    def short(self) -> str:
        path = self.file
        for marker in ("site-packages/", "/lib/python3"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        if self.func == "Runner.run" and path.endswith("asyncio/runners.py"):
            return "Runner.run (asyncio/runners.py): uvloop and C extensions below it"
        return f"{self.func} ({path})"


def _parse_frame(text: str) -> Frame:
    match = _FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "", "")
    return Frame(match["func"], match["file"], match["line"] or "")


@dataclass
class Profile:
    samples: int  # working samples (idle ones excluded)
    idle: int
    leaf: Counter[str]
    by_package: Counter[str]
    app_inclusive: Counter[str]
    lib_inclusive: Counter[str]

    def share(self, count: int) -> str:
        return f"{100 * count / self.samples:.1f}%" if self.samples else "-"


def _is_native(frame: Frame) -> bool:
    return not frame.file.endswith(".py")


def _is_idle(frames: list[Frame]) -> bool:
    leaf = frames[-1]
    if _is_native(leaf) and leaf.func in IDLE_NATIVE:
        return True
    if _is_native(leaf) and (leaf.func.startswith("0x") or leaf.func.startswith("futex")):
        python = next((f for f in reversed(frames) if not _is_native(f)), None)
        return python is None or python.func in IDLE_PYTHON
    python = next((f for f in reversed(frames) if not _is_native(f)), None)
    if python is not None and python.func in IDLE_PYTHON:
        # Waiting in a lock, a queue or a pipe; the native frames below it are the wait.
        return all(_is_native(f) for f in frames[frames.index(python) + 1 :])
    return False


def summarise(path: Path) -> Profile:
    leaf: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    app_inclusive: Counter[str] = Counter()
    lib_inclusive: Counter[str] = Counter()
    samples = idle = 0
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if f.file]
        if not frames:
            continue
        if _is_idle(frames):
            idle += count
            continue
        samples += count
        meaningful = [f for f in frames if not any(c in f.file for c in _CARRIERS)] or frames
        leaf[meaningful[-1].short] += count
        owner = next((f.package for f in reversed(meaningful) if f.package), None)
        if owner is None:
            last = meaningful[-1]
            owner = "uvloop" if last.func == "Runner.run" else f"other ({last.file})"
        by_package[owner] += count
        seen_app: set[str] = set()
        seen_lib: set[str] = set()
        for frame in frames:
            package = frame.package
            if package in ("app", "bench"):
                key = frame.short
                if key not in seen_app:
                    seen_app.add(key)
                    app_inclusive[key] += count
            elif package is not None and package not in seen_lib:
                seen_lib.add(package)
                lib_inclusive[package] += count
    return Profile(samples, idle, leaf, by_package, app_inclusive, lib_inclusive)


def print_profile(title: str, profile: Profile, top: int = 15) -> None:
    total = profile.samples + profile.idle
    print(
        f"\n{title}: {total} samples, {profile.samples} working "
        f"({100 * profile.samples / max(total, 1):.0f}%; waits excluded); shares of working"
    )
    print_table(
        "  where the CPU goes, by the innermost library on the stack (exclusive)",
        ("library", "share"),
        [(name, profile.share(n)) for name, n in profile.by_package.most_common(top)],
    )
    print_table(
        "  time under each library (inclusive; a sample counts once per library)",
        ("library", "share"),
        [(name, profile.share(n)) for name, n in profile.lib_inclusive.most_common(top)],
    )
    print_table(
        "  the app's functions (inclusive)",
        ("function", "share"),
        [(name, profile.share(n)) for name, n in profile.app_inclusive.most_common(top)],
    )
    print_table(
        "  top leaf frames (self time)",
        ("frame", "share"),
        [(name, profile.share(n)) for name, n in profile.leaf.most_common(top)],
    )


def as_dict(profile: Profile, top: int = 25) -> dict[str, object]:
    def pct(counter: Counter[str]) -> dict[str, float]:
        return {
            k: round(100 * v / profile.samples, 2) if profile.samples else 0.0
            for k, v in counter.most_common(top)
        }

    return {
        "samples": profile.samples,
        "idle_samples": profile.idle,
        "by_package_exclusive_pct": pct(profile.by_package),
        "by_package_inclusive_pct": pct(profile.lib_inclusive),
        "app_inclusive_pct": pct(profile.app_inclusive),
        "leaf_pct": pct(profile.leaf),
    }
