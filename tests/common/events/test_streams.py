"""Per-service streams: naming and idempotent create/update against real JetStream."""

from __future__ import annotations

from services.common.events import EventBus, delete_stream, ensure_stream, stream_name
from services.common.events.streams import stream_subjects


def test_stream_name_and_subjects():
    assert stream_name("automl") == "SHIPYARD_AUTOML"
    assert stream_subjects("automl") == ["shipyard.automl.>"]


async def test_ensure_stream_idempotent_and_updates(bus: EventBus, service: str):
    try:
        first = await ensure_stream(bus.js, service)
        again = await ensure_stream(bus.js, service)
        assert first.config.name == again.config.name == stream_name(service)
        assert again.config.subjects == [f"shipyard.{service}.>"]
        assert again.config.duplicate_window >= 120
        updated = await ensure_stream(bus.js, service, duplicate_window=300)
        assert updated.config.duplicate_window == 300
        assert (await bus.js.stream_info(stream_name(service))).config.duplicate_window == 300
    finally:
        assert await delete_stream(bus.js, service)
    assert not await delete_stream(bus.js, service)
