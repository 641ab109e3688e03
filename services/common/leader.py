"""Leader election among a service's replicas: exactly one replica per database reconciles.

Every replica serves the API (any of them takes a write), but two replicas reconciling the
same object would both act on it: both start a workflow's next step, both create a trial for
the same free slot. So a service's controllers, and whatever else acts on its objects (event
consumers that wake them, the pipeline scheduler), run only in the replica that holds a
Postgres session-level advisory lock, taken on a connection kept for that purpose. A standby
tries to take the lock every ``retry_seconds``.

When the leader dies its lock session ends and Postgres releases the lock: at once when the
process is killed (the kernel closes its socket), and within ``session_timeout_seconds`` when
it hangs or its network goes (the lock session is set to ``idle_session_timeout``, and the
leader pings it every ``check_seconds``). A standby then takes over within ``retry_seconds``
and its controllers' first resync adopts the running workloads (runtime workloads are
idempotent by name). A leader that loses its lock connection stops its components at once.

As a fence against a leader that lost the lock without noticing yet, ``fence(session)`` can be
run inside a write's transaction: it fails the transaction unless this replica's lock session
still holds the lock (automl runs it in every trial-creating transaction).

SQLite (the single-process quickstart) has no advisory locks: there the one process leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Sequence
from typing import Protocol

from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.common.db import Database
from services.common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

LEADER = Gauge(
    "shipyard_leader",
    "1 while this replica holds its service's leader lock and runs the controllers, else 0.",
    ["service", "election"],
)


class Lifecycle(Protocol):
    """Anything a service starts after the database and bus, and stops before them."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class NotLeader(RuntimeError):
    """This replica no longer holds the leader lock; its write must not commit."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return zlib.crc32(name.encode()) | (0x5A17 << 32)


class LeaderElection:
    """Runs ``components`` (started in order, stopped in reverse) only while this replica
    holds the advisory lock ``<service schema>/<name>``."""

    def __init__(
        self,
        db: Database,
        components: Sequence[Lifecycle],
        name: str = "controllers",
        *,
        retry_seconds: float = 1.0,
        check_seconds: float = 2.0,
        session_timeout_seconds: float = 10.0,
    ) -> None:
        self.db, self.components, self.name = db, list(components), name
        self.service = db.schema or "shipyard"
        self.key = lock_key(f"{db.schema}/{name}")
        self.retry_seconds, self.check_seconds = retry_seconds, check_seconds
        self.session_timeout_seconds = session_timeout_seconds
        self.is_leader = False
        self._conn: AsyncConnection | None = None
        self._backend_pid: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._unavailable = False
        self._gauge = LEADER.labels(self.service, name)
        self._gauge.set(0)

    async def start(self) -> None:
        if not self.db.is_postgres:
            await self._lead()
            return
        self._task = asyncio.create_task(self._run(), name=f"{self.service}-leader-election")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait([task])
        await self._step_down(quiet=True)

    async def fence(self, session: AsyncSession) -> None:
        """Raise NotLeader unless our lock session still holds the lock (in ``session``'s tx)."""
        if not self.db.is_postgres:
            return
        if not self.is_leader or self._backend_pid is None:
            raise NotLeader(f"this replica is not the {self.service} leader")
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
            raise NotLeader(f"the {self.service} leader lock is no longer held by this replica")

    async def _run(self) -> None:
        while True:
            try:
                if not self.is_leader:
                    await self._try_acquire()
                else:
                    await self._check()
                if self._unavailable:
                    log.info("%s leader election: the database answers again", self.service)
                    self._unavailable = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: whatever we held is gone
                # Once per outage, not every retry: /readyz and the other components say so too.
                if not self._unavailable or self.is_leader:
                    log.warning(
                        "%s leader election: database unavailable (%r); retrying",
                        self.service,
                        exc,
                    )
                self._unavailable = True
                await self._step_down()
            await asyncio.sleep(self.check_seconds if self.is_leader else self.retry_seconds)

    async def _try_acquire(self) -> None:
        async with asyncio.timeout(10):
            if self._conn is None:
                conn = self._conn = await self.db.engine.connect()
                self._backend_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
                # A leader that hangs or is cut off stops pinging: Postgres then ends the lock
                # session (and frees the lock) after this long, instead of after TCP keepalive
                # gives up (two hours by default). The setting is per session (Postgres 14+).
                timeout_ms = int(self.session_timeout_seconds * 1000)
                await conn.execute(
                    text(
                        "SELECT CASE WHEN current_setting('server_version_num')::int >= 140000 "
                        "THEN set_config('idle_session_timeout', :v, false) END"
                    ),
                    {"v": f"{timeout_ms}ms"},
                )
                await conn.commit()
            got = (
                await self._conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
                )
            ).scalar()
            await self._conn.commit()  # the lock is session-level: it outlives this tx
        if got:
            log.info(
                "%s: this replica is the leader (lock %d); starting its controllers",
                self.service,
                self.key,
            )
            await self._lead()

    async def _lead(self) -> None:
        self.is_leader = True
        self._gauge.set(1)
        for component in self.components:
            await component.start()

    async def _check(self) -> None:
        assert self._conn is not None
        async with asyncio.timeout(10):
            await self._conn.execute(text("SELECT 1"))
            await self._conn.commit()

    async def _step_down(self, *, quiet: bool = False) -> None:
        if self.is_leader:
            self.is_leader = False
            self._gauge.set(0)
            if not quiet:
                log.warning("%s: no longer the leader; controllers stopped", self.service)
            for component in reversed(self.components):
                try:
                    async with asyncio.timeout(30):
                        await component.stop()
                except Exception:
                    log.exception("%s: stopping %s", self.service, type(component).__name__)
        conn, self._conn, self._backend_pid = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                # Closing the session releases the lock; invalidate so the pool never reuses
                # a connection that might still hold it.
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()


__all__ = ["LEADER", "LeaderElection", "Lifecycle", "NotLeader", "lock_key"]
