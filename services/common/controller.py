"""The reconcile loop every service controller is built on.

A controller compares desired state (an object's spec) with observed state (the
runtime, other objects, events) and acts. It is level-triggered and idempotent:
``reconcile`` gets only a key and must work out everything from current state, so
it is safe to run any number of times. Work arrives three ways:

- every committed change to a watched kind in this process (store listener), at once;
- ``enqueue`` calls from event consumers and runtime callbacks;
- a periodic resync of every object, the backstop after a crash or a missed event.

Keys are de-duplicated while queued, and one key is never reconciled by two workers
at the same time. A failing reconcile is retried with exponential back-off, except while
the database does not answer: that is not the object's fault, so its key is retried every
``outage_retry_seconds`` (one warning line, no back-off to grow), and work resumes within
that long after the database is back instead of after the back-off it would have reached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from services.common.resources import ResourceKind, ResourceStore, WatchEvent
from services.common.runtime.quota import QuotaRefused
from services.common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

RECONCILES = Counter(
    "shipyard_reconciles",
    "Reconcile passes this process ran (only a service's leader replica runs any).",
    ["kinds"],
)


@dataclass(frozen=True, order=True)
class Key:
    kind: str
    namespace: str
    name: str


class Controller:
    """Subclass and implement :meth:`reconcile`; list the kinds it watches in ``kinds``."""

    kinds: Sequence[ResourceKind] = ()
    resync_seconds: float = 30.0
    workers: int = 4
    max_backoff: float = 30.0
    outage_retry_seconds: float = 2.0

    def __init__(self, store: ResourceStore) -> None:
        self.store = store
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._by_name = {k.kind: k for k in self.kinds}
        self._reconciles = RECONCILES.labels(",".join(k.kind for k in self.kinds))
        store.add_listener(self._on_change)

    # -------------------------------------------------------------- interface
    async def reconcile(self, kind: ResourceKind, namespace: str, name: str) -> None:
        """Bring one object's world in line with its spec. Must be idempotent."""
        raise NotImplementedError

    def keys_for(self, kind: ResourceKind, event: WatchEvent) -> Sequence[Key]:
        """Which keys a change should wake; by default the changed object itself."""
        meta = event.object.get("metadata", {})
        return [Key(kind.kind, meta.get("namespace", ""), meta.get("name", ""))]

    # -------------------------------------------------------------- plumbing
    def enqueue(self, kind: ResourceKind | str, namespace: str, name: str) -> None:
        key = Key(kind if isinstance(kind, str) else kind.kind, namespace, name)
        if key in self._active:
            self._dirty.add(key)  # run again once the current pass finishes
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _on_change(self, kind: ResourceKind, event: WatchEvent) -> None:
        for key in self.keys_for(kind, event):
            if key.kind in self._by_name:
                self.enqueue(key.kind, key.namespace, key.name)

    async def resync(self) -> None:
        for kind in self.kinds:
            for obj in await self.store.list_all(kind):
                meta = obj["metadata"]
                self.enqueue(kind, meta.get("namespace", ""), meta["name"])

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"{type(self).__name__}-{i}")
            for i in range(self.workers)
        ]
        self._tasks.append(asyncio.create_task(self._resync_loop()))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    async def _resync_loop(self) -> None:
        while True:
            try:
                await self.resync()
            except Exception as exc:
                if await self.store.db.ping(within=1.0):
                    log.exception("%s resync failed", type(self).__name__)
                else:
                    log.warning("%s resync: database unavailable (%r)", type(self).__name__, exc)
            await asyncio.sleep(self.resync_seconds)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            if key in self._active:
                self._dirty.add(key)
                continue
            self._active.add(key)
            try:
                kind = self._by_name[key.kind]
                self._reconciles.inc()
                await self.reconcile(kind, key.namespace, key.name)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not await self.store.db.ping(within=1.0):
                    log.warning(
                        "reconcile %s/%s %s: database unavailable (%r); retrying in %.0fs",
                        key.namespace,
                        key.name,
                        key.kind,
                        exc,
                        self.outage_retry_seconds,
                    )
                    asyncio.get_running_loop().call_later(
                        self.outage_retry_seconds, self.enqueue, key.kind, key.namespace, key.name
                    )
                    continue
                attempts = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(self.max_backoff, 0.1 * 2**attempts)
                if isinstance(exc, QuotaRefused):  # no fault: waits for room, said plainly
                    log.warning(
                        "reconcile %s/%s %s waits for quota room (attempt %d; again in %.1fs): %s",
                        key.namespace,
                        key.name,
                        key.kind,
                        attempts,
                        delay,
                        exc.message,
                    )
                else:
                    log.exception(
                        "reconcile %s/%s %s failed (attempt %d); retrying in %.1fs",
                        key.namespace,
                        key.name,
                        key.kind,
                        attempts,
                        delay,
                    )
                asyncio.get_running_loop().call_later(
                    delay, self.enqueue, key.kind, key.namespace, key.name
                )
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key.kind, key.namespace, key.name)
