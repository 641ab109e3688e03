"""What the Jupyter web app shows of a Notebook: its status phase, list row, events and pod.

``process_status`` follows Kubeflow's ``apps/common/status.py`` step by step (no status yet,
stopped, deleting, ready, the container state, the conditions, the warning events), so a list
shows ``ready``, ``waiting``, ``warning``, ``terminating`` or ``stopped`` with its message.

Shipyard keeps no Kubernetes Event objects: the events of a Notebook are derived from its
status (each condition, and the container's waiting or terminated state, as the Event the
StatefulSet or kubelet would have recorded). The pod is a pod-shaped view of the notebook
server's workload in the runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from services.common.runtime import Phase, WorkloadStatus
from services.common.timestamps import parse_time
from services.notebook.workload import NAME_LABEL, apply_pod_defaults, pod_labels

STOP_ANNOTATION = "kubeflow-resource-stopped"
LAST_ACTIVITY_ANNOTATION = "notebooks.kubeflow.org/last-activity"
SERVER_TYPE_ANNOTATION = "notebooks.kubeflow.org/server-type"
NO_STATUS_GRACE_SECONDS = 10  # Kubeflow's "waiting" before a missing status is a warning


def create_status(phase: str, message: str) -> dict[str, str]:
    return {"phase": phase, "message": message, "state": ""}


def process_status(notebook: Mapping[str, Any], now: datetime | None = None) -> dict[str, str]:
    """Kubeflow's status phase and message of a Notebook (see the module doc)."""
    meta = notebook.get("metadata") or {}
    status = notebook.get("status") or {}
    annotations = meta.get("annotations") or {}
    ready = status.get("readyReplicas", 0)
    container_state = status.get("containerState") or {}
    conditions = status.get("conditions") or []
    created = parse_time(meta.get("creationTimestamp"))
    now = now or datetime.now(UTC)
    if (
        not container_state
        and not conditions
        and created is not None
        and (now - created).total_seconds() <= NO_STATUS_GRACE_SECONDS
        and STOP_ANNOTATION not in annotations
    ):
        return create_status("waiting", "Waiting for StatefulSet to create the underlying Pod.")
    if STOP_ANNOTATION in annotations:
        if ready == 0:
            return create_status(
                "stopped", "No Pods are currently running for this Notebook Server."
            )
        return create_status("waiting", "Notebook Server is stopping.")
    if meta.get("deletionTimestamp"):
        return create_status("terminating", "Deleting this Notebook Server.")
    if ready == 1:
        return create_status("ready", "Running")
    waiting = container_state.get("waiting")
    if isinstance(waiting, dict):
        reason = waiting.get("reason") or "Undefined"
        if reason in ("PodInitializing", "ContainerCreating"):
            return create_status("waiting", reason)
        message = waiting.get("message") or "No available message for container state."
        return create_status("warning", f"{reason}: {message}")
    for cond in conditions:
        if cond.get("status") == "True":
            continue
        if cond.get("reason"):
            message = cond.get("message") or ""
            if cond["reason"] == "ContainersNotReady":
                return create_status("waiting", f"{cond['reason']}: {message}")
            return create_status("warning", f"{cond['reason']}: {message}")
    for event in reversed(events_of(notebook)):
        if event["type"] == "Warning":
            return create_status("warning", event["message"])
    return create_status(
        "warning", "Couldn't find any information for the status of this notebook."
    )


