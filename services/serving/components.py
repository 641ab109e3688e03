"""An InferenceService's transformer and explainer: workloads beside the predictor, with
KServe's contract.

KServe runs ``spec.transformer`` (and ``spec.explainer``) as a component of its own whose
container gets ``--model_name {isvc}``, ``--predictor_host {isvc}-predictor.{ns}`` and
``--http_port`` unless its args name them; the InferenceService's URL then leads to the
transformer, which pre-processes, calls the predictor at that host (``/v1/models/{name}:predict``
or ``/v2/models/{name}/infer``) and post-processes. Here:

- each component runs server workloads: ``isvc-{name}-transformer`` (``-explainer``), then
  ``-transformer-1``, ``-transformer-2``..., labelled with their component and a hash of what
  they run; a changed spec replaces them, a changed count starts or stops only the difference
  (the scaling fields are not in the hash), and a replica no longer counted leaves the status
  first and is deleted ``drain_seconds`` later, as the predictor's. A transformer carries every
  request of the InferenceService, so it autoscales on the load the gateway reports, as the
  predictor does (``services.serving.autoscale``: between ``minReplicas`` and
  ``maxReplicas``, by ``scaleMetric`` and ``scaleTarget``); an explainer serves only
  ``:explain``, which that load does not single out, so ``minReplicas`` of it run;
- the predictor is reached through the gateway, as every workload reaches any other: its
  data plane moves to ``/serving/{ns}/{name}-predictor`` while a transformer fronts it (the
  gateway routes ``/serving/{ns}/{name}`` to the transformer), so ``--predictor_host`` and
  ``PREDICTOR_HOST`` are the gateway's address as the workload sees it plus that path, which
  KServe's ``http://{predictor_host}/v1/models/...`` URLs extend unchanged. Through the gateway
  the call needs the workload's token in oidc mode (its service-account token file, as every
  in-cluster client sends); in single-user mode none;
- the status gets ``components.transformer`` (``explainer``) with its URL and endpoint (and
  ``endpoints``, every replica's, when there are more than one: the gateway spreads the
  transformer's traffic over them), and ``TransformerReady`` (``ExplainerReady``) conditions
  that ``Ready`` waits for, as KServe's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from services.common.runtime import Phase, Runtime, WorkloadSpec, WorkloadStatus, placement
from services.serving.autoscale import Load, desired_replicas
from services.serving.isvc_status import condition
from services.serving.revisions import predictor_hash

log = logging.getLogger(__name__)

COMPONENTS = ("transformer", "explainer")
COMPONENT_LABEL = "serving.shipyard.io/component"
COMPONENT_HASH_LABEL = "serving.shipyard.io/component-hash"
_CONDITIONS = {"transformer": "TransformerReady", "explainer": "ExplainerReady"}


def data_plane_prefix(isvc: dict[str, Any]) -> str:
    """The path under which the predictor's server is reached: the InferenceService's own,
    or ``{name}-predictor``'s while a transformer takes the InferenceService's."""
    meta = isvc["metadata"]
    suffix = "-predictor" if (isvc.get("spec") or {}).get("transformer") else ""
    return f"/serving/{meta['namespace']}/{meta['name']}{suffix}"


def predictor_digest(isvc: dict[str, Any]) -> str:
    """What makes a new predictor revision: its spec, and whether a transformer fronts it
    (its server then answers under another path)."""
    predictor = isvc["spec"]["predictor"]
    if (isvc.get("spec") or {}).get("transformer"):
        return predictor_hash({**predictor, "frontedByTransformer": True})
    return predictor_hash(predictor)


def split_components(
    owned: list[WorkloadStatus],
) -> tuple[list[WorkloadStatus], list[WorkloadStatus]]:
    """An InferenceService's workloads: (the predictor's revisions, its components')."""
    parts = [w for w in owned if w.labels.get(COMPONENT_LABEL)]
    return [w for w in owned if not w.labels.get(COMPONENT_LABEL)], parts


#: A component's fields that size it rather than say what it runs: not in its hash.
SCALING_FIELDS = ("minReplicas", "maxReplicas", "scaleTarget", "scaleMetric")

#: What reconcile_components found of one component: its replicas, a failure, or None.
ComponentState = list[WorkloadStatus] | str | None


def component_workload_name(name: str, component: str, index: int = 0) -> str:
    """Replica ``index`` of a component; the first keeps the name one replica always had."""
    base = f"isvc-{name}-{component}"
    return base if index == 0 else f"{base}-{index}"


def component_replicas(spec: dict[str, Any], component: str, load: Load) -> int:
    """How many replicas of a component run (the module docstring says why): a transformer's
    by the load, an explainer's ``minReplicas``; at least one (validation refuses 0: only the
    predictor scales to zero)."""
    if component == "transformer":
        return desired_replicas(spec, load)
    return max(1, int(spec.get("minReplicas") or 1))


