"""The InferenceGraph reconciler: ``minReplicas`` router workloads per graph, and KServe's
status.

As KServe runs a graph as a router Deployment (``cmd/router``) fed the graph's spec as JSON,
shipyard runs ``python -m services.serving.router`` through the runtime seam, in the
platform's image, with the spec as a read-only workload file. Before that, every step that
names an InferenceService (``serviceName``, or a ``serviceUrl`` of this namespace) is
resolved to the gateway path of its predict endpoint, by its protocol as KServe's controller
does (``/v1/models/{name}:predict`` or ``/v2/models/{name}/infer``): the router then reaches
the models through the gateway with its own namespace-bound token, so a graph can call
nothing outside its namespace.

A workload is immutable, so each resolved configuration runs as its own workloads
``ig-{name}-{hash}`` (and ``-1``, ``-2``... for ``minReplicas`` above one): a changed spec
(or a referenced InferenceService that changed protocol) starts new routers beside the old,
which keep serving until all the new ones are ready and are deleted then. The hash covers
what shapes the workload too (``resources`` and the placement fields: :func:`router_digest`),
so new limits take effect the same way; the router count is not in it, so a graph that grows
or shrinks starts or stops only the difference. The gateway routes ``/graphs/{ns}/{name}``
to ``status.endpoint``, or spreads it over ``status.endpoints`` when several routers serve
(the ready routers' opaque URLs, see gateway.routes.targets_from_object).

``Ready`` is True while all the routers of the current configuration serve; False with a
reason while an InferenceService it names does not exist (``InferenceServiceNotFound``),
while a router starts (``RouterNotReady``) or when one crashed (``RouterFailed``, quoting
its log).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from services.common.controller import Controller, Key
from services.common.resources import ResourceKind, ResourceStore
from services.common.resources.store import WatchEvent
from services.common.runtime import Phase, Runtime, WorkloadSpec, WorkloadStatus, placement
from services.serving.controller import LAUNCH_ERRORS
from services.serving.graph import INFERENCE_GRAPH, service_url_target
from services.serving.isvc_status import condition
from services.serving.models import INFERENCE_SERVICE, predictor_model
from services.serving.polling import Backoff

log = logging.getLogger(__name__)

GRAPH_LABEL = "serving.kserve.io/inferencegraph"
HASH_LABEL = "serving.shipyard.io/graph-hash"
FINALIZER = "inferencegraph.finalizers"
ROUTER = "services.serving.router"
#: Where the runtime places the graph's configuration in the router workload (read-only).
GRAPH_FILE = "/var/run/shipyard/graph/graph.json"
#: The spec fields the router reads (KServe's router reads the same from its JSON).
ROUTER_FIELDS = ("timeout", "routerTimeouts")


def _workload_shape(spec: dict[str, Any]) -> dict[str, Any]:
    """The router workload's fields that come from the graph's spec rather than from its
    configuration: its ``resources`` and placement."""
    resources = {k: v for k, v in (spec.get("resources") or {}).items() if v}
    return {**({"resources": resources} if resources else {}), **placement(spec)}


def router_digest(spec: dict[str, Any], config: str) -> str:
    """What names a router workload: its configuration and, when the spec sets any, the
    fields that shape it (a graph without them keeps the hash it always had, so an upgrade
    restarts no router)."""
    shape = _workload_shape(spec)
    material = config + (json.dumps(shape, sort_keys=True) if shape else "")
    return hashlib.sha256(material.encode()).hexdigest()[:10]


def router_replicas(spec: dict[str, Any]) -> int:
    """How many routers serve a graph: ``minReplicas``, at least one (validation refuses 0)."""
    return max(1, int(spec.get("minReplicas") or 1))


def router_name(graph: str, digest: str, index: int) -> str:
    """The workload of a configuration's router ``index``: the first keeps the name one
    router always had, so a graph that grows to more starts only the others."""
    base = f"ig-{graph}-{digest[:8]}"
    return base if index == 0 else f"{base}-{index}"


def predict_path(isvc: dict[str, Any]) -> str:
    """The gateway path of an InferenceService's predict endpoint, by its protocol."""
    meta, predictor = isvc["metadata"], (isvc.get("spec") or {}).get("predictor") or {}
    ns, name = meta["namespace"], meta["name"]
    found = predictor_model(predictor)
    protocol = (found[1].get("protocolVersion") if found is not None else None) or "v1"
    if protocol == "v2":
        return f"/serving/{ns}/{name}/v2/models/{name}/infer"
    return f"/serving/{ns}/{name}/v1/models/{name}:predict"


