"""`poyo-relay catalog`: which catalog of PoYo's models the service uses, and replacing it
with PoYo's live one (`sync`) or a file (`import`). Every replica follows within
CATALOG_REFRESH_SECONDS, without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.base import EXIT_FAILED, EXIT_USAGE, cli, fail, one_line, out, with_db

if TYPE_CHECKING:
    from app.catalog.service import CatalogService, Installed
    from app.config import Settings
    from app.db import Database

catalog_cli = typer.Typer(help="The catalog of PoYo's models in use.", no_args_is_help=True)
cli.add_typer(catalog_cli, name="catalog")


def _service(db: Database, settings: Settings) -> CatalogService:
    from app.catalog.service import CatalogService

    return CatalogService(db=db, refresh_seconds=settings.catalog_refresh_seconds)


@catalog_cli.command("status")
def catalog_status() -> None:
    """The catalog in use: its version, where it came from, how many models."""
    from app.cli.base import operator_settings

    settings = operator_settings()

    async def work(db: Database) -> None:
        catalogs = _service(db, settings)
        catalog = await catalogs.current()  # a new database gets the snapshot poyo-relay ships
        active = await catalogs.active()
        assert active is not None
        out.print(f"catalog {active.version}", highlight=False)
        out.print(f"  source     {active.source}", highlight=False)
        out.print(f"  in use     since {active.activated_at.isoformat()}", highlight=False)
        out.print(f"  etag       {active.etag or '(none)'}", highlight=False)
        out.print(
            f"  models     {len(catalog.models)} generate, {len(catalog.chat)} chat (refused)",
            highlight=False,
        )

    with_db(work, settings)


@catalog_cli.command("sync")
def catalog_sync(
    url: Annotated[
        str | None,
        typer.Option(
            help="Where PoYo's catalog API is. Default: the provider's address "
            "(POYO_BASE_URL; in sandbox mode, the simulator)."
        ),
    ] = None,
) -> None:
    """Fetch PoYo's live catalog (every page; unchanged since the last sync costs one
    request) and use it; print what changed."""
    from app.catalog.document import CatalogError
    from app.cli.base import operator_settings
    from app.provider.client import PoyoClient, ProviderError

    settings = operator_settings()
    base_url = (url or settings.provider_base_url).rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        fail(f"--url must start with http:// or https://, not {base_url!r}", EXIT_USAGE)

    async def work(db: Database) -> Installed | None:
        # The catalog is public: no API key goes with it.
        provider = PoyoClient(base_url=base_url, api_key="")
        try:
            return await _service(db, settings).sync(provider, source=f"sync {base_url}")
        finally:
            await provider.aclose()

    try:
        installed = with_db(work, settings)
    except (ProviderError, CatalogError) as exc:
        fail(f"catalog sync from {base_url} failed: {one_line(exc)}", EXIT_FAILED)
    if installed is None:
        out.print("catalog unchanged since the last sync (PoYo answered 304)", highlight=False)
        return
    _print_installed(installed)


@catalog_cli.command("import")
def catalog_import(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="A capability-catalog.json, PoYo's format.")
    ],
) -> None:
    """Use the catalog in FILE; print what changed."""
    from app.catalog.document import CatalogError, parse
    from app.cli.base import operator_settings

    try:
        document = parse(file.read_bytes())
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", EXIT_USAGE)
    except CatalogError as exc:
        fail(f"{file} is not a usable catalog: {exc}", EXIT_USAGE)
    settings = operator_settings()

    async def work(db: Database) -> Installed:
        catalogs = _service(db, settings)
        await catalogs.seeded()
        return await catalogs.install(document, source=f"import {file.name}")

    installed = with_db(work, settings)
    _print_installed(installed)


def _print_installed(installed: Installed) -> None:
    if not installed.activated:
        out.print(f"catalog {installed.version} was already in use; nothing changed")
        return
    out.print(f"catalog {installed.version} is now in use", highlight=False)
    change = installed.diff
    if change.empty:
        out.print("  no model added, removed or changed", highlight=False)
    for title, ids in (("added", change.added), ("removed", change.removed)):
        if ids:
            out.print(f"  {len(ids)} {title}: {', '.join(ids)}", highlight=False)
    if change.changed:
        out.print(f"  {len(change.changed)} changed:", highlight=False)
        for model_id, fields in change.changed.items():
            out.print(f"    {model_id}: {', '.join(fields)}", highlight=False)
    if change.removed:
        out.print(
            "  jobs of removed models stay readable; new ones are refused (422)", highlight=False
        )