def process_gpus(container: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The GPUs a notebook asks for: their count and "1 NVIDIA, 2 AMD"."""
    vendors = (config.get("gpus") or {}).get("value", {}).get("vendors", [])
    names = {v["limitsKey"]: v.get("uiName", v["limitsKey"]) for v in vendors if "limitsKey" in v}
    limits = (container.get("resources") or {}).get("limits") or {}
    count, parts = 0, []
    for key, ui_name in names.items():
        if key in limits:
            try:
                n = int(limits[key])
            except (TypeError, ValueError):
                continue
            count += n
            parts.append(f"{n} {ui_name}")
    return {"count": count, "message": ", ".join(parts)}


def notebook_row(notebook: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the notebooks list, as Kubeflow's ``notebook_dict_from_k8s_obj``."""
    meta = notebook.get("metadata") or {}
    pod = ((notebook.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or [{}]
    container = containers[0] if isinstance(containers[0], dict) else {}
    requests = (container.get("resources") or {}).get("requests") or {}
    image = str(container.get("image") or "")
    annotations = meta.get("annotations") or {}
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "serverType": annotations.get(SERVER_TYPE_ANNOTATION),
        "age": meta.get("creationTimestamp"),
        "last_activity": annotations.get(LAST_ACTIVITY_ANNOTATION, ""),
        "image": image,
        "shortImage": image.split("/")[-1],
        "cpu": requests.get("cpu"),
        "gpus": process_gpus(container, config),
        "memory": requests.get("memory"),
        "volumes": [m.get("name") for m in container.get("volumeMounts") or []],
        "status": process_status(notebook),
        "metadata": meta,
    }


def _event(
    notebook: Mapping[str, Any], kind: str, reason: str, message: str, when: str | None, n: int
) -> dict[str, Any]:
    meta = notebook.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name')}.{n}",
            "namespace": meta.get("namespace"),
            "creationTimestamp": when,
        },
        "involvedObject": {
            "apiVersion": notebook.get("apiVersion", "kubeflow.org/v1"),
            "kind": "Notebook",
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message,
        "source": {"component": "notebook-controller"},
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }


def events_of(notebook: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Notebook's events, derived from its status (oldest first; see the module doc)."""
    meta = notebook.get("metadata") or {}
    status = notebook.get("status") or {}
    created = meta.get("creationTimestamp")
    events = [_event(notebook, "Normal", "Created", "Notebook created", created, 0)]
    for cond in status.get("conditions") or []:
        ok = cond.get("status") == "True" or cond.get("reason") in (
            "ContainerCreating",
            "ContainersNotReady",
            "Stopped",
        )
        events.append(
            _event(
                notebook,
                "Normal" if ok else "Warning",
                str(cond.get("reason") or cond.get("type") or ""),
                str(cond.get("message") or cond.get("reason") or ""),
                cond.get("lastTransitionTime") or created,
                len(events),
            )
        )
    terminated = (status.get("containerState") or {}).get("terminated")
    if isinstance(terminated, dict):
        events.append(
            _event(
                notebook,
                "Warning",
                str(terminated.get("reason") or "Error"),
                f"the server exited with code {terminated.get('exitCode')}: "
                f"{terminated.get('message') or ''}".rstrip(": "),
                terminated.get("finishedAt") or created,
                len(events),
            )
        )
    return events


def _time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


_POD_PHASE = {
    Phase.PENDING: "Pending",
    Phase.RUNNING: "Running",
    Phase.SUCCEEDED: "Succeeded",
    Phase.FAILED: "Failed",
}


def pod_view(
    notebook: Mapping[str, Any], wl: WorkloadStatus, pod_defaults: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """A Pod (core/v1 shape) for the notebook server's workload: its labels and annotations
    (the PodDefaults' included), its container with the image and resources, and a status
    from the runtime (phase, readiness, container state, restarts)."""
    meta = notebook.get("metadata") or {}
    merged, pd_labels, pd_annotations = apply_pod_defaults(dict(notebook), pod_defaults)
    pod_spec = ((merged.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = [c for c in pod_spec.get("containers") or [] if isinstance(c, dict)]
    name = str(meta.get("name"))
    if wl.phase == Phase.RUNNING:
        state: dict[str, Any] = {"running": {"startedAt": _time(wl.start_time)}}
    elif wl.finished:
        state = {
            "terminated": {
                "exitCode": wl.exit_code,
                "reason": wl.reason or "Error",
                "message": wl.message or "",
                "finishedAt": _time(wl.finish_time),
            }
        }
    else:
        state = {"waiting": {"reason": wl.reason or "ContainerCreating"}}
    ready = "True" if wl.ready else "False"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-0",  # the StatefulSet's one pod, as Kubeflow names it
            "namespace": meta.get("namespace"),
            "labels": {**pod_labels(notebook), **pd_labels, NAME_LABEL: name},
            "annotations": pd_annotations,
            "creationTimestamp": _time(wl.start_time),
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "controller": True}
            ],
        },
        "spec": {
            "containers": containers,
            "volumes": pod_spec.get("volumes") or [],
            "tolerations": pod_spec.get("tolerations") or [],
            "serviceAccountName": pod_spec.get("serviceAccountName"),
        },
        "status": {
            "phase": _POD_PHASE.get(wl.phase, "Unknown"),
            "conditions": [
                {"type": "Ready", "status": ready},
                {"type": "ContainersReady", "status": ready},
            ],
            "startTime": _time(wl.start_time),
            "containerStatuses": [
                {
                    "name": containers[0].get("name", name) if containers else name,
                    "image": wl.image,
                    "ready": wl.ready,
                    "restartCount": wl.restart_count,
                    "state": state,
                }
            ],
        },
    }
