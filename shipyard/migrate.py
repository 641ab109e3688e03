"""``shipyard migrate``: bring every service's schema up to date without starting it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from services.common import migrate
from services.common.db import Database

SERVICES = ("notebook", "automl", "pipeline", "serving")


async def migrate_all(progress: Callable[[str], None] = lambda _: None) -> None:
    for name in SERVICES:
        settings = importlib.import_module(f"services.{name}.settings").Settings()
        tables = importlib.import_module(f"services.{name}.tables")
        versions = Path(importlib.import_module(f"services.{name}").__file__ or "").parent
        db = Database(settings.resolved_database_url(), schema=name)
        try:
            await migrate.upgrade(db, tables.metadata, versions / "migrations" / "versions")
        finally:
            await db.dispose()
        progress(f"{name}: migrated ({db.url.split('@')[-1]})")
