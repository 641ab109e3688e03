"""A Pod, as the API server reports it, read as a :class:`WorkloadStatus`.

The words follow the local runtime's, so callers see one vocabulary: ``Completed``,
``Error`` (with "command exited with code N; last output: ..."; the output is the
container's termination message, which ``FallbackToLogsOnError`` fills with the end of its
log), ``OOMKilled``, ``DeadlineExceeded``, ``CrashLoopBackOff``, ``Stopped`` (stop_all), and
the reasons of a pod held back at apply (``PersistentVolumeClaimNotFound``...), and for an
init container that failed ``InitError`` (the pod failed) or ``InitCrashLoopBackOff`` (it is
retried), with "init step 'NAME' exited with code N; last output: ...".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from services.common.timestamps import parse_time

from .k8s_manifests import (
    BACKOFF_ANNOTATION,
    CONTAINER,
    FAILED_MESSAGE_ANNOTATION,
    FAILED_REASON_ANNOTATION,
    STOPPED_ANNOTATION,
    workload_record,
)
from .models import Phase, WorkloadStatus

#: (namespace, service, port) -> the endpoint URL of a ready server.
EndpointFor = Callable[[str, str, int], str]
STOPPED_MESSAGE = "stopped by the runtime (delete or orderly shutdown)"


def service_endpoint(namespace: str, service: str, port: int) -> str:
    """The Service's cluster DNS name: what the gateway, in the cluster, connects to."""
    return f"http://{service}.{namespace}.svc:{port}"


def container_status(pod: Mapping[str, Any]) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            return dict(cs)
    return {}


def failing_init(pod: Mapping[str, Any]) -> tuple[str, int, str, int] | None:
    """The init container that failed last, if one did: (name, exit code, the end of its
    output, its restarts). A pod whose init steps all succeeded has none."""
    for cs in (pod.get("status") or {}).get("initContainerStatuses") or []:
        state = cs.get("state") or {}
        terminated = state.get("terminated") or {}
        if not terminated and "waiting" in state:
            terminated = (cs.get("lastState") or {}).get("terminated") or {}
        code = terminated.get("exitCode")
        if code not in (None, 0):
            tail = str(terminated.get("message") or "").strip()
            return str(cs.get("name")), int(code), tail, int(cs.get("restartCount") or 0)
    return None


def _init_message(name: str, code: int, tail: str) -> str:
    """The local runtime's words for a failed init step."""
    return f"init step {name!r} exited with code {code}" + (
        f"; last output: {tail}" if tail else ""
    )


