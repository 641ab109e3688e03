"""Prometheus metrics on the default registry move with real publishes and deliveries."""

from __future__ import annotations

from prometheus_client import REGISTRY

from services.common.events import EventBus, OutboxRelay
from tests.common.events.conftest import KernelDb, eventually
from tests.common.events.helpers import commit_pings, ping_consumer


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_published_consumed_backlog(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    prefix = f"shipyard.{service}.ping"
    relay = OutboxRelay(kdb.db, kdb.outbox, bus)
    consumer = ping_consumer(kdb, bus, service)
    await commit_pings(kdb, service, range(3))
    assert await relay.refresh_backlog() == 3
    assert _value("shipyard_outbox_backlog") == 3

    assert await relay.publish_pending() == 3
    assert _value("shipyard_events_published_total", subject_prefix=prefix) == 3
    assert await relay.refresh_backlog() == 0
    assert _value("shipyard_outbox_backlog") == 0

    await consumer.start()
    try:

        async def consumed() -> bool:
            return _value("shipyard_events_consumed_total", consumer=consumer.durable) >= 3

        assert await eventually(consumed, within=10)
        assert _value("shipyard_events_redelivered_total", consumer=consumer.durable) == 0
    finally:
        await consumer.stop()
