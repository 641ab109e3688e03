"""KServe's ``serving.kserve.io/v1alpha1`` InferenceGraph: the kind and its validation.

Field names and rules follow KServe's (pkg/apis/serving/v1alpha1/inference_graph.go and
its validation webhook): ``spec.nodes`` maps node names to routers (``routerType``
Sequence, Switch, Ensemble or Splitter, and ``steps``); a node named ``root`` is where a
request enters; each step targets exactly one of ``nodeName``, ``serviceName`` or
``serviceUrl``. Beyond KServe's webhook, the checks here refuse what would only fail at
request time: a ``nodeName`` that is not a node, nodes that call each other in a cycle, a
``condition`` outside the supported GJSON subset (services/common/gjson.py), a
``data`` other than ``$request``/``$response``, and a ``serviceUrl`` that does not name an
InferenceService of the graph's own namespace (a graph never reaches another namespace's).

Scaling: ``minReplicas`` routers (default 1) serve a graph, each an asyncio server that only
forwards; the gateway spreads a graph's requests evenly over the ready ones in its status.
0 (scale to zero) is refused (422, FieldValueNotSupported) rather than accepted and not done:
the gateway holds requests for activation for InferenceServices only. ``maxReplicas`` is
checked against ``minReplicas`` as a predictor's is; ``scaleTarget``/``scaleMetric`` would
steer autoscaling between the two, which graphs do not do here: ``minReplicas`` routers run
(accepted, as KServe manifests set them). ``resources`` and the placement fields shape each
router workload, and ``timeout`` bounds each request in the router (graph_controller.py,
router/engine.py).

How a graph runs: services/serving/graph_controller.py (its router workload) and
services/serving/router/ (the routing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from services.common import catalog, gjson
from services.common.errors import Cause
from services.common.resources import ResourceKind
from services.common.resources.kinds import Spec
from services.common.runtime.models import ResourceRequirements

#: KServe's graph name rule (GraphNameFmt): a DNS label that starts with a letter.
GRAPH_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ROOT = "root"
MAX_NODES = 64
MAX_STEPS = 64


class InferenceStep(Spec):
    """One step of a node: its target, what it is sent, when and how much it counts."""

    name: str | None = Field(None, max_length=253)
    node_name: str | None = Field(None, alias="nodeName", max_length=253)
    service_name: str | None = Field(None, alias="serviceName", max_length=253)
    service_url: str | None = Field(None, alias="serviceUrl", max_length=2048)
    data: str | None = Field(None, max_length=64)
    map_predictions_to_instances: bool | None = Field(None, alias="mapPredictionsToInstances")
    weight: int | None = Field(None, ge=0, le=100)
    condition: str | None = Field(None, max_length=gjson.MAX_PATH)
    dependency: Literal["Soft", "Hard"] | None = None


class InferenceRouter(Spec):
    router_type: Literal["Sequence", "Splitter", "Ensemble", "Switch"] = Field(alias="routerType")
    steps: list[InferenceStep] | None = Field(None, max_length=MAX_STEPS)


class RouterTimeouts(Spec):
    """KServe's InfereceGraphRouterTimeouts (seconds); ``serviceClient`` bounds each step."""

    server_read: int | None = Field(None, alias="serverRead", ge=1)
    server_write: int | None = Field(None, alias="serverWrite", ge=1)
    server_idle: int | None = Field(None, alias="serverIdle", ge=1)
    service_client: int | None = Field(None, alias="serviceClient", ge=1, le=3600)


class InferenceGraphSpec(Spec):
    nodes: dict[str, InferenceRouter] = Field(max_length=MAX_NODES)
    resources: ResourceRequirements | None = None
    affinity: dict[str, Any] | None = None
    timeout: int | None = Field(None, ge=1, le=3600)
    router_timeouts: RouterTimeouts | None = Field(None, alias="routerTimeouts")
    min_replicas: int | None = Field(None, alias="minReplicas", ge=0)
    max_replicas: int | None = Field(None, alias="maxReplicas", ge=0)
    scale_target: int | None = Field(None, alias="scaleTarget", ge=1)
    scale_metric: Literal["cpu", "memory", "concurrency", "rps"] | None = Field(
        None, alias="scaleMetric"
    )
    tolerations: list[dict[str, Any]] | None = None
    node_selector: dict[str, str] | None = Field(None, alias="nodeSelector")
    node_name: str | None = Field(None, alias="nodeName")
    service_account_name: str | None = Field(None, alias="serviceAccountName")


