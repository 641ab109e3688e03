"""An emulated Kubernetes API server for the runtime's tests: kmock's, plus what it lacks.

There is no kube-apiserver on these machines. kmock's ``KubernetesEmulator`` (a stateful,
in-memory Kubernetes API over HTTP) keeps objects and serves list, watch, get, create,
merge-patch and delete. :class:`ApiServer` adds what the runtime relies on from a real API
server and kmock 0.8 does not do:

* ``metadata.uid``, ``creationTimestamp`` and a ``resourceVersion`` that grows with every
  change (deletions included), the list's ``resourceVersion``, and watches that resume from
  one: the events after it are replayed from a history, then live ones follow;
* a history that can be compacted (:meth:`ApiServer.compact`): resuming from a version older
  than that answers ``410 Gone`` (an ``ERROR`` event, as the watch cache does); watches can
  be dropped (:meth:`ApiServer.drop_watches`) and held back (:meth:`ApiServer.hold_watches`),
  and end after ``timeoutSeconds``;
* ``labelSelector`` on lists and watches;
* graceful pod deletion: a DELETE marks the pod (``deletionTimestamp``) and the kubelet
  removes it with ``gracePeriodSeconds=0`` once its processes are gone (a finalizer of the
  emulator's holds the pod until then; kmock honours finalizers);
* Namespaces (kmock 0.8 cannot parse ``/api/v1/namespaces``; served here from a dict);
* scripted refusals (:meth:`ApiServer.refuse`): the next creations of a kind (pods, claims)
  in a namespace answer ``403 Forbidden`` with given words, as quota admission answers.

What it does not do: admission (Pod Security, quotas; a test scripts a refusal), validation
(the tests validate manifests with kubernetes-validate instead), strategic merge (every patch
is a JSON merge patch, which is what the runtime sends), the garbage collector, the scheduler
and the kubelet (``kubelet.py`` is a test-only kubelet), RBAC and authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import aiobus  # the event bus kmock's watches read; no public name

from services.common.runtime.labels import parse_selector

#: Holds a pod until the kubelet has stopped it (graceful deletion).
KUBELET_FINALIZER = "emulator.shipyard.io/kubelet"
RESOURCES = (
    "v1/pods",
    "v1/services",
    "v1/secrets",
    "v1/configmaps",
    "v1/persistentvolumeclaims",
    "v1/serviceaccounts",
    "rbac.authorization.k8s.io/v1/rolebindings",
    "networking.k8s.io/v1/networkpolicies",
)
_NAMESPACES = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?/?$")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _RecordingBus(aiobus.Bus[Any]):
    """kmock's event bus of one resource, stamping each event with the next resourceVersion
    and keeping it in the server's history (kmock puts events under its lock, in order)."""

    server: ApiServer
    resource: Any

    async def put(self, *items: Any) -> None:
        for event in items:
            self.server._record(self.resource, event)
        await super().put(*items)