def predictor_host(runtime: Runtime, gateway_url: str, isvc: dict[str, Any]) -> str:
    """KServe's ``--predictor_host`` here: the gateway as the workload reaches it (the
    runtime says where: ``Runtime.workload_gateway_url``, the ``$SHIPYARD_URL`` its
    workloads get; the service's own ``gateway_url`` where it gives none) and the
    predictor's data-plane path (``{name}-predictor`` while a transformer fronts it, else
    the InferenceService's own)."""
    inside = runtime.workload_gateway_url(isvc["metadata"]["namespace"]) or gateway_url
    return urlsplit(inside).netloc + data_plane_prefix(isvc)


def _includes(args: list[str], flag: str) -> bool:
    """KServe's IncludesArg: ``flag`` given, alone or as ``flag=value``."""
    return any(a == flag or a.startswith(flag + "=") for a in args)


def component_spec(
    isvc: dict[str, Any],
    component: str,
    host: str,
    labels: dict[str, str],
    owner: dict[str, Any],
    index: int = 0,
) -> WorkloadSpec:
    """The workload of one component's replica ``index``, KServe's arguments appended as its
    controller does."""
    meta, spec = isvc["metadata"], isvc["spec"][component]
    ns, name = meta["namespace"], meta["name"]
    container = spec["containers"][0]
    args = list(container.get("args") or [])
    if not _includes(args, "--model_name"):
        args += ["--model_name", name]
    if not _includes(args, "--predictor_host"):
        args += ["--predictor_host", host]
    if not _includes(args, "--http_port"):
        args += ["--http_port", "$(PORT)"]
    env = [
        {"name": "PREDICTOR_HOST", "value": host},
        {"name": "K_SERVICE", "value": f"{name}-{component}"},
        {"name": "SHIPYARD_PATH_PREFIX", "value": f"/serving/{ns}/{name}"},
        *({"name": e["name"], "value": e.get("value") or ""} for e in container.get("env") or []),
    ]
    http_get = (container.get("readinessProbe") or {}).get("httpGet") or {}
    probe = http_get.get("path")
    what_runs = {k: v for k, v in spec.items() if k not in SCALING_FIELDS}
    material = json.dumps([what_runs, host], sort_keys=True).encode()
    return WorkloadSpec.model_validate(
        {
            "kind": "server",
            "namespace": ns,
            "name": component_workload_name(name, component, index),
            "command": container.get("command") or [],
            "args": args,
            "env": env,
            "image": container.get("image"),
            "resources": {k: v for k, v in (container.get("resources") or {}).items() if v},
            "volumes": spec.get("volumes") or [],
            "volumeMounts": container.get("volumeMounts") or [],
            "readinessProbe": {"httpGet": {"path": probe}, "periodSeconds": 5} if probe else None,
            "labels": {
                **labels,
                **(spec.get("labels") or {}),
                COMPONENT_LABEL: component,
                COMPONENT_HASH_LABEL: hashlib.sha256(material).hexdigest()[:16],
            },
            "owner": owner,
            **placement(spec, container),
        }
    )


@dataclass
class Scaling:
    """What sizes the components in one reconcile: the gateway's load on the
    InferenceService, the replicas no longer counted (by workload name: since when, kept
    across reconciles by the caller) and how long they drain."""

    load: Load
    surplus: dict[str, float]
    drain_seconds: float
    #: Set by reconcile_components: seconds until a draining replica is due for deletion.
    again_in: float | None = None

    def drained(self, name: str, now: float) -> bool:
        """Whether the replica ``name``, no longer counted, has drained; else note when."""
        since = self.surplus.setdefault(name, now)
        left = self.drain_seconds - (now - since)
        if left <= 0:
            self.surplus.pop(name, None)
            return True
        self.again_in = min(left, self.again_in or left)
        return False


