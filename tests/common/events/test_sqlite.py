"""The quickstart path: outbox, relay, consumer and prune on SQLite (one file per service)."""

from __future__ import annotations

from pathlib import Path

from services.common.events import EventBus, OutboxRelay
from tests.common.events.conftest import KernelDb, eventually, make_kernel_db
from tests.common.events.helpers import commit_pings, ping_consumer


async def test_outbox_roundtrip_on_sqlite(tmp_path: Path, bus: EventBus, stream: str, service: str):
    # Same tables as the Postgres tests, on a SQLite file.
    kdb: KernelDb = await make_kernel_db(f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}")
    relay = OutboxRelay(kdb.db, kdb.outbox, bus, poll_interval=30)
    consumer = ping_consumer(kdb, bus, service)
    await relay.start()
    await consumer.start()
    try:
        await commit_pings(kdb, service, range(5))

        async def applied() -> bool:
            return await kdb.count(kdb.effects) >= 5

        assert await eventually(applied, within=10)
        assert await kdb.count(kdb.outbox, kdb.outbox.c.published_at.is_(None)) == 0
        pruner = OutboxRelay(kdb.db, kdb.outbox, bus, retention_seconds=0)
        assert await pruner.prune() == 5
        assert await kdb.count(kdb.inbox) == 5
    finally:
        await consumer.stop()
        await relay.stop()
        await kdb.db.dispose()
