"""CloudEvents headers and trace context, end to end: stage -> relay -> JetStream -> handler."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.events import (
    Event,
    EventBus,
    OutboxRelay,
    current_traceparent,
    new_traceparent,
    set_traceparent,
    stage_event,
    traceparent_context,
)
from services.common.events.tracing import reset_traceparent
from services.common.eventspb.shipyard.events.v1.resource_pb2 import ResourceEvent
from tests.common.events.conftest import KernelDb
from tests.common.events.helpers import ping_consumer


async def test_publish_headers_carry_cloudevents_and_trace(
    bus: EventBus, stream: str, kdb: KernelDb, service: str
):
    subject = f"shipyard.{service}.notebook.modified"
    seen: asyncio.Queue[tuple[Event, str | None]] = asyncio.Queue()

    async def handler(session: AsyncSession, event: Event) -> None:
        seen.put_nowait((event, current_traceparent()))

    consumer = ping_consumer(kdb, bus, service, handler=handler)
    consumer.message_type = {"shipyard.events.v1.ResourceEvent": ResourceEvent}
    relay = OutboxRelay(kdb.db, kdb.outbox, bus, poll_interval=30)
    await consumer.start()
    await relay.start()
    trace = new_traceparent()
    try:
        with traceparent_context(trace):
            async with kdb.db.transaction() as session:
                ce_id = await stage_event(
                    session,
                    kdb.outbox,
                    subject,
                    ResourceEvent(
                        type="MODIFIED",
                        kind="Notebook",
                        namespace="ns",
                        name="nb",
                        resource_version=7,
                        object_json=b"{}",
                    ),
                    source=f"/shipyard/{service}",
                    ce_subject="namespaces/ns/notebooks/nb",
                    kind="Notebook",
                    namespace="ns",
                    resource_version=7,
                )
        relay.wake()
        event, handler_trace = await asyncio.wait_for(seen.get(), timeout=5)
    finally:
        await relay.stop()
        await consumer.stop()

    h = event.headers
    assert re.fullmatch(r"[0-9a-f]{32}", ce_id)
    assert h["ce-id"] == ce_id == h["Nats-Msg-Id"] == event.id
    assert h["ce-specversion"] == "1.0"
    assert h["ce-type"] == f"io.shipyard.{service}.notebook.modified" == event.type
    assert h["ce-source"] == f"/shipyard/{service}"
    assert h["ce-subject"] == "namespaces/ns/notebooks/nb" == event.ce_subject
    assert h["content-type"] == "application/protobuf"
    assert h["ce-protoname"] == "shipyard.events.v1.ResourceEvent"
    assert h["ce-time"].endswith("Z")
    datetime.fromisoformat(h["ce-time"])  # RFC 3339
    assert h["traceparent"] == trace == event.traceparent
    assert handler_trace == trace  # set in the handler's context...
    assert current_traceparent() is None  # ...and only there
    assert event.message.name == "nb" and event.message.resource_version == 7

    async with kdb.db.transaction() as session:
        row = (await session.execute(kdb.outbox.select())).one()
    assert (row.kind, row.namespace, row.resource_version) == ("Notebook", "ns", 7)
    assert row.published_at is not None


async def test_stage_without_trace_starts_new_trace(kdb: KernelDb, service: str):
    """Events staged outside any request still get a valid traceparent of their own."""
    async with kdb.db.transaction() as session:
        await stage_event(
            session, kdb.outbox, f"shipyard.{service}.x.y", ResourceEvent(), source="/t"
        )
    async with kdb.db.transaction() as session:
        headers = (await session.execute(kdb.outbox.select())).one().headers
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", headers["traceparent"])
    assert "ce-subject" not in headers


def test_set_traceparent_rejects_invalid():
    token = set_traceparent("00-" + "0" * 32 + "-" + "1" * 16 + "-01")  # all-zero trace id
    try:
        assert current_traceparent() is None
    finally:
        reset_traceparent(token)
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with traceparent_context(good):
        assert current_traceparent() == good
    assert current_traceparent() is None
