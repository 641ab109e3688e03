"""Alembic migrations, one history per service, run at start-up and by ``shipyard migrate``.

Each service keeps its history in ``services/<name>/migrations/versions``; the
environment (``services/common/migrations/env.py``) is shared. On Postgres the version
table lives in the service's own schema, and an advisory lock keeps replicas that start
together from migrating twice.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from services.common.db import Database

SCRIPT_LOCATION = Path(__file__).parent / "migrations"


def _config(versions: Path, connection: Connection, schema: str, metadata: MetaData) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(versions))
    cfg.attributes.update(connection=connection, schema=schema, metadata=metadata)
    return cfg


async def upgrade(db: Database, metadata: MetaData, versions: Path, revision: str = "head") -> None:
    """Bring ``db`` (this service's schema) up to ``revision``."""
    await db.ensure_schema()
    await _run(db, lambda cfg: command.upgrade(cfg, revision), versions, metadata)


async def downgrade(db: Database, metadata: MetaData, versions: Path, revision: str) -> None:
    """Take ``db`` (this service's schema) back down to ``revision``, with the code of the
    release that wrote the newer schema (an older release does not know its revisions).

    What a newer revision added is dropped (see docs/operations.md, "Upgrades and
    downgrades"); the objects and their history are in the kernel tables, which stay.
    """
    await _run(db, lambda cfg: command.downgrade(cfg, revision), versions, metadata)


async def current_revision(db: Database) -> str | None:
    """The schema's Alembic revision, None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    async with db.engine.connect() as conn:

        def read(sync: Connection) -> str | None:
            schema = db.schema if db.is_postgres else None
            return MigrationContext.configure(
                sync, opts={"version_table_schema": schema}
            ).get_current_revision()

        return await conn.run_sync(read)


async def _run(
    db: Database, step: Callable[[Config], None], versions: Path, metadata: MetaData
) -> None:
    """Run one Alembic command on ``db`` under the schema's migration lock (Postgres)."""
    async with db.engine.connect() as conn:
        if db.is_postgres:
            lock = zlib.crc32(f"shipyard-migrate-{db.schema}".encode())
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock})
        try:
            await conn.run_sync(lambda sync: step(_config(versions, sync, db.schema, metadata)))
            await conn.commit()
        finally:
            if db.is_postgres:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock})
                await conn.commit()


def run_env() -> None:
    """Body of the shared migrations/env.py (online mode only)."""
    cfg = context.config
    connection: Connection = cfg.attributes["connection"]
    schema: str = cfg.attributes["schema"]
    is_postgres = connection.dialect.name == "postgresql"
    context.configure(
        connection=connection,
        target_metadata=cfg.attributes["metadata"],
        version_table_schema=schema if is_postgres else None,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def create_kernel_tables() -> None:
    """Migration step shared by every service's first revision."""
    from alembic import op

    from services.common.db import new_metadata
    from services.common.tables import add_kernel_tables

    kernel = new_metadata()
    add_kernel_tables(kernel)
    kernel.create_all(op.get_bind())


def drop_kernel_tables() -> None:
    from alembic import op

    from services.common.db import new_metadata
    from services.common.tables import add_kernel_tables

    kernel = new_metadata()
    add_kernel_tables(kernel)
    kernel.drop_all(op.get_bind())
