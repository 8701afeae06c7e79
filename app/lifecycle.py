"""Hear SIGTERM/SIGINT as soon as they arrive, before the server's own shutdown sequence.

uvicorn drains open connections first and runs the lifespan shutdown only afterwards; an
embedded worker told to stop only then would go on claiming jobs during the drain and
leave too little of the 10 s budget to finish its own work.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_termination(callback: Callable[[], None]) -> Iterator[None]:
    """Run `callback` first, then whatever handler was installed, on SIGTERM or SIGINT."""
    replaced: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in HANDLED:
            previous = signal.getsignal(sig)
            if callable(previous):
                replaced[sig] = previous
                signal.signal(sig, _chain(callback, previous))
    try:
        yield
    finally:
        for sig, previous in replaced.items():
            signal.signal(sig, previous)


def _chain(
    callback: Callable[[], None], previous: Callable[[int, FrameType | None], Any]
) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        callback()
        previous(signum, frame)

    return handler