def validate_inference_graph(obj: dict[str, Any]) -> Sequence[Cause]:
    """KServe's webhook checks and the ones that keep a graph from failing at request time,
    each with its field path (the spec model checked the shapes)."""
    causes: list[Cause] = []
    meta = obj.get("metadata") or {}
    name, namespace = meta.get("name") or "", meta.get("namespace") or ""
    if name and not GRAPH_NAME.match(name):
        causes.append(
            Cause(
                "metadata.name",
                "an InferenceGraph name must consist of lower case alphanumeric characters "
                "or '-', and start with a letter (regex '[a-z]([-a-z0-9]*[a-z0-9])?')",
            )
        )
    nodes: dict[str, Any] = (obj.get("spec") or {}).get("nodes") or {}
    if ROOT not in nodes:
        causes.append(
            Cause(
                "spec.nodes",
                "root node not found: an InferenceGraph needs a node named 'root', where "
                "requests enter",
                "FieldValueRequired",
            )
        )
    for node_name, node in nodes.items():
        causes += _node_causes(f"spec.nodes.{node_name}", node, nodes, namespace)
    causes += _cycle_causes(nodes)
    causes += _scaling_causes(obj.get("spec") or {})
    return causes


def _scaling_causes(spec: dict[str, Any]) -> list[Cause]:
    """Scale to zero, which graphs cannot do (see the module docstring), and ``maxReplicas``
    below ``minReplicas`` (0 or unset: no ceiling, as for a predictor)."""
    causes: list[Cause] = []
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    if low == 0:
        causes.append(
            Cause(
                "spec.minReplicas",
                "an InferenceGraph's router does not scale to zero here: the gateway holds "
                "requests until a server starts only for an InferenceService (set "
                "minReplicas: 0 on the predictors the graph calls; they scale from zero "
                "when the router calls them)",
                "FieldValueNotSupported",
            )
        )
    floor = 1 if low is None else low
    if high not in (None, 0) and high < floor:
        causes.append(Cause("spec.maxReplicas", f"must be >= minReplicas ({floor}), got {high}"))
    return causes


def _node_causes(
    path: str, node: dict[str, Any], nodes: dict[str, Any], namespace: str
) -> list[Cause]:
    steps: list[dict[str, Any]] = node.get("steps") or []
    if not steps:
        return [Cause(f"{path}.steps", "a node needs at least one step", "FieldValueRequired")]
    causes: list[Cause] = []
    seen: set[str] = set()
    for i, step in enumerate(steps):
        at = f"{path}.steps[{i}]"
        if step.get("name"):
            if step["name"] in seen:
                causes.append(
                    Cause(
                        f"{at}.name", f"duplicate step name {step['name']!r}", "FieldValueDuplicate"
                    )
                )
            seen.add(step["name"])
        causes += _step_causes(at, step, nodes, namespace)
    if node.get("routerType") == "Splitter":
        causes += _weight_causes(path, steps)
    return causes


def _step_causes(
    at: str, step: dict[str, Any], nodes: dict[str, Any], namespace: str
) -> list[Cause]:
    causes: list[Cause] = []
    targets = [k for k in ("nodeName", "serviceName", "serviceUrl") if step.get(k)]
    if len(targets) != 1:
        causes.append(
            Cause(
                at,
                "exactly one of nodeName, serviceName or serviceUrl must be specified "
                f"(got {', '.join(targets) or 'none'})",
                "FieldValueRequired" if not targets else "FieldValueInvalid",
            )
        )
    if step.get("nodeName") and step["nodeName"] not in nodes:
        causes.append(
            Cause(f"{at}.nodeName", f"no node named {step['nodeName']!r}", "FieldValueNotFound")
        )
    if step.get("serviceName") and not _DNS_LABEL.match(step["serviceName"]):
        causes.append(Cause(f"{at}.serviceName", "must be an InferenceService's name"))
    if step.get("serviceUrl"):
        problem = service_url_problem(step["serviceUrl"], namespace)
        if problem is not None:
            causes.append(Cause(f"{at}.serviceUrl", problem[0], problem[1]))
    if step.get("data") not in (None, "$request", "$response"):
        causes.append(
            Cause(f"{at}.data", "must be $request or $response", "FieldValueNotSupported")
        )
    if step.get("condition"):
        try:
            gjson.compile_path(step["condition"])
        except gjson.PathError as exc:
            causes.append(Cause(f"{at}.condition", f"not a supported GJSON path: {exc}"))
    return causes