def _condition(pod: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def is_finished(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def over_backoff_limit(pod: Mapping[str, Any]) -> bool:
    """A running job that restarted more often than its backoffLimit, not yet ended for it."""
    limit = workload_record(pod).get("backoffLimit")
    annotations = pod.get("metadata", {}).get("annotations") or {}
    restarts = int(container_status(pod).get("restartCount") or 0)
    return (
        limit is not None
        and restarts > int(limit)
        and not is_finished(pod)
        and not annotations.get(BACKOFF_ANNOTATION)
        and not pod.get("metadata", {}).get("deletionTimestamp")
    )


def _failed_words(pod: Mapping[str, Any], terminated: Mapping[str, Any]) -> tuple[str, str]:
    status = pod.get("status") or {}
    annotations = pod.get("metadata", {}).get("annotations") or {}
    code = terminated.get("exitCode")
    if annotations.get(STOPPED_ANNOTATION):
        return "Stopped", STOPPED_MESSAGE
    if annotations.get(BACKOFF_ANNOTATION):
        limit = workload_record(pod).get("backoffLimit")
        return "BackoffLimitExceeded", (
            f"the workload failed more than its backoffLimit ({limit}) allows; "
            f"last exit code {code}"
        )
    if status.get("reason") == "DeadlineExceeded":
        seconds = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        return "DeadlineExceeded", (
            f"workload was active longer than its deadline (activeDeadlineSeconds={seconds}) "
            "and was killed"
        )
    if status.get("reason"):  # Evicted, NodeLost...
        return str(status["reason"]), str(status.get("message") or "")
    init = failing_init(pod)
    if init is not None and not terminated:  # the command never ran
        return "InitError", _init_message(*init[:3])
    tail = str(terminated.get("message") or "").strip()
    message = f"command exited with code {code}" + (f"; last output: {tail}" if tail else "")
    if terminated.get("reason") == "OOMKilled":
        return "OOMKilled", (
            "the workload used more memory than resources.limits.memory; " + message
        )
    return "Error", message


def _pending_words(pod: Mapping[str, Any], cs: Mapping[str, Any]) -> tuple[str | None, str | None]:
    init = failing_init(pod)
    if init is not None:  # retried with back-off (restartPolicy OnFailure or Always)
        return "InitCrashLoopBackOff", f"back-off restarting: {_init_message(*init[:3])}"
    waiting = (cs.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
        return waiting["reason"], waiting.get("message")
    scheduled = _condition(pod, "PodScheduled")
    if scheduled.get("status") == "False":
        return scheduled.get("reason") or "Unschedulable", scheduled.get("message")
    return None, None


def workload_status(
    pod: Mapping[str, Any], endpoint_for: EndpointFor = service_endpoint
) -> WorkloadStatus:
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    record = workload_record(pod)
    status = pod.get("status") or {}
    cs = container_status(pod)
    state = cs.get("state") or {}
    # A container stopped while it waited to restart reports its last run's end.
    terminated = state.get("terminated") or (cs.get("lastState") or {}).get("terminated") or {}
    init = failing_init(pod)
    init_restarts = sum(
        int(c.get("restartCount") or 0) for c in status.get("initContainerStatuses") or []
    )
    common: dict[str, Any] = {
        "namespace": meta["namespace"],
        "name": meta["name"],
        "kind": record.get("kind", "job"),
        "image": record.get("image"),
        "labels": record.get("labels") or {},
        "owner": record.get("owner"),
        # An init step retried counts as a restart, as it does locally.
        "restart_count": int(cs.get("restartCount") or 0) + init_restarts,
    }
    created = parse_time(meta.get("creationTimestamp"))
    if annotations.get(FAILED_REASON_ANNOTATION):
        return WorkloadStatus(
            **common,
            phase=Phase.FAILED,
            reason=annotations[FAILED_REASON_ANNOTATION],
            message=annotations.get(FAILED_MESSAGE_ANNOTATION),
            finish_time=created,
        )
    phase_name = status.get("phase") or "Pending"
    phase = Phase(phase_name) if phase_name in {p.value for p in Phase} else Phase.PENDING
    start = parse_time(status.get("startTime")) or parse_time(
        (state.get("running") or {}).get("startedAt")
    )
    if phase.finished:
        if phase == Phase.SUCCEEDED:
            reason, message = "Completed", None
        else:
            reason, message = _failed_words(pod, terminated)
        finish = parse_time(terminated.get("finishedAt")) or _last_transition(pod) or start
        if start is not None and finish is not None and finish < start:
            finish = start
        code = terminated.get("exitCode")
        if code is None and init is not None:
            code = init[1]
        if code is None and phase == Phase.FAILED:
            code = 137  # killed before the container reported (a deadline, an eviction)
        return WorkloadStatus(
            **common,
            phase=phase,
            exit_code=0 if phase == Phase.SUCCEEDED and code is None else code,
            start_time=start or finish,
            finish_time=finish,
            reason=reason,
            message=message,
        )
    if annotations.get(STOPPED_ANNOTATION) and phase == Phase.PENDING and start is None:
        # Stopped before it ever started: nothing runs, nothing will (its deadline is due).
        return WorkloadStatus(
            **common, phase=Phase.FAILED, reason="Stopped", message=STOPPED_MESSAGE
        )
    waiting_reason, waiting_message = _pending_words(pod, cs)
    ready = phase == Phase.RUNNING and _condition(pod, "Ready").get("status") == "True"
    endpoint = None
    if ready and record.get("kind") == "server" and record.get("service"):
        endpoint = endpoint_for(meta["namespace"], record["service"], int(record["port"]))
    return WorkloadStatus(
        **common,
        phase=phase,
        ready=ready,
        start_time=start,
        reason=waiting_reason,
        message=waiting_message,
        endpoint=endpoint,
    )


def _last_transition(pod: Mapping[str, Any]) -> datetime | None:
    times = [
        parse_time(c.get("lastTransitionTime"))
        for c in (pod.get("status") or {}).get("conditions") or []
    ]
    found = [t for t in times if t is not None]
    return max(found) if found else None