class InferenceGraphController(Controller):
    """Reconciles InferenceGraphs into router workloads and KServe status."""

    kinds = (INFERENCE_GRAPH,)
    resync_seconds = 10.0  # also notices routers that died (readiness is not an event)
    poll_min, poll_max, poll_failed = 0.1, 0.5, 2.0

    def __init__(
        self,
        store: ResourceStore,
        runtime: Runtime,
        gateway_url: str,
        labels: dict[str, str] | None = None,
    ) -> None:
        super().__init__(store)
        self.runtime = runtime
        self.gateway_url = gateway_url.rstrip("/")
        self.labels = dict(labels or {})
        #: The InferenceServices each graph names, by (namespace, graph).
        self._refs: dict[tuple[str, str], set[str]] = {}
        self._polls = Backoff(self.poll_min, self.poll_max, self.poll_failed)

    def keys_for(self, kind: ResourceKind, event: WatchEvent) -> Sequence[Key]:
        """A graph itself; for an InferenceService, the graphs of its namespace naming it."""
        if kind.kind == INFERENCE_SERVICE.kind:
            meta = event.object.get("metadata") or {}
            ns, name = meta.get("namespace", ""), meta.get("name", "")
            return [
                Key(INFERENCE_GRAPH.kind, gns, graph)
                for (gns, graph), names in sorted(self._refs.items())
                if gns == ns and name in names
            ]
        return super().keys_for(kind, event)

    async def reconcile(self, kind: ResourceKind, namespace: str, name: str) -> None:
        graph = await self.store.find(INFERENCE_GRAPH, namespace, name)
        owned = await self.runtime.list({GRAPH_LABEL: name}, namespace=namespace)
        if graph is None or graph["metadata"].get("deletionTimestamp"):
            for w in owned:
                await self.runtime.delete(w.namespace, w.name)
            if graph is not None:
                await self.store.remove_finalizer(INFERENCE_GRAPH, namespace, name, FINALIZER)
            self._refs.pop((namespace, name), None)
            self._polls.forget((namespace, name))
            return
        config, missing = await self._resolve(graph)
        replicas = router_replicas(graph["spec"])
        serving = [w for w in owned if w.ready]
        failure: str | None = None
        if missing:
            ready = False
            why = "InferenceServiceNotFound"
            message = f"InferenceService {', '.join(missing)} not found in namespace {namespace}"
        else:
            text = json.dumps(config, sort_keys=True, separators=(",", ":"))
            digest = router_digest(graph["spec"], text)
            current = await self._current_routers(graph, text, digest, replicas, owned)
            up = [w for w in current if w.ready]
            older = [w for w in serving if w.labels.get(HASH_LABEL) != digest]
            if len(up) == replicas:
                serving = up  # the current configuration serves; older routers go
                for w in owned:
                    if w.name not in {c.name for c in current}:
                        await self.runtime.delete(w.namespace, w.name)
            else:  # older routers serve until all of the current ones are ready
                serving = older or up
            failures = [f for f in [await self._failure_of(w) for w in current] if f]
            failure = failures[0] if failures else None
            ready = len(up) == replicas
            why = "RouterFailed" if failure else "RouterNotReady"
            if failure:
                message = failure
            elif replicas == 1:
                message = "the graph's router is starting"
            else:
                message = f"{len(up)} of the graph's {replicas} routers are ready"
        status = self._status(graph, ready, why, message, serving)
        if status != graph.get("status"):
            await self.store.update_status(INFERENCE_GRAPH, namespace, name, status)
        self._poll_again(namespace, name, settled=ready or bool(missing), failed=bool(failure))

    async def _current_routers(
        self,
        graph: dict[str, Any],
        text: str,
        digest: str,
        replicas: int,
        owned: list[WorkloadStatus],
    ) -> list[WorkloadStatus]:
        """The configuration's ``replicas`` router workloads, each started if missing or
        started again if an orderly stop ended it; one of a former, larger count is deleted."""
        by_name = {w.name: w for w in owned}
        wanted = [router_name(graph["metadata"]["name"], digest, i) for i in range(replicas)]
        current: list[WorkloadStatus] = []
        for index, name in enumerate(wanted):
            workload = by_name.get(name)
            if workload is not None and workload.finished and workload.reason not in LAUNCH_ERRORS:
                # An orderly stop of the service ended it (a server that crashes is restarted
                # by its runtime): start it again, as the InferenceService controller does.
                await self.runtime.delete(workload.namespace, workload.name)
                workload = None
            if workload is None:
                workload = await self.runtime.apply(self.workload_for(graph, text, digest, index))
                log.info("started router %s/%s", workload.namespace, workload.name)
            current.append(workload)
        for w in owned:
            if w.labels.get(HASH_LABEL) == digest and w.name not in wanted:
                await self.runtime.delete(w.namespace, w.name)
        return current

    async def _resolve(self, graph: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The router's configuration (the spec, each service step with its gateway
        ``path``) and the InferenceServices it names that do not exist."""
        meta, spec = graph["metadata"], graph["spec"]
        ns = meta["namespace"]
        nodes: dict[str, Any] = {}
        missing: list[str] = []
        names: set[str] = set()
        for node_name, node in spec["nodes"].items():
            steps = []
            for step in node.get("steps") or []:
                step = {k: v for k, v in step.items() if v is not None}
                target = self._target(step, ns)
                if target is not None:
                    service, below = target
                    names.add(service)
                    isvc = await self.store.find(INFERENCE_SERVICE, ns, service)
                    if isvc is None:
                        missing.append(service)
                    elif below is None:
                        step["path"] = predict_path(isvc)
                    else:
                        step["path"] = f"/serving/{ns}/{service}{below}"
                steps.append(step)
            nodes[node_name] = {"routerType": node["routerType"], "steps": steps}
        self._refs[(ns, meta["name"])] = names
        config = {"namespace": ns, "name": meta["name"], "nodes": nodes}
        config.update({k: spec[k] for k in ROUTER_FIELDS if spec.get(k) is not None})
        return config, sorted(set(missing))

    @staticmethod
    def _target(step: dict[str, Any], namespace: str) -> tuple[str, str | None] | None:
        """(InferenceService, path below it or None for its predict endpoint) of a step."""
        if step.get("serviceName"):
            return step["serviceName"], None
        if step.get("serviceUrl"):
            found = service_url_target(step["serviceUrl"])
            # Validation refused any other namespace; a stored one from before is not called.
            if found is None or found[0] != namespace:
                raise ValueError(f"serviceUrl {step['serviceUrl']!r}: not of {namespace}")
            return found[1], found[2]
        return None

    def workload_for(
        self, graph: dict[str, Any], config: str, digest: str, index: int = 0
    ) -> WorkloadSpec:
        meta, spec = graph["metadata"], graph["spec"]
        ns, name = meta["namespace"], meta["name"]
        return WorkloadSpec.model_validate(
            {
                "kind": "server",
                "namespace": ns,
                "name": router_name(name, digest, index),
                "command": [self.runtime.python, "-m", ROUTER],
                "args": ["--graph", GRAPH_FILE, "--port", "$(PORT)"],
                "image": self.runtime.platform_image,
                "readinessProbe": {
                    "httpGet": {"path": "/readyz"},
                    "periodSeconds": 5,
                    "timeoutSeconds": 2,
                    "failureThreshold": 3,
                },
                "labels": {**self.labels, GRAPH_LABEL: name, HASH_LABEL: digest},
                "owner": {
                    "apiVersion": INFERENCE_GRAPH.api_version,
                    "kind": INFERENCE_GRAPH.kind,
                    "name": name,
                    "uid": meta.get("uid"),
                },
                **_workload_shape(spec),
                "files": {GRAPH_FILE: config},
            }
        )

    def _status(
        self,
        graph: dict[str, Any],
        ready: bool,
        reason: str,
        message: str,
        serving: list[WorkloadStatus],
    ) -> dict[str, Any]:
        meta = graph["metadata"]
        old = graph.get("status") or {}
        status: dict[str, Any] = {
            "url": f"{self.gateway_url}/graphs/{meta['namespace']}/{meta['name']}",
            "conditions": [condition(old, "Ready", ready, message, reason)],
            "observedGeneration": meta.get("generation"),
        }
        endpoints = [w.endpoint for w in serving if w.endpoint]
        if endpoints:
            # Where the gateway sends the graph's requests (opaque runtime URLs), spread
            # evenly over ``endpoints`` when more than one router serves.
            status["endpoint"] = endpoints[0]
        if len(endpoints) > 1:
            status["endpoints"] = endpoints
        return status

    async def _failure_of(self, workload: WorkloadStatus) -> str | None:
        if workload.ready or not (workload.phase == Phase.FAILED or workload.restart_count > 0):
            return None
        detail = workload.message or workload.reason or "the router exited"
        try:
            lines = [
                line async for line in self.runtime.logs(workload.namespace, workload.name, tail=20)
            ]
        except Exception:  # noqa: BLE001 - the log is a courtesy; the failure stands
            lines = []
        errors = [line for line in lines if " ERROR " in line]
        return f"{detail}: {errors[-1]}" if errors else detail

    def _poll_again(self, namespace: str, name: str, *, settled: bool, failed: bool) -> None:
        key = (namespace, name)
        if settled:
            self._polls.forget(key)
            return
        delay = self._polls.next(key, failed)
        asyncio.get_running_loop().call_later(delay, self.enqueue, INFERENCE_GRAPH, namespace, name)
