"""Fixtures for the event kernel tests: a fresh Postgres schema with the kernel tables,
a unique service (stream) per test, and an EventBus on the shared NATS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import (
    Column,
    ColumnElement,
    Integer,
    MetaData,
    String,
    Table,
    func,
    select,
    text,
)

from services.common.db import Database, new_metadata
from services.common.events import EventBus, delete_stream, ensure_stream, stream_name
from services.common.tables import add_kernel_tables


@dataclass
class KernelDb:
    """A service-like schema: kernel tables plus a state table and an effects table."""

    db: Database
    metadata: MetaData
    outbox: Table
    inbox: Table
    things: Table
    effects: Table

    async def count(self, table: Table, *where: ColumnElement[bool]) -> int:
        async with self.db.transaction() as session:
            return int(
                await session.scalar(select(func.count()).select_from(table).where(*where)) or 0
            )


async def make_kernel_db(pg_url: str) -> KernelDb:
    schema = f"ev_{uuid.uuid4().hex[:10]}"
    db = Database(pg_url, schema)
    await db.ensure_schema()
    metadata = new_metadata()
    add_kernel_tables(metadata)
    things = Table(
        "things",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(64), nullable=False),
    )
    # No unique constraint on msg_id: a second effect of one event must show up as a row.
    effects = Table(
        "effects",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("msg_id", String(64), nullable=False),
        Column("n", Integer, nullable=False),
    )
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return KernelDb(
        db, metadata, metadata.tables["outbox"], metadata.tables["inbox"], things, effects
    )


@pytest.fixture
async def kdb(pg_url: str) -> AsyncIterator[KernelDb]:
    k = await make_kernel_db(pg_url)
    yield k
    async with k.db.engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{k.db.schema}" CASCADE'))
    await k.db.dispose()


@pytest.fixture
def service() -> str:
    """A unique service name, so each test has its own stream and subjects."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[EventBus]:
    b = EventBus(nats_url, name="events-test")
    await b.start()
    assert await b.wait_connected(within=10), f"NATS at {nats_url} did not answer"
    yield b
    await b.close()


@pytest.fixture
async def stream(bus: EventBus, service: str) -> AsyncIterator[str]:
    """The test service's stream, deleted at the end."""
    await ensure_stream(bus.js, service)
    yield stream_name(service)
    await delete_stream(bus.js, service)


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, every: float = 0.02
) -> bool:
    """Poll ``check`` until it is true or ``within`` seconds pass."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if await check():
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(every)
