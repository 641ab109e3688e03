"""OutboxRelay against real Postgres and real NATS JetStream."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from sqlalchemy import distinct, func, select

from services.common.events import EventBus, OutboxRelay, ensure_stream
from services.common.eventspb.shipyard.events.v1.testing_pb2 import TestPing as Ping
from tests.common.events.conftest import KernelDb, eventually
from tests.common.events.helpers import commit_pings, ping_consumer, ping_subject


async def test_publish_outbox_survives_nats_restart(owned_nats, kdb: KernelDb, service: str):
    """NATS down: N transactions commit with their events; after a restart every event
    reaches the consumer's effects exactly once."""
    n = 20
    bus = EventBus(owned_nats.url, name="outbox-restart", reconnect_wait=0.1)
    await bus.start()
    assert await bus.wait_connected(within=10)
    await ensure_stream(bus.js, service)
    relay = OutboxRelay(kdb.db, kdb.outbox, bus, poll_interval=0.2)
    consumer = ping_consumer(kdb, bus, service, retry_delay=0.1)
    await relay.start()
    await consumer.start()
    try:
        owned_nats.stop()
        assert await eventually(lambda: _false_async(bus.connected), within=5)

        await commit_pings(kdb, service, range(n))
        relay.wake()
        await asyncio.sleep(0.3)
        assert await kdb.count(kdb.things) == n
        assert await kdb.count(kdb.outbox, kdb.outbox.c.published_at.is_(None)) == n
        assert await kdb.count(kdb.effects) == 0

        owned_nats.start()  # same port, same store directory

        async def all_applied() -> bool:
            return await kdb.count(kdb.effects) >= n

        assert await eventually(all_applied, within=30), await kdb.count(kdb.effects)
        await asyncio.sleep(0.5)  # give a would-be duplicate time to land
        async with kdb.db.transaction() as session:
            rows = await session.scalar(select(func.count()).select_from(kdb.effects))
            distinct_ids = await session.scalar(select(func.count(distinct(kdb.effects.c.msg_id))))
            ns = sorted((await session.scalars(select(kdb.effects.c.n))).all())
        assert (rows, distinct_ids) == (n, n)
        assert ns == list(range(n))
        assert await kdb.count(kdb.outbox, kdb.outbox.c.published_at.is_(None)) == 0
    finally:
        await consumer.stop()
        await relay.stop()
        await bus.close()


async def _false_async(value: bool) -> bool:
    return not value


@pytest.mark.parametrize(
    "wake",
    [
        pytest.param(True, id="wake-after-commit"),
        pytest.param(False, id="commit-wakes-registered-relay"),
    ],
)
async def test_publish_skips_poll_interval(
    bus: EventBus, stream: str, kdb: KernelDb, service: str, wake: bool
):
    """With a 30 s poll interval, an event still goes out within seconds: after wake(), and
    without it, since committing a transaction that staged events wakes the relay."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        received.put_nowait(msg.data)

    sub = await bus.nc.subscribe(ping_subject(service), cb=on_msg)
    relay = OutboxRelay(kdb.db, kdb.outbox, bus, poll_interval=30)
    await relay.start()
    try:
        await asyncio.sleep(0.2)  # let the start-up round finish; the relay now sleeps 30 s
        await commit_pings(kdb, service, range(7, 8))
        if wake:
            relay.wake()
        data = await asyncio.wait_for(received.get(), timeout=3)
        assert Ping.FromString(data).n == 7
    finally:
        await sub.unsubscribe()
        await relay.stop()


async def test_publish_rolled_back_event_never_sent(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    """An event staged in a transaction that rolls back is never published."""
    relay = OutboxRelay(kdb.db, kdb.outbox, bus, poll_interval=30)
    await relay.start()
    try:
        try:
            async with kdb.db.transaction() as session:
                from services.common.events import stage_event

                await stage_event(
                    session, kdb.outbox, ping_subject(service), Ping(n=1), source="/t"
                )
                raise RuntimeError("abort")
        except RuntimeError:
            pass
        await commit_pings(kdb, service, range(2, 3))
        relay.wake()

        async def published() -> bool:
            info = await bus.js.stream_info(stream)
            return info.state.messages >= 1

        assert await eventually(published, within=5)
        await asyncio.sleep(0.1)
        assert (await bus.js.stream_info(stream)).state.messages == 1
        assert await kdb.count(kdb.outbox) == 1
    finally:
        await relay.stop()


async def test_publish_two_relays_in_id_order_once(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    """Two relays on one outbox (replicas): SKIP LOCKED splits rows, none is published twice.

    Counted with a core NATS subscriber, which sees every publish, including ones that
    JetStream would drop as duplicates.
    """
    n = 150
    seen: list[int] = []
    sub = await subscribe_ns(bus, service, seen)
    relays = [OutboxRelay(kdb.db, kdb.outbox, bus, batch=20, poll_interval=0.05) for _ in "ab"]
    for r in relays:
        await r.start()
    try:
        await commit_pings(kdb, service, range(n))

        async def done() -> bool:
            return len(seen) >= n

        assert await eventually(done, within=20)
        await asyncio.sleep(0.3)
        assert sorted(seen) == list(range(n))
        assert len(seen) == n
    finally:
        await sub.unsubscribe()
        for r in relays:
            await r.stop()


async def test_publish_single_relay_preserves_id_order(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    """Rows committed before the relay starts go out in id order, across batches."""
    n = 60
    seen: list[int] = []
    sub = await subscribe_ns(bus, service, seen)
    await commit_pings(kdb, service, range(n))
    relay = OutboxRelay(kdb.db, kdb.outbox, bus, batch=25, poll_interval=30)
    await relay.start()
    try:

        async def done() -> bool:
            return len(seen) >= n

        assert await eventually(done, within=10)
        assert seen == list(range(n))
    finally:
        await sub.unsubscribe()
        await relay.stop()


async def subscribe_ns(bus: EventBus, service: str, seen: list[int]) -> Subscription:
    """A core NATS subscriber recording each ping's n (it also sees JetStream duplicates)."""

    async def on_msg(msg: Msg) -> None:
        seen.append(Ping.FromString(msg.data).n)

    return await bus.nc.subscribe(ping_subject(service), cb=on_msg)


async def test_prune_keeps_unpublished_and_recent(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    """prune() drops only rows published longer ago than the retention."""
    keep = OutboxRelay(kdb.db, kdb.outbox, bus, retention_seconds=3600)
    drop = OutboxRelay(kdb.db, kdb.outbox, bus, retention_seconds=0)
    await commit_pings(kdb, service, range(3))
    assert await keep.publish_pending() == 3
    await commit_pings(kdb, service, range(3, 5))  # staged, not published
    assert await keep.prune() == 0
    assert await drop.prune() == 3
    assert await kdb.count(kdb.outbox) == 2
    assert await kdb.count(kdb.outbox, kdb.outbox.c.published_at.is_(None)) == 2
