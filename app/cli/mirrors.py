"""Which command-line options mirror a setting (app/config.py), with both defaults: an
option `--x-y` of the command `a b` mirrors the setting `x_y`, `a_x_y` or `a_b_x_y`, e.g.
`sandbox --run-seconds` and SANDBOX_RUN_SECONDS. Their defaults must be equal
(tests/test_cli_tables.py); such options take theirs from `base.setting_default`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app.config import Settings


@dataclass(frozen=True)
class MirroredOption:
    command: str  # as typed after `poyo-relay`: "sandbox", "webhooks deliveries"
    option: str  # "--run-seconds"
    setting: str  # "sandbox_run_seconds"
    default: Any  # the option's
    setting_default: Any  # Settings.model_fields[setting].default


def options_mirroring_settings() -> list[MirroredOption]:
    """Every option of every `poyo-relay` command that mirrors a setting."""
    import typer.main

    import app.cli  # every command registered

    found = []
    for path, command in _commands(typer.main.get_command(app.cli.cli), ()):
        for param in command.params:
            names = [opt for opt in param.opts if opt.startswith("--")]
            if not names or param.param_type_name != "option":
                continue
            name = names[0].removeprefix("--").replace("-", "_")
            for depth in reversed(range(len(path) + 1)):  # the most specific first
                setting = "_".join([*path[:depth], name]).replace("-", "_")
                if setting in Settings.model_fields:
                    default = Settings.model_fields[setting].default
                    found.append(
                        MirroredOption(" ".join(path), names[0], setting, param.default, default)
                    )
                    break
    return found


def _commands(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from _commands(sub, (*path, name))
