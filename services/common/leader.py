"""Leader election for the experiment controller: one replica per database creates trials.

Two replicas reconciling the same experiment would both see room for trials and both create
them. The controller therefore runs only in the replica that holds a Postgres session-level
advisory lock, taken on a connection kept for that purpose. If that replica dies (even by
SIGKILL) its connection closes, Postgres releases the lock, and a standby takes over within
``retry_seconds``; its resync re-adopts the running trials (runtime workloads are idempotent
by name). A leader that loses its connection stops its controller at once.

As a fence against a leader that lost the lock without noticing yet, ``fence(session)`` is
run inside every trial-creating transaction: it fails the transaction unless this replica's
lock session still holds the lock. (The study rows' primary key, experiment and trial number,
would refuse a second creator too.)

SQLite (the single-process quickstart) has no advisory locks: there the one process leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.common.db import Database

log = logging.getLogger(__name__)


class Runnable(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class NotLeader(RuntimeError):
    """This replica no longer holds the controller lock; its write must not commit."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return zlib.crc32(name.encode()) | (0x5A17 << 32)


class LeaderElection:
    """Runs ``component`` only while this replica holds the advisory lock ``name``."""

    def __init__(
        self,
        db: Database,
        component: Runnable,
        name: str,
        retry_seconds: float = 1.0,
        check_seconds: float = 2.0,
    ) -> None:
        self.db, self.component = db, component
        self.key = lock_key(f"{db.schema}/{name}")
        self.retry_seconds, self.check_seconds = retry_seconds, check_seconds
        self.is_leader = False
        self._conn: AsyncConnection | None = None
        self._backend_pid: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.db.is_postgres:
            self.is_leader = True
            await self.component.start()
            return
        self._task = asyncio.create_task(self._run(), name="automl-leader-election")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._step_down()

    async def fence(self, session: AsyncSession) -> None:
        """Raise NotLeader unless our lock session still holds the lock (in ``session``'s tx)."""
        if not self.db.is_postgres:
            return
        if not self.is_leader or self._backend_pid is None:
            raise NotLeader("this replica is not the automl controller leader")
        held = (
            await session.execute(
                text(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = :pid AND ((classid::bigint << 32) | objid::bigint) = :key"
                ),
                {"pid": self._backend_pid, "key": self.key},
            )
        ).first()
        if held is None:
            raise NotLeader("the automl controller lock is no longer held by this replica")

    async def _run(self) -> None:
        while True:
            try:
                if not self.is_leader:
                    await self._try_acquire()
                else:
                    await self._check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: whatever we held is gone
                log.warning("leader election: %r", exc)
                await self._step_down()
            await asyncio.sleep(self.check_seconds if self.is_leader else self.retry_seconds)

    async def _try_acquire(self) -> None:
        if self._conn is None:
            self._conn = await self.db.engine.connect()
            self._backend_pid = (await self._conn.execute(text("SELECT pg_backend_pid()"))).scalar()
            await self._conn.commit()
        async with asyncio.timeout(10):
            got = (
                await self._conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
                )
            ).scalar()
            await self._conn.commit()  # the lock is session-level: it outlives this tx
        if got:
            self.is_leader = True
            log.info("automl controller: this replica is the leader (lock %d)", self.key)
            await self.component.start()

    async def _check(self) -> None:
        assert self._conn is not None
        async with asyncio.timeout(10):
            await self._conn.execute(text("SELECT 1"))
            await self._conn.commit()

    async def _step_down(self) -> None:
        if self.is_leader:
            self.is_leader = False
            log.warning("automl controller: no longer the leader; controller stopped")
            await self.component.stop()
        conn, self._conn, self._backend_pid = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                # Closing the session releases the lock; invalidate so the pool never reuses
                # a connection that might still hold it.
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()


__all__: list[Any] = ["LeaderElection", "NotLeader", "lock_key"]
