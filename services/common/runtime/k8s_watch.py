"""The runtime's view of its pods: one list, then one watch, resumed where it left off.

A single task lists the pods labelled as ours (all namespaces) and watches from the list's
``resourceVersion``. A watch that ends (the server's ``timeoutSeconds``, a dropped
connection) is resumed from the last version seen, bookmarks included; a version the server
no longer has (``410 Gone``, the watch cache moved on) makes it list again. Every change to
a pod wakes whoever waits for it (:meth:`PodCache.waiter`): waiting never polls.

Kubernetes' "efficient detection of changes": https://kubernetes.io/docs/reference/using-api/api-concepts/
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .k8s_client import KubeApi, KubeApiError

log = logging.getLogger(__name__)

Key = tuple[str, str]
#: Seconds the server keeps one watch open before we resume it.
WATCH_SECONDS = 240
RETRY_MIN, RETRY_MAX = 0.2, 5.0


class WatchExpired(Exception):
    """The server answered 410 Gone: the version we resume from is too old."""


def pod_key(pod: Mapping[str, Any]) -> Key:
    meta = pod.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


class PodCache:
    """Pods matching ``selector``, kept current by a list and a resumed watch."""

    def __init__(
        self,
        api: KubeApi,
        selector: str,
        watch_seconds: int = WATCH_SECONDS,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.api = api
        #: Called with each pod as it is stored (to act on what the watch shows).
        self.on_change = on_change
        self.selector = selector
        self.watch_seconds = watch_seconds
        self.synced = asyncio.Event()
        #: How many times the pods were listed (the first time, and after each 410).
        self.relists = 0
        #: How many watches were opened (the first, and each resume).
        self.watches = 0
        self._pods: dict[Key, dict[str, Any]] = {}
        self._events: dict[Key, asyncio.Event] = {}
        self._version: str | None = None
        self._task: asyncio.Task[None] | None = None

    # -- reading -----------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._pods.get((namespace, name))

    def pods(self) -> list[dict[str, Any]]:
        return list(self._pods.values())

    def waiter(self, key: Key) -> asyncio.Event:
        """An event set at the next change of pod ``key`` (it appears, changes or goes).

        Take it *before* reading what you wait on: a change that lands while you read sets
        it, so no change is ever missed between the read and the wait.
        """
        return self._events.setdefault(key, asyncio.Event())

    def _notify(self, key: Key) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    def _store(self, pod: dict[str, Any]) -> None:
        key = pod_key(pod)
        self._pods[key] = pod
        self._notify(key)
        if self.on_change is not None:
            self.on_change(pod)

    def _forget(self, key: Key) -> None:
        self._pods.pop(key, None)
        self._notify(key)

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="pod-watch")

    async def wait_synced(self, timeout: float) -> None:  # noqa: ASYNC109
        self.start()
        if not self.synced.is_set():
            async with asyncio.timeout(timeout):
                await self.synced.wait()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.synced.clear()
        self._version = None

    async def _run(self) -> None:
        delay = RETRY_MIN
        while True:
            try:
                if self._version is None:
                    await self._relist()
                await self._watch()
                delay = RETRY_MIN
            except WatchExpired:
                log.info(
                    "pod watch: resourceVersion %s expired (410); listing again", self._version
                )
                self._version = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the API may be away; keep trying
                log.warning("pod watch failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    async def _relist(self) -> None:
        listing = await self.api.get("/api/v1/pods", [("labelSelector", self.selector)])
        fresh = {pod_key(p): p for p in listing.get("items") or []}
        for key in set(self._pods) - set(fresh):
            self._forget(key)
        for pod in fresh.values():
            if self._pods.get(pod_key(pod)) != pod:
                self._store(pod)
        self._version = (listing.get("metadata") or {}).get("resourceVersion") or None
        self.relists += 1
        self.synced.set()

    async def _watch(self) -> None:
        query: list[tuple[str, str | int]] = [
            ("watch", "true"),
            ("labelSelector", self.selector),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", self.watch_seconds),
        ]
        if self._version:
            query.append(("resourceVersion", self._version))
        self.watches += 1
        try:
            async with self.api.lines(
                "/api/v1/pods", query, seconds=self.watch_seconds + 30
            ) as lines:
                async for line in lines:
                    if line.strip():
                        self._apply(json.loads(line))
        except KubeApiError as exc:
            if exc.status == 410:
                raise WatchExpired from None
            raise

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpired
            raise KubeApiError(int(obj.get("code") or 500), "WATCH", "pods", str(obj))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            self._store(dict(obj))
        elif kind == "DELETED":
            self._forget(pod_key(obj))
        if version:  # BOOKMARK events carry only this
            self._version = version