def _weight_causes(path: str, steps: list[dict[str, Any]]) -> list[Cause]:
    causes = [
        Cause(
            f"{path}.steps[{i}].weight",
            "a Splitter's steps each need a weight",
            "FieldValueRequired",
        )
        for i, step in enumerate(steps)
        if step.get("weight") is None
    ]
    total = sum(int(step.get("weight") or 0) for step in steps)
    if not causes and total != 100:
        causes.append(
            Cause(
                f"{path}.steps", f"the weights of a Splitter's steps must sum to 100, got {total}"
            )
        )
    return causes


def _cycle_causes(nodes: dict[str, Any]) -> list[Cause]:
    """A node that reaches itself through ``nodeName`` steps (KServe would recurse forever)."""
    causes: list[Cause] = []
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        for i, step in enumerate((nodes.get(name) or {}).get("steps") or []):
            target = step.get("nodeName")
            if not target or target not in nodes or target in done:
                continue
            if target in trail:
                loop = " -> ".join([*trail[trail.index(target) :], target])
                causes.append(
                    Cause(f"spec.nodes.{name}.steps[{i}].nodeName", f"nodes form a cycle: {loop}")
                )
                continue
            visit(target, [*trail, target])
        done.add(name)

    for name in nodes:
        if name not in done:
            visit(name, [name])
    return causes


def service_url_problem(url: str, namespace: str) -> tuple[str, str] | None:
    """Why ``url`` does not name an InferenceService of ``namespace`` (message, reason)."""
    found = service_url_target(url)
    if found is None:
        return (
            "must name an InferenceService of this namespace: "
            f"http://<name>.{namespace}.<domain>/<path> (KServe's host form) or "
            f"<gateway>/serving/{namespace}/<name>/<path>",
            "FieldValueInvalid",
        )
    if found[0] != namespace:
        return (
            f"names namespace {found[0]!r}: a graph calls only the InferenceServices of its "
            f"own namespace ({namespace!r})",
            "FieldValueForbidden",
        )
    return None


def service_url_target(url: str) -> tuple[str, str, str] | None:
    """(namespace, InferenceService, path below it) that a step's ``serviceUrl`` names, from
    KServe's host form ``http://{name}[-predictor].{namespace}.{domain}/path`` or the
    gateway's path form ``.../serving/{namespace}/{name}/path``; None for anything else."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    segments = parts.path.split("/")
    if len(segments) >= 4 and segments[1] == "serving":
        namespace, name = segments[2], segments[3]
        rest = "/" + "/".join(segments[4:]) if len(segments) > 4 else ""
        if _DNS_LABEL.match(namespace) and _DNS_LABEL.match(name):
            return namespace, name, rest + (f"?{parts.query}" if parts.query else "")
        return None
    labels = parts.hostname.split(".")
    # {name}.{namespace}.{domain}: a name starts with a letter, and an address is no host.
    if len(labels) < 3 or not GRAPH_NAME.match(labels[0]) or not _DNS_LABEL.match(labels[1]):
        return None
    if labels[-1].isdigit():
        return None
    name = labels[0].removesuffix("-predictor")
    return labels[1], name, tail


INFERENCE_GRAPH = ResourceKind(
    **catalog.INFERENCE_GRAPH.resource_kind_fields(),
    spec_model=InferenceGraphSpec,
    finalizer="inferencegraph.finalizers",
    validate=validate_inference_graph,
)
