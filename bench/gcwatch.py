"""`poyo-relay ARGS...`, recording the garbage collector's pauses.

    python -m bench.gcwatch LOG_FILE serve --port 8000

Runs the CLI exactly as the `poyo-relay` console script does, after adding one
`gc.callbacks` hook that appends a line to LOG_FILE for every full (generation 2)
collection and for any collection that took 5 ms or more: `epoch_seconds generation ms`.
A collection stops the whole process (the event loop included), so these lines are the
pauses every request and stream of the process waited out. The hook costs two clock
readings per collection; nothing else differs from `poyo-relay`.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any

LOGGED_MS = 5.0


def install(path: str) -> None:
    log = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's lifetime
    started = [0.0]

    def hook(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        if info["generation"] == 2 or ms >= LOGGED_MS:
            log.write(f"{time.time():.3f} {info['generation']} {ms:.2f}\n")

    gc.callbacks.append(hook)


def read(path: str) -> list[tuple[float, int, float]]:
    """(epoch seconds at the end, generation, milliseconds) of each logged collection."""
    out = []
    try:
        with open(path) as handle:
            for line in handle:
                at, generation, ms = line.split()
                out.append((float(at), int(generation), float(ms)))
    except FileNotFoundError:
        pass
    return out


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: python -m bench.gcwatch LOG_FILE poyo-relay-arguments...")
    install(sys.argv[1])
    from app.cli import main as cli_main

    sys.argv = ["poyo-relay", *sys.argv[2:]]
    cli_main()


if __name__ == "__main__":
    main()
