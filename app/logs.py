"""Logging: one JSON object per line (or pretty in a terminal), secrets redacted.

Both structlog and the standard library (uvicorn, SQLAlchemy, httpx) go through the same
processors, so request and job ids bound in context appear on every line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

import orjson
import structlog
from structlog.types import EventDict, Processor

REDACTED = "[redacted]"
_PATTERNS = [
    re.compile(r"prk_[0-9a-z]{26}_[A-Za-z0-9_-]+"),  # API keys
    re.compile(r"(?<=/v1/callbacks/poyo/)(job_[0-9a-z]{26})/[A-Za-z0-9_-]+"),  # URL credentials
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?<=[?&]sig=)[0-9a-f]{16,}"),  # signed output links
]
# What can only hold a timestamp, a level or a logger name is not looked at.
_PLAIN_KEYS = frozenset({"timestamp", "level", "logger"})


class SecretRedactor:
    """Removes known secret values and credential-shaped strings from every log field."""

    def __init__(self) -> None:
        self._secrets: list[str] = []
        self._suspect = self._compile()

    def register(self, values: Iterable[str]) -> None:
        self._secrets = sorted(
            {v for v in [*self._secrets, *values] if len(v) >= 6}, key=len, reverse=True
        )
        self._suspect = self._compile()

    def _compile(self) -> re.Pattern[str]:
        """One search that tells, for most strings, that there is nothing to redact."""
        alternatives = [*map(re.escape, self._secrets), r"prk_", r"/v1/callbacks/poyo/"]
        return re.compile("|".join(alternatives) + r"|(?i:bearer )")

    def scrub(self, text: str) -> str:
        if self._suspect.search(text) is None:
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _PATTERNS[0].sub(REDACTED, text)
        text = _PATTERNS[1].sub(lambda m: f"{m.group(1)}/{REDACTED}", text)
        return _PATTERNS[2].sub(REDACTED, text)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def __call__(self, _logger: Any, _name: str, event: EventDict) -> EventDict:
        return {
            key: value if key in _PLAIN_KEYS else self._clean(value) for key, value in event.items()
        }


REDACTOR = SecretRedactor()


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted, not when logging was
    configured: test runners and embedding applications replace it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # (under the handler's lock)
        super().emit(record)


# uvicorn passes an ANSI-coloured copy of its message as an extra; it is noise in JSON.
_NOISE = ("color_message",)


def drop_noise(_logger: Any, _name: str, event: EventDict) -> EventDict:
    for key in _NOISE:
        event.pop(key, None)
    return event


def _json(value: Any, **_kwargs: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def configure_logging(*, level: str = "INFO", fmt: str = "auto") -> None:
    """Idempotent; safe to call from every entry point."""
    pretty = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        drop_noise,
        REDACTOR,
    ]
    renderer: Processor = (
        structlog.dev.ConsoleRenderer()
        if pretty
        else structlog.processors.JSONRenderer(serializer=_json)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our own access log replaces uvicorn's: it knows the route template, not the raw path.
    logging.getLogger("uvicorn.access").disabled = True
    # Quiet even at DEBUG: drivers would log every statement with its parameters, which
    # carry prompts, metadata and raw callbacks (and once, a generated secret).
    for name in ("httpx", "httpcore", "sqlalchemy.engine", "sqlalchemy.pool", "aiosqlite"):
        logging.getLogger(name).setLevel(logging.WARNING)
