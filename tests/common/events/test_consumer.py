"""Consumer + inbox against real Postgres and real NATS JetStream."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.errors import NotFoundError
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import Database
from services.common.events import (
    Consumer,
    Event,
    EventBus,
    build_headers,
    ensure_stream,
    stream_name,
)
from services.common.events.consumer import PoisonMessageError, resolve_message_type
from services.common.eventspb.shipyard.events.v1.resource_pb2 import ResourceEvent
from services.common.eventspb.shipyard.events.v1.testing_pb2 import TestPing as Ping
from tests.common.events.conftest import KernelDb, eventually
from tests.common.events.helpers import ping_consumer, ping_subject


async def _settled(bus: EventBus, service: str, durable: str) -> bool:
    """Nothing pending or awaiting ack on the durable."""
    try:
        info = await bus.js.consumer_info(stream_name(service), durable)
    except NotFoundError:
        return False
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_consume_same_event_twice_applies_once(bus: EventBus, kdb: KernelDb, service: str):
    """The same ce-id stored twice in the stream (duplicate window shorter than the gap
    between publishes) has one effect; both deliveries are acked."""
    await ensure_stream(bus.js, service, duplicate_window=0.1)
    consumer = ping_consumer(kdb, bus, service)
    try:
        subject = ping_subject(service)
        headers = build_headers(subject, Ping(n=5), source=f"/shipyard/{service}")
        await bus.js.publish(subject, Ping(n=5).SerializeToString(), headers=dict(headers))
        await asyncio.sleep(0.4)
        ack = await bus.js.publish(subject, Ping(n=5).SerializeToString(), headers=dict(headers))
        assert not ack.duplicate and ack.seq == 2  # really stored twice

        await consumer.start()
        assert await eventually(lambda: _settled(bus, service, consumer.durable), within=10)
        assert await kdb.count(kdb.effects) == 1
        assert await kdb.count(kdb.inbox) == 1
    finally:
        await consumer.stop()
        await bus.js.delete_stream(stream_name(service))


async def test_consume_handler_fails_once_then_applies_once(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    """A handler error rolls back its writes and the inbox row; the redelivery applies once."""
    deliveries: list[int] = []

    async def flaky(session: AsyncSession, event: Event) -> None:
        deliveries.append(event.num_delivered)
        await session.execute(insert(kdb.effects).values(msg_id=event.id, n=event.message.n))
        if len(deliveries) == 1:
            raise RuntimeError("transient failure")

    consumer = ping_consumer(kdb, bus, service, handler=flaky, retry_delay=0.1)
    await consumer.start()
    try:
        subject = ping_subject(service)
        headers = build_headers(subject, Ping(n=1), source="/t")
        await bus.js.publish(subject, Ping(n=1).SerializeToString(), headers=headers)

        async def applied() -> bool:
            return await kdb.count(kdb.effects) >= 1 and await _settled(
                bus, service, consumer.durable
            )

        assert await eventually(applied, within=10)
        await asyncio.sleep(0.2)
        assert deliveries == [1, 2]
        assert await kdb.count(kdb.effects) == 1
    finally:
        await consumer.stop()


async def test_consume_gives_up_after_max_deliver(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    """A handler that always fails is tried max_deliver times, then the event is terminated
    and later events still flow."""
    calls: list[int] = []

    async def failing_for_n1(session: AsyncSession, event: Event) -> None:
        if event.message.n == 1:
            calls.append(event.num_delivered)
            raise RuntimeError("permanent failure")
        await session.execute(insert(kdb.effects).values(msg_id=event.id, n=event.message.n))

    consumer = ping_consumer(
        kdb, bus, service, handler=failing_for_n1, max_deliver=3, retry_delay=0.05
    )
    await consumer.start()
    try:
        subject = ping_subject(service)
        for n in (1, 2):
            await bus.js.publish(
                subject,
                Ping(n=n).SerializeToString(),
                headers=build_headers(subject, Ping(), source="/t"),
            )
        assert await eventually(lambda: _settled(bus, service, consumer.durable), within=10)
        await asyncio.sleep(0.3)
        assert calls == [1, 2, 3]
        assert await kdb.count(kdb.effects) == 1
    finally:
        await consumer.stop()


async def test_consume_poison_message_terminated(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    """An undecodable payload is terminated instead of blocking the consumer."""
    consumer = ping_consumer(kdb, bus, service)
    await consumer.start()
    try:
        subject = ping_subject(service)
        await bus.js.publish(
            subject, b"\xff\xff\xff", headers=build_headers(subject, Ping(), source="/t")
        )
        await bus.js.publish(
            subject,
            Ping(n=9).SerializeToString(),
            headers=build_headers(subject, Ping(), source="/t"),
        )
        assert await eventually(lambda: _settled(bus, service, consumer.durable), within=10)
        assert await kdb.count(kdb.effects) == 1
        assert await kdb.count(kdb.inbox) == 1
    finally:
        await consumer.stop()


async def test_consume_two_instances_share_durable(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    """Two instances of one durable (replicas) split the events; each applies once."""
    n = 40
    consumers = [ping_consumer(kdb, bus, service, batch=1) for _ in "ab"]
    for c in consumers:
        await c.start()
    try:
        subject = ping_subject(service)
        for i in range(n):
            await bus.js.publish(
                subject,
                Ping(n=i).SerializeToString(),
                headers=build_headers(subject, Ping(), source="/t"),
            )

        async def all_applied() -> bool:
            return await kdb.count(kdb.effects) >= n and await _settled(
                bus, service, consumers[0].durable
            )

        assert await eventually(all_applied, within=15)
        assert await kdb.count(kdb.effects) == n
    finally:
        for c in consumers:
            await c.stop()


async def test_consume_restart_resumes_durable_position(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    """Stopping and starting the consumer (a service restart) neither replays nor skips."""
    subject = ping_subject(service)

    async def publish(n: int) -> None:
        await bus.js.publish(
            subject,
            Ping(n=n).SerializeToString(),
            headers=build_headers(subject, Ping(), source="/t"),
        )

    first = ping_consumer(kdb, bus, service)
    await first.start()
    await publish(1)
    assert await eventually(lambda: _has_effects(kdb, 1), within=10)
    await first.stop()
    await publish(2)
    second = ping_consumer(kdb, bus, service)
    await second.start()
    try:
        assert await eventually(lambda: _has_effects(kdb, 2), within=10)
        await asyncio.sleep(0.2)
        assert await kdb.count(kdb.effects) == 2
        assert await kdb.count(kdb.inbox) == 2
    finally:
        await second.stop()


async def _has_effects(kdb: KernelDb, n: int) -> bool:
    return await kdb.count(kdb.effects) >= n


def test_resolve_message_type_by_protoname_and_subject():
    types = {
        "shipyard.events.v1.TestPing": Ping,
        "shipyard.notebook.*.modified": ResourceEvent,
        "shipyard.pipeline.>": ResourceEvent,
    }
    ping = {"ce-protoname": "shipyard.events.v1.TestPing"}
    assert resolve_message_type(types, "shipyard.x.ping.sent", ping) is Ping
    assert resolve_message_type(types, "shipyard.notebook.notebook.modified", {}) is ResourceEvent
    assert resolve_message_type(types, "shipyard.pipeline.workflow.deleted", {}) is ResourceEvent
    assert resolve_message_type(Ping, "anything", {}) is Ping
    with pytest.raises(PoisonMessageError):
        resolve_message_type(types, "shipyard.notebook.notebook.added", {})


class _OutageDb(Database):
    """The shared Postgres cannot be stopped from a test, so this Database reports an
    outage through ping() while ``down`` is set (the handler fails the same way)."""

    down = True

    async def ping(self, within: float = 2.0) -> bool:
        return not self.down


async def test_consume_database_outage_holds_event_without_redelivery(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    """While the database is unreachable the event is held in place (in_progress keeps
    JetStream from redelivering past ack_wait) and applied once it is back."""
    db = _OutageDb(kdb.db.url, kdb.db.schema)
    deliveries: list[int] = []

    async def handler(session: AsyncSession, event: Event) -> None:
        deliveries.append(event.num_delivered)
        if db.down:
            raise ConnectionRefusedError("database down")
        await session.execute(insert(kdb.effects).values(msg_id=event.id, n=event.message.n))

    consumer, replica = (
        Consumer(
            db,
            kdb.inbox,
            bus,
            stream=stream,
            durable=f"{service}-outage",
            subjects=ping_subject(service),
            message_type=Ping,
            handler=handler,
            ack_wait=1.0,
            max_deliver=2,
        )
        for _ in "ab"
    )
    await consumer.start()
    await replica.start()  # idle and fetching: it would receive a redelivery
    try:
        subject = ping_subject(service)
        await bus.js.publish(
            subject,
            Ping(n=3).SerializeToString(),
            headers=build_headers(subject, Ping(), source="/t"),
        )
        assert await eventually(lambda: _has_calls(deliveries, 2), within=5)
        await asyncio.sleep(1.5)  # longer than ack_wait
        db.down = False
        assert await eventually(lambda: _has_effects(kdb, 1), within=10)
        assert set(deliveries) == {1}  # never redelivered to the replica, never terminated
        assert await eventually(lambda: _settled(bus, service, consumer.durable), within=5)
        info = await bus.js.consumer_info(stream, consumer.durable)
        assert info.num_redelivered == 0  # in_progress held it past ack_wait
        assert await kdb.count(kdb.effects) == 1
    finally:
        await consumer.stop()
        await replica.stop()
        await db.dispose()


async def _has_calls(calls: list[int], n: int) -> bool:
    return len(calls) >= n
