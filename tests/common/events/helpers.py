"""Shared test helpers: staging Ping events and an effects-recording handler."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.events import Consumer, Event, EventBus, stage_event, stream_name
from services.common.events.consumer import Handler
from services.common.eventspb.shipyard.events.v1.testing_pb2 import TestPing as Ping
from tests.common.events.conftest import KernelDb


def ping_subject(service: str) -> str:
    return f"shipyard.{service}.ping.sent"


async def commit_pings(kdb: KernelDb, service: str, ns: range) -> list[str]:
    """One transaction per n: a state change (a `things` row) and its staged event."""
    ids = []
    for n in ns:
        async with kdb.db.transaction() as session:
            await session.execute(insert(kdb.things).values(name=f"thing-{n}"))
            ids.append(
                await stage_event(
                    session,
                    kdb.outbox,
                    ping_subject(service),
                    Ping(id=f"p{n}", n=n),
                    source=f"/shipyard/{service}",
                    ce_subject=f"namespaces/ns/pings/p{n}",
                )
            )
    return ids


def record_effect(kdb: KernelDb) -> Handler:
    async def handle(session: AsyncSession, event: Event) -> None:
        assert isinstance(event.message, Ping)
        await session.execute(insert(kdb.effects).values(msg_id=event.id, n=event.message.n))

    return handle


def ping_consumer(
    kdb: KernelDb, bus: EventBus, service: str, handler: Handler | None = None, **kw: object
) -> Consumer:
    return Consumer(
        kdb.db,
        kdb.inbox,
        bus,
        stream=stream_name(service),
        durable=f"{service}-effects",
        subjects=f"shipyard.{service}.>",
        message_type=Ping,
        handler=handler or record_effect(kdb),
        **kw,  # type: ignore[arg-type]
    )
