"""`poyo-relay archive`: outputs kept in poyo-relay's own storage. `backfill` asks the
worker to archive jobs that succeeded before archiving existed (or whose archive was given
up on); `verify` re-reads stored files and reports any that differ from their record."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from app.cli.base import EXIT_FAILED, cli, fail, one_line, operator_settings, out, with_db
from app.timeutil import assume_utc

if TYPE_CHECKING:
    from app.archive.service import ArchiveService
    from app.config import Settings
    from app.db import Database

T = TypeVar("T")

archive_cli = typer.Typer(help="Archived outputs: backfill and verify.", no_args_is_help=True)
cli.add_typer(archive_cli, name="archive")

SinceOption = Annotated[
    datetime | None,
    typer.Option(
        help="Only jobs completed at or after this time: 2026-11-30, 2026-11-30T12:00:00 "
        "(UTC unless it carries an offset).",
        metavar="DATE",
        formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"],
    ),
]


def _with_archive(
    settings: Settings, use: Callable[[ArchiveService], Awaitable[T]], what: str
) -> T:
    """Run `use` with the archive service on the configured database and storage, both
    closed afterwards; a failure exits 1 with one line saying `what` failed."""
    from app.runtime import archive_service

    async def work(db: Database) -> T:
        archive = archive_service(settings, db)
        try:
            return await use(archive)
        finally:
            await archive.aclose()

    try:
        return with_db(work, settings)
    except Exception as exc:
        fail(f"{what} failed: {one_line(exc)}", EXIT_FAILED)


@archive_cli.command("backfill")
def backfill(since: SinceOption = None) -> None:
    """Archive succeeded jobs whose outputs are not archived: the running worker takes them."""
    settings = operator_settings()
    if not settings.archive_enabled:
        fail("archiving is off (ARCHIVE_ENABLED=false)", EXIT_FAILED)

    count = _with_archive(
        settings, lambda archive: archive.backfill(since=assume_utc(since)), "backfill"
    )
    out.print(f"{count} jobs due for archiving; the worker archives them", highlight=False)


@archive_cli.command("verify")
def verify(
    since: SinceOption = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Check at most this many files.")] = None,
) -> None:
    """Re-hash archived files and compare them with their recorded size and sha256.

    Exit code 1 when any file is missing or differs.
    """
    settings = operator_settings()

    report = _with_archive(
        settings, lambda archive: archive.verify(since=assume_utc(since), limit=limit), "verify"
    )
    for problem in report.problems:
        out.print(f"{problem.job_id} output {problem.index}: {problem.problem}", highlight=False)
    out.print(f"{report.checked} files checked, {len(report.problems)} problems", highlight=False)
    if report.problems:
        raise typer.Exit(EXIT_FAILED)
