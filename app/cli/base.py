"""What every `poyo-relay` command shares: the Typer app, the consoles, exit codes, settings,
and running service code against the configured database."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from app.config import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from app.db import Database

T = TypeVar("T")


def _flags_without_a_type() -> None:
    """Recent typers label every option of `--help` with its type, flags too: `--wait
    <bool>`, `--help <bool>`. A flag takes no value: it gets no label, as in click's plain
    help (and typer's before). Any typer without that label is left as it is."""
    from typer.core import TyperOption

    labelled = getattr(TyperOption, "display_type_rich", None)
    if labelled is None or getattr(labelled, "flags_unlabelled", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag and self.metavar is None:
            return None
        result: str | None = labelled(self, ctx)
        return result

    display_type_rich.flags_unlabelled = True  # type: ignore[attr-defined]
    setattr(TyperOption, "display_type_rich", display_type_rich)  # noqa: B010


_flags_without_a_type()

cli = typer.Typer(
    name="poyo-relay",
    help="A durable broker for asynchronous AI generation jobs on PoYo AI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console()
err = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# In a checkout, alembic.ini and migrations/ sit next to the package; in the container
# image the package is installed in site-packages and they sit in the working directory.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent.parent


def settings_or_exit(**overrides: Any) -> Settings:
    """Settings, or one line per problem on stderr and exit code 2: never a traceback."""
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        for problem in exc.problems:
            err.print(f"[red]error:[/red] {problem}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def operator_settings() -> Settings:
    """Settings for a command that runs service code: its logs go to stderr, like the
    service's, so that stdout carries only the command's own output."""
    from app.logs import configure_logging

    settings = settings_or_exit()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


def setting_default(name: str) -> Any:
    """The default of setting `name` (app/config.py), for a command-line option that
    mirrors it (`sandbox --run-seconds`: SANDBOX_RUN_SECONDS), so that they cannot drift
    apart; app/cli/mirrors.py finds every such option."""
    return Settings.model_fields[name].default


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class NotMigrated(Exception):
    """The configured database has no schema yet."""

    def __init__(self) -> None:
        super().__init__("the database has no tables yet: run `poyo-relay migrate` first")


def with_db(work: Callable[[Database], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run `work` against the configured database, closed afterwards; a database without
    its schema raises NotMigrated (one line, not the SQL error)."""
    from app.db import Database, is_unmigrated

    async def main() -> T:
        db = Database(settings or operator_settings())
        try:
            return await work(db)
        except Exception as exc:
            if is_unmigrated(exc):
                raise NotMigrated() from None
            raise
        finally:
            await db.dispose()

    return run_async(main())


def fail(message: str, exit_code: int, details: list[str] | None = None) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    for line in details or []:
        err.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(exit_code)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def print_json(value: Any) -> None:
    import orjson

    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def main() -> None:
    try:
        cli()
    except NotMigrated as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            err.print("interrupted")
        sys.exit(130)
