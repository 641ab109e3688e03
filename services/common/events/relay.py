"""OutboxRelay: publish committed outbox rows to JetStream, in id order, at least once.

Each round locks a batch of unpublished rows (``FOR UPDATE SKIP LOCKED`` on Postgres, so
replicas of a service split the work instead of double-publishing), publishes them all
concurrently and awaits the acks, then marks the acknowledged rows published in the same
transaction. A crash between publish and commit re-publishes the batch later; the
``Nats-Msg-Id`` header makes JetStream drop those duplicates within its window, and
consumers' inboxes drop the rest. While NATS is down rows simply wait.

Published rows are kept for ``retention_seconds`` because watches replay from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, delete, func, select, update

from services.common.db import Database
from services.common.events import metrics
from services.common.events.bus import EventBus
from services.common.events.outbox import register_relay, unregister_relay
from services.common.tasks import wait_or_cancel

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
PUBLISH_TIMEOUT = 5.0
PRUNE_EVERY = 60.0
BACKLOG_EVERY = 1.0


class OutboxRelay:
    """Background task that moves outbox rows to JetStream."""

    def __init__(
        self,
        db: Database,
        outbox: Table,
        bus: EventBus,
        *,
        batch: int = 200,
        poll_interval: float = 1.0,
        retention_seconds: float = 3600,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.bus = bus
        self.batch = batch
        self.poll_interval = poll_interval
        self.retention_seconds = retention_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self._last_backlog = 0.0

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        register_relay(self.outbox, self)
        self.bus.on_connect(self._on_connect)
        self._wake.set()  # rows committed while we were down go out right away
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.db.schema}")

    async def stop(self) -> None:
        self._stopping = True
        unregister_relay(self.outbox, self)
        self.bus.remove_on_connect(self._on_connect)
        self._wake.set()
        await wait_or_cancel(self._task, PUBLISH_TIMEOUT + 2)
        self._task = None

    def wake(self) -> None:
        """Publish now: call right after committing a transaction that staged events."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish every unpublished row now; returns how many were published.

        Raises when NATS refuses or times out; rows not acknowledged stay unpublished.
        """
        total = 0
        while not self._stopping:
            published, more = await self._publish_batch()
            total += published
            if not more:
                break
        return total

    # -- internals --------------------------------------------------------------------------

    async def _on_connect(self) -> None:
        self.wake()

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            if backoff:
                await self._sleep(backoff)
            else:
                await self._sleep(self.poll_interval)
            if self._stopping:
                break
            self._wake.clear()
            try:
                if not self.bus.connected:
                    # Events wait in the table; the bus wakes us on (re)connect.
                    backoff = min(max(backoff * 2, 0.2), MAX_BACKOFF)
                    await self._housekeeping()
                    continue
                await self.publish_pending()
                backoff = 0.0
                await self._housekeeping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = min(max(backoff * 2, 0.2), MAX_BACKOFF)
                log.warning("outbox relay: %r (retrying in %.1fs)", exc, backoff)

    async def _sleep(self, seconds: float) -> None:
        """Sleep until woken or ``seconds`` pass."""
        if self._wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _publish_batch(self) -> tuple[int, bool]:
        """One locked batch: publish, then mark acknowledged rows. Returns (published, more)."""
        t = self.outbox
        query = (
            select(t.c.id, t.c.subject, t.c.headers, t.c.payload)
            .where(t.c.published_at.is_(None))
            .order_by(t.c.id)
            .limit(self.batch)
        )
        if self.db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        js = self.bus.js
        async with self.db.transaction() as session:
            rows = (await session.execute(query)).all()
            if not rows:
                return 0, False
            results = await asyncio.gather(
                *(
                    js.publish(
                        row.subject,
                        bytes(row.payload),
                        timeout=PUBLISH_TIMEOUT,
                        headers=dict(row.headers),
                    )
                    for row in rows
                ),
                return_exceptions=True,
            )
            acked = [
                row
                for row, res in zip(rows, results, strict=True)
                if not isinstance(res, BaseException)
            ]
            if acked:
                await session.execute(
                    update(t)
                    .where(t.c.id.in_([row.id for row in acked]))
                    .values(published_at=datetime.now(UTC))
                )
        for row in acked:
            metrics.EVENTS_PUBLISHED.labels(metrics.subject_prefix(row.subject)).inc()
        failures = [res for res in results if isinstance(res, BaseException)]
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(rows)} publishes failed: {failures[0]!r}")
        return len(rows), len(rows) == self.batch

    async def _housekeeping(self) -> None:
        """Refresh the backlog gauge and prune old published rows, each at its own pace."""
        now = time.monotonic()
        if now - self._last_backlog >= BACKLOG_EVERY:
            self._last_backlog = now
            await self.refresh_backlog()
        if now - self._last_prune >= min(PRUNE_EVERY, max(self.retention_seconds / 2, 1.0)):
            self._last_prune = now
            await self.prune()

    async def refresh_backlog(self) -> int:
        """Count unpublished rows into the ``shipyard_outbox_backlog`` gauge; returns it."""
        t = self.outbox
        async with self.db.transaction() as session:
            backlog = await session.scalar(
                select(func.count()).select_from(t).where(t.c.published_at.is_(None))
            )
        metrics.OUTBOX_BACKLOG.set(backlog or 0)
        return int(backlog or 0)

    async def prune(self) -> int:
        """Delete rows published more than ``retention_seconds`` ago; returns how many."""
        t = self.outbox
        cutoff = datetime.now(UTC) - timedelta(seconds=self.retention_seconds)
        async with self.db.transaction() as session:
            result = await session.execute(
                delete(t).where(t.c.published_at.is_not(None), t.c.published_at < cutoff)
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
