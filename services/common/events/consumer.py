"""Durable pull consumer with an inbox: every event has its effect exactly once.

JetStream delivers at least once (a redelivery after ack_wait, a nak, a relay that
re-published after a crash). For each message the consumer opens ONE database
transaction, inserts ``(consumer, event id)`` into the inbox and, only if that row is
new, runs the handler in the same transaction; it commits and then acks. A redelivered
event finds its inbox row and is acked without running the handler again. A failing
handler rolls everything back and the message is nak'ed with a growing delay; after
``max_deliver`` attempts it is logged and terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import Database
from services.common.events import cloudevents as ce
from services.common.events import metrics
from services.common.events.bus import EventBus
from services.common.events.tracing import TRACEPARENT_HEADER, traceparent_context
from services.common.tasks import wait_or_cancel

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 1.0
MAX_BACKOFF = 5.0
DB_OUTAGE_PATIENCE = 600.0


@dataclass(frozen=True)
class Event:
    """A decoded event as a handler sees it."""

    subject: str
    message: Message
    headers: Mapping[str, str]
    id: str
    type: str
    source: str
    time: str
    ce_subject: str | None
    traceparent: str | None
    num_delivered: int
    stream: str
    stream_seq: int
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def redelivered(self) -> bool:
        return self.num_delivered > 1


Handler = Callable[[AsyncSession, Event], Awaitable[None]]
MessageTypes = type[Message] | Mapping[str, type[Message]]


class PoisonMessageError(ValueError):
    """The message can never be handled (undecodable, unknown type); it is terminated."""


def _subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard match: ``*`` is one token, ``>`` the rest (one token or more)."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def resolve_message_type(
    types: MessageTypes, subject: str, headers: Mapping[str, str]
) -> type[Message]:
    """The class to decode with: the one type, or a dict keyed by the message full name
    (``ce-protoname``) or by a subject pattern (NATS wildcards allowed)."""
    if isinstance(types, type):
        return types
    protoname = headers.get(ce.H_PROTONAME)
    if protoname and protoname in types:
        return types[protoname]
    for pattern, cls in types.items():
        if _subject_matches(pattern, subject) or fnmatch.fnmatchcase(subject, pattern):
            return cls
    raise PoisonMessageError(f"no message type for subject {subject!r} ({protoname or '?'})")


class Consumer:
    """A durable JetStream pull consumer whose handler runs inside the inbox transaction."""

    def __init__(
        self,
        db: Database,
        inbox: Table,
        bus: EventBus,
        *,
        stream: str,
        durable: str,
        subjects: list[str] | str,
        message_type: MessageTypes,
        handler: Handler,
        batch: int = 50,
        ack_wait: float = 30,
        max_deliver: int = 10,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
    ) -> None:
        self.db = db
        self.inbox = inbox
        self.bus = bus
        self.stream = stream
        self.durable = durable
        self.subjects = [subjects] if isinstance(subjects, str) else list(subjects)
        self.message_type = message_type
        self.handler = handler
        self.batch = batch
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._reset = False

    def consumer_config(self) -> ConsumerConfig:
        single = len(self.subjects) == 1
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            filter_subject=self.subjects[0] if single else None,
            filter_subjects=None if single else self.subjects,
        )

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        if self.bus.connected:
            # Bind now so the durable exists when start() returns; if NATS or the stream is
            # not there yet, the run loop keeps trying.
            try:
                async with asyncio.timeout(5):
                    await self._ensure_subscription()
            except Exception as exc:
                self._reset = True
                log.warning("consumer %s: not bound yet: %r", self.durable, exc)
        self.bus.on_connect(self._on_connect, now=False)
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.durable}")

    async def stop(self) -> None:
        """Finish the message in hand, then stop (bounded; cancels after a grace period)."""
        self._stopping = True
        self.bus.remove_on_connect(self._on_connect)
        await wait_or_cancel(self._task, FETCH_TIMEOUT + 10)
        self._task = None
        await self._drop_subscription()

    # -- internals --------------------------------------------------------------------------

    async def _on_connect(self) -> None:
        # After a reconnect the server may be a fresh one: re-ensure the consumer.
        self._reset = True

    async def _ensure_subscription(self) -> JetStreamContext.PullSubscription:
        if self._sub is not None and not self._reset:
            return self._sub
        self._reset = False
        await self._drop_subscription()
        js = self.bus.js
        # Create or update; the server keeps the durable's position across calls.
        await js.add_consumer(self.stream, self.consumer_config())
        self._sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        log.info("consumer %s bound to stream %s %s", self.durable, self.stream, self.subjects)
        return self._sub

    async def _drop_subscription(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            if backoff:
                await asyncio.sleep(backoff)
            try:
                if not self.bus.connected:
                    await self.bus.wait_connected(within=1.0)
                    continue
                sub = await self._ensure_subscription()
                try:
                    msgs = await sub.fetch(self.batch, timeout=FETCH_TIMEOUT)
                except (TimeoutError, NatsTimeoutError):
                    backoff = 0.0
                    continue
                backoff = 0.0
                for msg in msgs:
                    await self._process(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Connection lost, stream or consumer missing (e.g. NATS lost its store):
                # rebind after a bounded backoff.
                self._reset = True
                backoff = min(max(backoff * 2, 0.2), MAX_BACKOFF)
                level = logging.DEBUG if isinstance(exc, NotFoundError) else logging.WARNING
                log.log(level, "consumer %s: %r (retrying in %.1fs)", self.durable, exc, backoff)

    def _decode(self, msg: Msg) -> Event:
        headers = dict(msg.headers or {})
        md = msg.metadata
        event_id = ce.event_id_of(headers) or f"{md.stream}:{md.sequence.stream}"
        cls = resolve_message_type(self.message_type, msg.subject, headers)
        message = cls()
        try:
            message.ParseFromString(msg.data)
        except DecodeError as exc:
            raise PoisonMessageError(f"cannot decode {cls.DESCRIPTOR.full_name}: {exc}") from exc
        return Event(
            subject=msg.subject,
            message=message,
            headers=headers,
            id=event_id,
            type=headers.get(ce.H_TYPE, ""),
            source=headers.get(ce.H_SOURCE, ""),
            time=headers.get(ce.H_TIME, ""),
            ce_subject=headers.get(ce.H_SUBJECT),
            traceparent=headers.get(TRACEPARENT_HEADER),
            num_delivered=md.num_delivered,
            stream=md.stream,
            stream_seq=md.sequence.stream,
        )

    async def _process(self, msg: Msg) -> None:
        num_delivered = msg.metadata.num_delivered
        if num_delivered > 1:
            metrics.EVENTS_REDELIVERED.labels(self.durable).inc()
        try:
            event = self._decode(msg)
        except PoisonMessageError as exc:
            log.error("consumer %s: terminating %s: %s", self.durable, msg.subject, exc)
            await msg.term()
            return
        try:
            applied = await self._apply_riding_out_db_outage(msg, event)
        except Exception:
            metrics.EVENTS_FAILED.labels(self.durable).inc()
            if num_delivered >= self.max_deliver:
                log.exception(
                    "consumer %s: event %s (%s) failed %d times; giving up",
                    self.durable,
                    event.id,
                    event.subject,
                    num_delivered,
                )
                await msg.term()
            else:
                delay = min(self.retry_delay * 2 ** (num_delivered - 1), self.max_retry_delay)
                log.warning(
                    "consumer %s: event %s (%s) failed (attempt %d); retry in %.1fs",
                    self.durable,
                    event.id,
                    event.subject,
                    num_delivered,
                    delay,
                    exc_info=True,
                )
                await msg.nak(delay=delay)
            return
        await msg.ack()
        metrics.EVENTS_CONSUMED.labels(self.durable).inc()
        if not applied:
            log.debug("consumer %s: event %s already applied", self.durable, event.id)

    async def _apply_riding_out_db_outage(self, msg: Msg, event: Event) -> bool:
        """Apply; while the database is unreachable, hold the message and retry in place.

        A database outage is not the event's fault: nak'ing would burn its bounded
        deliveries and terminate good events. So while ``db.ping()`` fails we keep the
        message (``in_progress`` stops the ack_wait timer) and retry, for at most
        ``DB_OUTAGE_PATIENCE`` seconds. Any other error goes to the retry/term path.
        """
        deadline = asyncio.get_running_loop().time() + DB_OUTAGE_PATIENCE
        backoff = 0.2
        while True:
            try:
                return await self._apply(event)
            except Exception:
                if self._stopping or asyncio.get_running_loop().time() > deadline:
                    raise
                if await self.db.ping(within=2.0):
                    raise  # the database answers: the handler itself failed
                log.warning(
                    "consumer %s: database unreachable; holding event %s (retry in %.1fs)",
                    self.durable,
                    event.id,
                    backoff,
                )
                with contextlib.suppress(Exception):
                    await msg.in_progress()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, min(MAX_BACKOFF, self.ack_wait / 3))

    async def _apply(self, event: Event) -> bool:
        """Inbox insert + handler in one transaction; False if the event was already applied."""
        dialect = postgresql if self.db.is_postgres else sqlite
        stmt = (
            dialect.insert(self.inbox)
            .values(consumer=self.durable, msg_id=event.id, received_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["consumer", "msg_id"])
        )
        async with self.db.transaction() as session:
            result = await session.execute(stmt)
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            with traceparent_context(event.traceparent):
                await self.handler(session, event)
        return True
