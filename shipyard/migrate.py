"""``shipyard migrate``: bring every service's schema up to date without starting it."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy import MetaData

from services.common import migrate
from services.common.db import Database

SERVICES = ("notebook", "automl", "pipeline", "serving")


async def migrate_all(progress: Callable[[str], None] = lambda _: None) -> None:
    for name in SERVICES:
        db, metadata, versions = _service(name)
        try:
            await migrate.upgrade(db, metadata, versions)
        finally:
            await db.dispose()
        progress(f"{name}: migrated ({db.url.split('@')[-1]})")


async def downgrade(
    targets: Mapping[str, str], progress: Callable[[str], None] = lambda _: None
) -> None:
    """Take each named service's schema down to its revision (``shipyard migrate
    --downgrade pipeline=0002``), with this release's code: an older one cannot."""
    for name, revision in targets.items():
        db, metadata, versions = _service(name)
        try:
            before = await migrate.current_revision(db)
            await migrate.downgrade(db, metadata, versions, revision)
            after = await migrate.current_revision(db)
        finally:
            await db.dispose()
        progress(f"{name}: {before} -> {after} ({db.url.split('@')[-1]})")


def _service(name: str) -> tuple[Database, MetaData, Path]:
    settings = importlib.import_module(f"services.{name}.settings").Settings()
    tables = importlib.import_module(f"services.{name}.tables")
    package = Path(importlib.import_module(f"services.{name}").__file__ or "").parent
    db = Database(settings.resolved_database_url(), schema=name)
    return db, tables.metadata, package / "migrations" / "versions"
