"""An InferenceService's status as KServe writes it, from the controller's view of its
revisions: conditions, ``components.predictor`` (revisions, traffic, replica counts, the
endpoints the gateway routes to) and ``modelStatus``. Pure functions of what they are given.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from services.common.runtime import WorkloadStatus
from services.common.runtime.quota import EXCEEDED, waiting_for_room
from services.serving.revisions import revision_name
from services.serving.runtimes import CLUSTER_RUNTIME_LABEL, RUNTIME_LABEL


def build_status(
    gateway_url: str,
    isvc: dict[str, Any],
    old: dict[str, Any],
    latest: int | None,
    rolled: int | None,
    previous: str | None,
    by_number: dict[int, WorkloadStatus],
    pct: int | None,
    failure: str | None,
    desired: int = 1,
    standby: bool = False,
    secondaries: dict[tuple[int, int], WorkloadStatus] | None = None,
    pending: str | None = None,
    failure_reason: str | None = None,
) -> dict[str, Any]:
    """KServe's InferenceService status, plus the endpoints the gateway reads.

    ``desired`` 0 withdraws the endpoints (scale to zero); ``standby`` keeps a scaled to
    zero (or re-activating) service Ready with its traffic, as Knative does. ``pending``
    says why the latest spec has no revision yet (its model is downloading): not a
    failure, and a revision already serving keeps serving meanwhile. ``failure_reason`` is
    KServe's FailureReason when the spec itself cannot be served (NoSupportingRuntime...):
    the model's transition is then ``InvalidSpec``, as KServe's.
    """
    meta = isvc["metadata"]
    ns, name = meta["namespace"], meta["name"]
    url = f"{gateway_url}/serving/{ns}/{name}"
    latest_w = by_number.get(latest) if latest is not None else None
    rolled_w = by_number.get(rolled) if rolled is not None else None
    secondaries = secondaries or {}

    def ready_replicas(number: int | None, wanted: int) -> list[str]:
        """Endpoints of the revision's ready replicas below ``wanted`` (0 is always in)."""
        found = [(0, by_number.get(number))] if number is not None else []
        found += sorted((r, w) for (n, r), w in secondaries.items() if n == number and r < wanted)
        return [w.endpoint for _, w in found if w is not None and w.ready and w.endpoint]

    serving = bool(rolled_w and rolled_w.ready and rolled_w.endpoint) and desired > 0
    routable = serving or standby
    split = (
        serving
        and latest is not None
        and rolled != latest
        and pct is not None
        and bool(latest_w and latest_w.ready and latest_w.endpoint)
    )
    predictor: dict[str, Any] = {}
    predictor.update(revision_names(name, old, latest, rolled, previous, by_number))
    # Knative's revision replica counts: 0 actual while scaled to zero.
    predictor["desiredReplicas"] = desired
    predictor["actualReplicas"] = len(ready_replicas(rolled, sys.maxsize))
    predictor["traffic"] = traffic(name, rolled, latest, pct if split else None) if routable else []
    if routable:
        predictor["url"] = url
    if serving:
        assert rolled_w is not None
        predictor["endpoint"] = rolled_w.endpoint
        predictor["endpoints"] = ready_replicas(rolled, desired)
        if split:
            assert latest_w is not None
            predictor["latestEndpoint"] = latest_w.endpoint
            predictor["latestEndpoints"] = ready_replicas(latest, desired)
    pred_ok = routable and failure is None
    pred_msg, reason = predictor_says(failure, pending, latest_w, routable)
    conditions = [
        condition(
            old, "IngressReady", routable, None if routable else "no revision is serving yet"
        ),
        condition(old, "PredictorReady", pred_ok, pred_msg, reason),
        condition(old, "Ready", pred_ok and routable, pred_msg, reason),
    ]
    status: dict[str, Any] = {
        "observedGeneration": meta.get("generation"),
        "conditions": conditions,
        "components": {"predictor": predictor},
        "modelStatus": model_status(
            old,
            latest,
            latest_w,
            rolled_w,
            failure,
            name,
            standby and latest == rolled and pending is None,
            pending is not None,
            failure_reason,
        ),
    }
    status.update(runtime_names(latest_w or rolled_w))
    if status["observedGeneration"] is None:
        del status["observedGeneration"]
    if routable:
        status["url"] = url
        status["address"] = {"url": url}
    return status


def runtime_names(workload: WorkloadStatus | None) -> dict[str, str]:
    """``servingRuntimeName`` or ``clusterServingRuntimeName``: the runtime the latest
    revision runs, as its workload's labels record it (services.serving.runtimes)."""
    labels = workload.labels if workload is not None else {}
    for label, field in (
        (RUNTIME_LABEL, "servingRuntimeName"),
        (CLUSTER_RUNTIME_LABEL, "clusterServingRuntimeName"),
    ):
        if labels.get(label):
            return {field: labels[label]}
    return {}


