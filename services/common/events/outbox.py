"""Stage an event in the caller's transaction (the transactional outbox).

The state change and its event commit together or not at all; the
:class:`~services.common.events.relay.OutboxRelay` publishes committed rows later, so
an event is never lost while NATS is down, only delivered late.
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.protobuf.message import Message
from sqlalchemy import Table, event, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.common.events.cloudevents import build_headers
from services.common.events.tracing import current_traceparent, new_traceparent

if TYPE_CHECKING:
    from services.common.events.relay import OutboxRelay

# Relays publishing each outbox table (keyed by id(table)): staging registers an
# after-commit hook that wakes them, so publishing does not wait for the next poll even
# if the caller forgets relay.wake().
_relays: dict[int, weakref.WeakSet[OutboxRelay]] = {}
_WAKE_FLAG = "shipyard_outbox_wake"


def register_relay(outbox: Table, relay: OutboxRelay) -> None:
    _relays.setdefault(id(outbox), weakref.WeakSet()).add(relay)


def unregister_relay(outbox: Table, relay: OutboxRelay) -> None:
    relays = _relays.get(id(outbox))
    if relays is not None:
        relays.discard(relay)


def _wake_after_commit(session: AsyncSession, outbox: Table) -> None:
    sync_session = session.sync_session
    tables: set[int] | None = sync_session.info.get(_WAKE_FLAG)
    if tables is None:
        tables = sync_session.info[_WAKE_FLAG] = set()

        def after_commit(s: Session) -> None:
            for key in s.info.pop(_WAKE_FLAG, set()):
                for relay in list(_relays.get(key, ())):
                    relay.wake()

        def after_rollback(s: Session, _previous: object) -> None:
            s.info.pop(_WAKE_FLAG, None)

        event.listen(sync_session, "after_commit", after_commit, once=True)
        event.listen(sync_session, "after_soft_rollback", after_rollback, once=True)
    tables.add(id(outbox))


async def stage_event(
    session: AsyncSession,
    outbox: Table,
    subject: str,
    message: Message,
    *,
    source: str,
    ce_type: str | None = None,
    ce_subject: str | None = None,
    kind: str | None = None,
    namespace: str | None = None,
    resource_version: int | None = None,
) -> str:
    """Insert ``message`` for ``subject`` into ``outbox`` within the session's transaction.

    Returns the event id (``ce-id`` and ``Nats-Msg-Id``). ``kind``/``namespace``/
    ``resource_version`` are set for resource events so watches can replay from the outbox.
    The current traceparent (or a fresh one) travels with the event.
    """
    headers = build_headers(
        subject,
        message,
        source=source,
        ce_type=ce_type,
        ce_subject=ce_subject,
        traceparent=current_traceparent() or new_traceparent(),
    )
    await session.execute(
        insert(outbox).values(
            msg_id=headers["ce-id"],
            subject=subject,
            headers=headers,
            payload=message.SerializeToString(),
            created_at=datetime.now(UTC),
            published_at=None,
            kind=kind,
            namespace=namespace,
            resource_version=resource_version,
        )
    )
    _wake_after_commit(session, outbox)
    return headers["ce-id"]
