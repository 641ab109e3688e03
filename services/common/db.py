"""Database access: async SQLAlchemy 2.x on Postgres (asyncpg) or SQLite (aiosqlite).

Each service owns its tables. On Postgres they live in a schema named after the
service (tables are declared without a schema and mapped with
``schema_translate_map``); on SQLite each service has its own database file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import MetaData, event, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """A MetaData for one service's tables (schema-less; see module docstring)."""
    return MetaData(naming_convention=NAMING_CONVENTION)


class Database:
    """One service's engine and session factory."""

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        self.is_postgres = url.startswith("postgresql")
        kwargs: dict[str, object] = {"pool_pre_ping": True}
        if self.is_postgres:
            kwargs.update(pool_size=10, max_overflow=20)
        else:
            sqlite_path = url.split("///", 1)[-1]
            if sqlite_path and sqlite_path != ":memory:":
                Path(sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        engine = create_async_engine(url, **kwargs)
        if self.is_postgres:
            engine = engine.execution_options(schema_translate_map={None: schema})
        else:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        self.engine: AsyncEngine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def ensure_schema(self) -> None:
        if self.is_postgres:
            async with self.engine.begin() as conn:
                # Two replicas starting together: CREATE SCHEMA IF NOT EXISTS is not safe
                # against a concurrent one (the loser fails on pg_namespace's unique index),
                # so they take turns under a transaction-level lock.
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                    {"k": f"shipyard-schema-{self.schema}"},
                )
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self, within: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(within), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the watch/relay readers run beside a writer; the quickstart is one process per file.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