def revision_names(
    name: str,
    old: dict[str, Any],
    latest: int | None,
    rolled: int | None,
    previous: str | None,
    by_number: dict[int, WorkloadStatus],
) -> dict[str, Any]:
    """``latestCreatedRevision``, ``latestReadyRevision`` (kept from before while none is
    ready), ``latestRolledoutRevision`` and ``previousRolledoutRevision``."""
    names: dict[str, Any] = {}
    if latest is not None:
        names["latestCreatedRevision"] = revision_name(name, latest)
    ready_numbers = [n for n, w in by_number.items() if w.ready]
    if ready_numbers:
        names["latestReadyRevision"] = revision_name(name, max(ready_numbers))
    elif (old.get("components") or {}).get("predictor", {}).get("latestReadyRevision"):
        names["latestReadyRevision"] = old["components"]["predictor"]["latestReadyRevision"]
    if rolled is not None:
        names["latestRolledoutRevision"] = revision_name(name, rolled)
    if previous:
        names["previousRolledoutRevision"] = previous
    return names


def traffic(
    name: str, rolled: int | None, latest: int | None, canary_pct: int | None
) -> list[dict[str, Any]]:
    """The traffic block: all to the rolled-out revision, or split with the latest (a canary
    of ``canary_pct``), tagged ``prev`` and ``latest`` as KServe tags them."""
    if rolled is None:
        return []
    split = canary_pct is not None and latest is not None
    out: list[dict[str, Any]] = [
        {
            "revisionName": revision_name(name, rolled),
            "percent": 100 - int(canary_pct or 0) if split else 100,
            "latestRevision": rolled == latest,
            **({"tag": "prev"} if split else {}),
        }
    ]
    if split and latest is not None:
        out.append(
            {
                "revisionName": revision_name(name, latest),
                "percent": int(canary_pct or 0),
                "latestRevision": True,
                "tag": "latest",
            }
        )
    return out


def predictor_says(
    failure: str | None, pending: str | None, latest: WorkloadStatus | None, routable: bool
) -> tuple[str | None, str | None]:
    """The predictor's condition message and reason. A server over its namespace's quota has
    not started: it waits for room (the runtime's words say how much), and says so instead of
    "starting"."""
    held = waiting_for_room(latest) if latest else None
    message = failure or (None if routable else pending or held or "the model server is starting")
    if failure:
        return message, "RevisionFailed"
    if pending:
        return message, "ModelDownloading"
    return message, EXCEEDED if held and not routable else None


def condition(
    old: dict[str, Any], kind: str, ok: bool, message: str | None, reason: str | None = None
) -> dict[str, Any]:
    value = "True" if ok else "False"
    before: dict[str, Any] = next(
        (c for c in old.get("conditions") or [] if c.get("type") == kind), {}
    )
    since = before.get("lastTransitionTime") if before.get("status") == value else None
    cond: dict[str, Any] = {
        "type": kind,
        "status": value,
        "lastTransitionTime": since or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if not ok:
        cond["reason"] = reason or (
            "RevisionMissing" if kind != "IngressReady" else "IngressNotConfigured"
        )
        if message:
            cond["message"] = message
    return cond


def model_status(
    old: dict[str, Any],
    latest: int | None,
    latest_w: WorkloadStatus | None,
    rolled_w: WorkloadStatus | None,
    failure: str | None,
    name: str,
    standby: bool = False,
    downloading: bool = False,
    failure_reason: str | None = None,
) -> dict[str, Any]:
    def state(w: WorkloadStatus | None) -> str:
        if standby:
            return "Loaded"  # scaled to zero: loadable on the next request
        if w is None:
            return "Pending"
        return "Loaded" if w.ready else "Loading"

    active = state(rolled_w)
    target = "FailedToLoad" if failure else "Pending" if downloading else state(latest_w)
    if failure and failure_reason:
        transition = "InvalidSpec"
    elif failure:
        transition = "BlockedByFailedLoad"
    elif downloading:
        transition = "InProgress"
    elif standby or (latest_w is not None and latest_w is rolled_w and latest_w.ready):
        transition = "UpToDate"
    else:
        transition = "InProgress"
    model: dict[str, Any] = {
        "transitionStatus": transition,
        "states": {
            "activeModelState": active
            if rolled_w or standby
            else ("FailedToLoad" if failure else "Pending"),
            "targetModelState": target,
        },
        "copies": {"failedCopies": 1 if failure else 0, "totalCopies": 1},
    }
    if failure:
        previous = (old.get("modelStatus") or {}).get("lastFailureInfo") or {}
        info: dict[str, Any] = {
            "location": latest_w.name if latest_w else "",
            "reason": failure_reason or "ModelLoadFailed",
            "message": failure,
            "modelRevisionName": revision_name(name, latest) if latest else "",
        }
        if latest_w is not None and latest_w.exit_code is not None:
            info["exitCode"] = latest_w.exit_code
        same = {k: v for k, v in previous.items() if k != "time"} == info
        info["time"] = (
            previous.get("time")
            if same and previous.get("time")
            else (datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        )
        model["lastFailureInfo"] = info
    return model
