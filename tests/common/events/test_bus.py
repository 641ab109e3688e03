"""EventBus against a nats-server the test owns (started late, restarted)."""

from __future__ import annotations

import asyncio

from nats.js.errors import NotFoundError

from services.common.events import EventBus, keep_stream, stream_name
from tests.common.events.conftest import eventually


async def test_connect_when_nats_starts_late(owned_nats, service: str):
    """NATS down when the service starts: start() returns, the bus connects later and runs
    its on_connect callbacks (here: creating the service's stream)."""
    owned_nats.stop()
    bus = EventBus(owned_nats.url, name="late", reconnect_wait=0.1)
    await asyncio.wait_for(bus.start(), timeout=1)
    keep_stream(bus, service)
    try:
        await asyncio.sleep(0.3)
        assert not bus.connected
        assert not await bus.wait_connected(within=0.2)
        owned_nats.start()
        assert await bus.wait_connected(within=10)
        assert await eventually(_stream_exists(bus, service), within=5)
    finally:
        await bus.close()


async def test_reconnect_after_restart_reruns_callbacks(owned_nats, service: str):
    """After a restart that lost the store, on_connect callbacks recreate the stream."""
    bus = EventBus(owned_nats.url, name="restart", reconnect_wait=0.1)
    await bus.start()
    keep_stream(bus, service)
    try:
        assert await bus.wait_connected(within=10)
        owned_nats.stop()
        assert await eventually(_not(bus), within=5)
        import shutil

        shutil.rmtree(owned_nats.store_dir, ignore_errors=True)
        owned_nats.start()
        assert await bus.wait_connected(within=10)
        assert await eventually(_stream_exists(bus, service), within=5)
    finally:
        await bus.close()


def _stream_exists(bus: EventBus, service: str):
    """A check: does the service's stream exist on the bus's server?"""

    async def check() -> bool:
        try:
            await bus.js.stream_info(stream_name(service))
            return True
        except NotFoundError:  # not made (yet); any other error fails the test
            return False

    return check


def _not(bus: EventBus):
    async def check() -> bool:
        return not bus.connected

    return check