async def reconcile_components(
    runtime: Runtime,
    gateway_url: str,
    isvc: dict[str, Any],
    owned: list[WorkloadStatus],
    predictor_endpoint: str | None,
    labels: dict[str, str],
    owner: dict[str, Any],
    scaling: Scaling,
) -> dict[str, ComponentState]:
    """Bring the transformer and explainer workloads to the spec: each component's replicas,
    its failure (a str), or None while it waits for the predictor; components the spec leaves
    out are deleted, replicas above its count once drained (``scaling``)."""
    spec = isvc["spec"]
    out: dict[str, ComponentState] = {}
    now = time.monotonic()
    for component in COMPONENTS:
        current = [w for w in owned if w.labels.get(COMPONENT_LABEL) == component]
        if not spec.get(component):
            for w in current:
                await runtime.delete(w.namespace, w.name)
                scaling.surplus.pop(w.name, None)
            continue
        if predictor_endpoint is None:  # the predictor serves first: its host is known then
            out[component] = current or None
            continue
        host = predictor_host(runtime, gateway_url, isvc)
        count = component_replicas(spec[component], component, scaling.load)
        try:
            wanted = [
                component_spec(isvc, component, host, labels, owner, index)
                for index in range(count)
            ]
        except ValueError as exc:
            out[component] = f"spec.{component}: {exc}"
            continue
        by_name = {w.name: w for w in current}
        replicas: list[WorkloadStatus] = []
        for desired in wanted:
            running = by_name.get(desired.name)
            scaling.surplus.pop(desired.name, None)
            digest = desired.labels[COMPONENT_HASH_LABEL]
            if running is not None and running.labels.get(COMPONENT_HASH_LABEL) == digest:
                replicas.append(running)
                continue
            if running is not None:
                await runtime.delete(running.namespace, running.name)
            replicas.append(await runtime.apply(desired))
            log.info("started %s/%s (%s)", desired.namespace, desired.name, component)
        names = {w.name for w in wanted}
        digest = wanted[0].labels[COMPONENT_HASH_LABEL]
        for w in current:
            if w.name in names:
                continue
            # A replica of this spec above the count drains first: it has left the status
            # (the gateway's routes) and goes once in-flight requests had time to finish.
            same = w.labels.get(COMPONENT_HASH_LABEL) == digest and not w.finished
            if not same or scaling.drained(w.name, now):
                await runtime.delete(w.namespace, w.name)
                scaling.surplus.pop(w.name, None)
        out[component] = replicas
    return out


def components_ready(found: dict[str, ComponentState]) -> bool:
    """Every replica of every component serves."""
    return all(
        isinstance(state, list) and all(w.ready and w.endpoint for w in state)
        for state in found.values()
    )


def with_components(
    status: dict[str, Any],
    old: dict[str, Any],
    isvc: dict[str, Any],
    gateway_url: str,
    found: dict[str, ComponentState],
) -> dict[str, Any]:
    """``status`` (built from ``old``) with ``components.transformer`` / ``explainer`` and
    their conditions; ``Ready`` needs them ready too. A component is ready, and listed with
    its endpoints, as soon as one replica serves: a replica still starting (scaling out) is
    left out until it serves, and neither the component nor the service stops being ready
    meanwhile (nor does the gateway fall back to the predictor). With a transformer, the
    predictor's own URL is its ``-predictor`` path."""
    if not found:
        return status
    meta = isvc["metadata"]
    base = f"{gateway_url.rstrip('/')}/serving/{meta['namespace']}/{meta['name']}"
    status = {**status, "components": dict(status.get("components") or {})}
    conditions = [
        c for c in status.get("conditions") or [] if c["type"] not in _CONDITIONS.values()
    ]
    all_ready = True
    for component, state in found.items():
        endpoints = (
            [w.endpoint for w in state if w.ready and w.endpoint] if isinstance(state, list) else []
        )
        ready = bool(endpoints)
        entry: dict[str, Any] = {"url": base}
        if endpoints:
            entry["endpoint"] = endpoints[0]
            if len(endpoints) > 1:
                entry["endpoints"] = endpoints
        status["components"][component] = entry
        message = _waiting(component, state)
        reason = None if ready else "ComponentNotReady"
        conditions.append(
            condition(old, _CONDITIONS[component], ready, None if ready else message, reason)
        )
        all_ready = all_ready and ready
    if "transformer" in found and "predictor" in status["components"]:
        predictor = dict(status["components"]["predictor"])
        if predictor.get("url"):
            predictor["url"] = base + "-predictor"
        status["components"]["predictor"] = predictor
    if not all_ready:
        why = "a transformer or explainer is not ready"
        not_ready = condition(old, "Ready", False, why, "ComponentNotReady")
        conditions = [
            not_ready if c["type"] == "Ready" and c["status"] == "True" else c for c in conditions
        ]
    status["conditions"] = conditions
    return status


def _waiting(component: str, state: ComponentState) -> str:
    """Why a component is not ready: its spec's problem, a server's exit, or their start."""
    if isinstance(state, str):
        return state
    if not state:
        return f"the {component} starts once the predictor serves"
    failed = [w for w in state if w.phase == Phase.FAILED or w.restart_count > 0]
    if failed:
        w = failed[0]
        why = w.message or w.reason or "its server exited"
        which = f"the {component}" if len(state) == 1 else f"{w.name} (of the {component})"
        return f"{which} is not running: {why} (restarts: {w.restart_count})"
    if len(state) == 1:
        return f"the {component} is starting"
    up = sum(1 for w in state if w.ready and w.endpoint)
    return f"{up} of the {component}'s {len(state)} replicas are ready"
