"""`poyo-relay archive`: outputs kept in poyo-relay's own storage. `backfill` asks the
worker to archive jobs that succeeded before archiving existed (or whose archive was given
up on); `verify` re-reads stored files and reports any that differ from their record."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.base import EXIT_FAILED, cli, fail, one_line, operator_settings, out, with_db

if TYPE_CHECKING:
    from app.archive.service import ArchiveService, VerifyReport
    from app.config import Settings
    from app.db import Database

archive_cli = typer.Typer(help="Archived outputs: backfill and verify.", no_args_is_help=True)
cli.add_typer(archive_cli, name="archive")

SinceOption = Annotated[
    datetime | None,
    typer.Option(
        help="Only jobs completed at or after this time (UTC unless it says otherwise).",
        formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"],
    ),
]


def _utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


async def _service(db: Database, settings: Settings) -> ArchiveService:
    from app.keyring.service import load_server_key
    from app.runtime import archive_service

    return archive_service(settings, db, await load_server_key(settings, db))


@archive_cli.command("backfill")
def backfill(since: SinceOption = None) -> None:
    """Archive succeeded jobs whose outputs are not archived: the running worker takes them."""
    settings = operator_settings()
    if not settings.archive_enabled:
        fail("archiving is off (ARCHIVE_ENABLED=false)", EXIT_FAILED)

    async def work(db: Database) -> int:
        archive = await _service(db, settings)
        try:
            return await archive.backfill(since=_utc(since))
        finally:
            await archive.aclose()

    try:
        count = with_db(work, settings)
    except Exception as exc:
        fail(f"backfill failed: {one_line(exc)}", EXIT_FAILED)
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

    async def work(db: Database) -> VerifyReport:
        archive = await _service(db, settings)
        try:
            return await archive.verify(since=_utc(since), limit=limit)
        finally:
            await archive.aclose()

    try:
        report = with_db(work, settings)
    except Exception as exc:
        fail(f"verify failed: {one_line(exc)}", EXIT_FAILED)
    for problem in report.problems:
        out.print(f"{problem.job_id} output {problem.index}: {problem.problem}", highlight=False)
    out.print(f"{report.checked} files checked, {len(report.problems)} problems", highlight=False)
    if report.problems:
        raise typer.Exit(EXIT_FAILED)