class _Buses(dict[Any, _RecordingBus]):
    def __init__(self, server: ApiServer) -> None:
        super().__init__()
        self.server = server

    def __missing__(self, resource: Any) -> _RecordingBus:
        bus = _RecordingBus()
        bus.server, bus.resource = self.server, resource
        self[resource] = bus
        return bus


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with resourceVersions, resumable watches, 410s and namespaces."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for resource in RESOURCES:
            self.resources[resource] = kmock.ResourceInfo()
        self.version = 0
        self.compacted = 0
        self.history: list[tuple[int, Any, dict[str, Any]]] = []
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.watch_requests = 0
        self._watch_stops: dict[asyncio.Event, str] = {}
        self._held = ""
        self._watch_gate = asyncio.Event()
        self._watch_gate.set()

        self._buses: dict[Any, Any] = _Buses(self)
        self.refusals: dict[tuple[str, str], list[str]] = {}

    # -- versions and history ----------------------------------------------------------------

    def _record(self, resource: Any, event: dict[str, Any]) -> None:
        self.version += 1
        meta = event.get("object", {}).get("metadata")
        if isinstance(meta, dict):
            # kmock's event shares this dict with the stored object: both get the version.
            meta["resourceVersion"] = str(self.version)
        self.history.append((self.version, resource, event))

    def compact(self) -> None:
        """Forget history: resuming a watch from any version seen so far answers 410 Gone."""
        self.compacted = self.version + 1
        self.history.clear()

    def drop_watches(self, selector: str | None = None) -> None:
        """End the open watch streams (of ``selector``'s watchers only, if given), as an API
        server restart or a load balancer would."""
        for stop, watched in list(self._watch_stops.items()):
            if selector is None or watched == selector:
                stop.set()

    @contextlib.contextmanager
    def hold_watches(self, selector: str | None = None) -> Iterator[None]:
        """New watches (of ``selector``'s watchers only, if given) wait inside this block:
        those clients are cut off meanwhile."""
        self._held = selector or ""
        self._watch_gate.clear()
        try:
            yield
        finally:
            self._watch_gate.set()

    def refuse(self, plural: str, namespace: str, *reasons: str) -> None:
        """The next ``len(reasons)`` creations of core ``plural`` (``pods``,
        ``persistentvolumeclaims``) in ``namespace`` are refused, one reason each: ``403
        Forbidden``, ``<plural> "<name>" is forbidden: <reason>``."""
        self.refusals.setdefault((plural, namespace), []).extend(reasons)

    # -- requests ----------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        match = _NAMESPACES.match(raw_request.path)
        if match:
            return await self._serve_namespace(raw_request, match.group(1))
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        plural = getattr(request.resource, "plural", "")
        refusals = self.refusals.get((plural, request.namespace or ""))
        if request.action == kmock.action.CREATE and refusals and isinstance(request.data, dict):
            name = request.data.get("metadata", {}).get("name")
            return _status(403, "Forbidden", f'{plural} "{name}" is forbidden: {refusals.pop(0)}')
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == kmock.action.CREATE:
                self._stamp_new(request)
            elif request.action == kmock.action.UPDATE:
                request.data.get("metadata", {}).pop("resourceVersion", None)
        if (
            request.action == kmock.action.DELETE
            and request.resource == kmock.resource("", "v1", "pods")
            and _grace(request) == 0
        ):
            self._release(request)
        return await super()._handle(request)

    def _stamp_new(self, request: kmock.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        meta.pop("resourceVersion", None)
        if request.namespace and "namespace" not in meta:
            meta["namespace"] = request.namespace
        if request.resource == kmock.resource("", "v1", "pods"):
            meta["finalizers"] = [*meta.get("finalizers", []), KUBELET_FINALIZER]
            request.data.setdefault("status", {"phase": "Pending"})
        if request.resource == kmock.resource("", "v1", "persistentvolumeclaims"):
            request.data.setdefault("status", {"phase": "Bound"})

    def _release(self, request: kmock.Request) -> None:
        """A deletion without grace: the pod goes now, finalizer or not (kubelet's last)."""
        assert request.resource is not None and request.name is not None
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            finalizers = [
                f
                for f in self.objects[key].get("metadata", {}).get("finalizers", [])
                if f != KUBELET_FINALIZER
            ]
            self.objects[key].patch({"metadata": {"finalizers": finalizers or None}})

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        match = parse_selector(request.params.get("labelSelector") or None)
        async with self._lock:
            items = [obj.raw for obj in self._matching(request) if _labels_match(obj.raw, match)]
            version = self.version
        return {"kind": "List", "metadata": {"resourceVersion": str(version)}, "items": items}

    def _matching(self, request: kmock.Request) -> list[Any]:
        return [
            obj
            for (resource, namespace, _), obj in self.objects.items()
            if resource == request.resource
            and not obj.deleted
            and (request.namespace is None or namespace == request.namespace)
        ]

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        yield b""  # start the response; kmock streams what follows
        self.watch_requests += 1
        watched = request.params.get("labelSelector") or ""
        if not self._held or self._held == watched:
            await self._watch_gate.wait()
        match = parse_selector(watched or None)
        since = request.params.get("resourceVersion") or ""
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        bus = self._buses[request.resource]
        marker = await bus.mark()  # before the backlog: nothing falls in between
        stop = asyncio.Event()
        self._watch_stops[stop] = watched
        try:
            async with self._lock:
                if since and since != "0":
                    if int(since) < self.compacted:
                        yield _gone(since)
                        return
                    backlog = [
                        e for v, r, e in self.history if v > int(since) and r == request.resource
                    ]
                else:
                    backlog = [{"type": "ADDED", "object": o.raw} for o in self._matching(request)]
                seen = self.version
            for event in backlog:
                if self._wanted(request, event, match):
                    yield _public(event)
            async for event in _until_stopped(bus.stream(since=marker), stop, timeout):
                version = int(event.get("object", {}).get("metadata", {}).get("resourceVersion", 0))
                if version > seen and self._wanted(request, event, match):
                    yield _public(event)
        finally:
            self._watch_stops.pop(stop, None)
            await bus.unmark(marker)

    @staticmethod
    def _wanted(request: kmock.Request, event: dict[str, Any], match: Any) -> bool:
        meta = event.get("object", {}).get("metadata", {})
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        return _labels_match(event.get("object", {}), match)

    # -- namespaces (kmock 0.8 cannot route /api/v1/namespaces) --------------------------------

    async def _serve_namespace(
        self, raw: aiohttp.web.BaseRequest, name: str | None
    ) -> aiohttp.web.StreamResponse:
        body = await raw.json() if raw.can_read_body else {}
        if name is None and raw.method == "GET":
            return aiohttp.web.json_response(
                {"kind": "NamespaceList", "metadata": {}, "items": list(self.namespaces.values())}
            )
        if name is None and raw.method == "POST":
            ns_name = body.get("metadata", {}).get("name", "")
            if ns_name in self.namespaces:
                return _status(409, "AlreadyExists", f'namespaces "{ns_name}" already exists')
            self.version += 1
            body["metadata"].update(
                uid=str(uuid.uuid4()),
                creationTimestamp=now(),
                resourceVersion=str(self.version),
            )
            body["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = ns_name
            body["status"] = {"phase": "Active"}
            self.namespaces[ns_name] = body
            return aiohttp.web.json_response(body, status=201)
        if name not in self.namespaces:
            return _status(404, "NotFound", f'namespaces "{name}" not found')
        if raw.method == "GET":
            return aiohttp.web.json_response(self.namespaces[name])
        if raw.method == "PATCH":
            current = self.namespaces[name]
            for key in ("labels", "annotations"):
                current["metadata"].setdefault(key, {}).update(
                    body.get("metadata", {}).get(key) or {}
                )
            return aiohttp.web.json_response(current)
        if raw.method == "DELETE":
            return aiohttp.web.json_response(self.namespaces.pop(name))
        return _status(405, "MethodNotAllowed", raw.method)


def _grace(request: kmock.Request) -> int | None:
    value = request.params.get("gracePeriodSeconds")
    if value is None and isinstance(request.data, dict):
        value = request.data.get("gracePeriodSeconds")
    return None if value is None else int(value)


def _labels_match(obj: dict[str, Any], match: Any) -> bool:
    return bool(match((obj.get("metadata") or {}).get("labels") or {}))


def _public(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": event["type"], "object": event["object"]}


def _gone(since: str) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": 410,
            "reason": "Expired",
            "message": f"too old resource version: {since}",
        },
    }


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        },
        status=code,
    )


async def _until_stopped(
    events: AsyncIterator[Any], stop: asyncio.Event, seconds: float | None
) -> AsyncIterator[Any]:
    """``events`` until ``stop`` is set or ``seconds`` passed.

    A task pumps the events into a queue, so that ending early cancels that task (and the
    generator it iterates, at its await) instead of leaving a half-run generator behind.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
        finally:
            queue.put_nowait(done)

    loop = asyncio.get_running_loop()
    end = None if seconds is None else loop.time() + seconds
    pumping = loop.create_task(pump())
    stopped = loop.create_task(stop.wait())
    try:
        while True:
            left = None if end is None else end - loop.time()
            if left is not None and left <= 0:
                return
            nxt = loop.create_task(queue.get())
            finished, _ = await asyncio.wait(
                {nxt, stopped}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            if nxt not in finished:
                nxt.cancel()
                return
            event = nxt.result()
            if event is done:
                return
            yield event
    finally:
        for task in (pumping, stopped):
            task.cancel()
        await asyncio.gather(pumping, stopped, return_exceptions=True)
