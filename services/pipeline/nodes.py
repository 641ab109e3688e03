"""Workflow status nodes, shaped like Argo's ``status.nodes`` entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

FINISHED = frozenset({"Succeeded", "Failed", "Error", "Skipped", "Omitted"})
FAILED = frozenset({"Failed", "Error"})
#: shipyard's own field of a Pod node whose workload is made but waits for room under its
#: namespace's quota: the node is ``Pending`` with the quota's message meanwhile, as Argo shows a
#: pod the API server refused for quota.
WAITING = "waitingForQuota"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def fnv32a(text: str) -> int:
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def node_id(workflow_name: str, node_name: str) -> str:
    """Argo's node id: the workflow name and a hash of the node name (the root is the name)."""
    if node_name == workflow_name:
        return workflow_name
    return f"{workflow_name}-{fnv32a(node_name)}"


def new_node(
    workflow_name: str,
    name: str,
    display: str,
    type_: str,
    template: str | None,
    boundary: str | None,
    phase: str = "Pending",
    scope: str = "local",
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": node_id(workflow_name, name),
        "name": name,
        "displayName": display,
        "type": type_,
        "phase": phase,
        "startedAt": now_iso(),
        "templateScope": scope,
    }
    if template:
        node["templateName"] = template
    if boundary:
        node["boundaryID"] = boundary
    return node


def finish(node: dict[str, Any], phase: str, message: str | None = None) -> None:
    node["phase"] = phase
    node.pop(WAITING, None)
    node["finishedAt"] = now_iso()
    if message:
        node["message"] = message
    elif phase == "Succeeded":
        node.pop("message", None)


def has_workload(node: dict[str, Any]) -> bool:
    """A Pod node whose workload is made and unfinished: Running, or Pending for quota room."""
    phase = node["phase"]
    return node["type"] == "Pod" and (
        phase == "Running" or (phase == "Pending" and WAITING in node)
    )


def show_waiting(node: dict[str, Any], message: str | None) -> None:
    """An unfinished Pod node, made: ``Pending`` with ``message`` while its workload waits for
    quota room, ``Running`` (the message gone) once it has started."""
    if message:
        node.update({"phase": "Pending", "message": message, WAITING: True})
    elif node.pop(WAITING, None):
        node["phase"] = "Running"
        node.pop("message", None)


def is_finished(node: dict[str, Any] | None) -> bool:
    return node is not None and node.get("phase") in FINISHED


def add_child(parent: dict[str, Any], child_id: str) -> None:
    children = parent.setdefault("children", [])
    if child_id not in children:
        children.append(child_id)


def param_list(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def param_dict(params: list[dict[str, Any]] | None) -> dict[str, str]:
    return {p["name"]: p.get("value", "") for p in params or [] if "name" in p}
