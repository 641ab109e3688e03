"""A PyTorchJob's status as the Training Operator reports it, from its replicas' workloads.

Conditions (``type``, ``status``, ``reason``, ``message``, ``lastUpdateTime``,
``lastTransitionTime``): ``Created`` (PyTorchJobCreated) once, ``Running`` (PyTorchJobRunning)
while the master runs, ``Restarting`` (PyTorchJobRestarting) while a failed replica is
restarted, and one final ``Succeeded`` (PyTorchJobSucceeded: the master succeeded) or
``Failed`` (PyTorchJobFailed: a replica failed for good; DeadlineExceeded or
BackoffLimitExceeded when the run policy ended it), after which ``Running`` and
``Restarting`` are ``False``.
``replicaStatuses`` counts each type's ``active``, ``succeeded`` and ``failed`` replicas,
leaving zeros out as the operator's JSON does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.common.runtime import Phase, WorkloadStatus

KIND = "PyTorchJob"
FINAL = ("Succeeded", "Failed")
#: The runtime's reasons that end a job with a reason of their own.
RUN_POLICY_REASONS = ("DeadlineExceeded", "BackoffLimitExceeded")

Observed = dict[tuple[str, int], WorkloadStatus | None]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


def is_true(status: dict[str, Any], ctype: str) -> bool:
    found = condition(status, ctype)
    return found is not None and found.get("status") == "True"


def finished(status: dict[str, Any]) -> bool:
    return any(is_true(status, t) for t in FINAL)


def set_condition(
    status: dict[str, Any], ctype: str, reason: str, message: str, value: str = "True"
) -> None:
    """Set one condition (moved last, as the newest); what it replaces goes False."""
    stamp = now()
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != ctype]
    old = condition(status, ctype)
    changed = old is None or old.get("status") != value
    for other in conditions:
        gone = (
            (ctype == "Running" and other["type"] == "Restarting")
            or (ctype == "Restarting" and other["type"] == "Running")
            or (ctype in FINAL and other["type"] in ("Running", "Restarting"))
        )
        if gone and other.get("status") == "True":
            other.update(status="False", lastUpdateTime=stamp, lastTransitionTime=stamp)
    conditions.append(
        {
            "type": ctype,
            "status": value,
            "reason": reason,
            "message": message,
            "lastUpdateTime": stamp,
            "lastTransitionTime": stamp if changed else old.get("lastTransitionTime", stamp),  # type: ignore[union-attr]
        }
    )
    status["conditions"] = conditions


def replica_statuses(observed: Observed) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (rtype, _), workload in observed.items():
        counts = out.setdefault(rtype, {})
        key = "active"
        if workload is not None and workload.phase == Phase.SUCCEEDED:
            key = "succeeded"
        elif workload is not None and workload.phase == Phase.FAILED:
            key = "failed"
        counts[key] = counts.get(key, 0) + 1
    return out


def _failure(job: dict[str, Any], observed: Observed) -> tuple[str, str] | None:
    failed = [(r, w) for (r, _), w in observed.items() if w is not None and w.phase == Phase.FAILED]
    if not failed:
        return None
    meta = job["metadata"]
    policy_reason = next((w.reason for _, w in failed if w.reason in RUN_POLICY_REASONS), None)
    rtype = failed[0][0]
    count = sum(1 for r, _ in failed if r == rtype)
    message = (
        f"{KIND} {meta['namespace']}/{meta['name']} has failed because {count} {rtype} "
        "replica(s) failed."
    )
    detail = failed[0][1].message
    if detail:
        message += f" {detail}"
    return policy_reason or f"{KIND}Failed", message[:2000]


def advance(job: dict[str, Any], observed: Observed) -> dict[str, Any]:
    """The job's next status from its replicas' workloads (a new dict)."""
    meta = job["metadata"]
    status = dict(job.get("status") or {})
    status["conditions"] = [dict(c) for c in status.get("conditions") or []]
    ident = f"{meta['namespace']}/{meta['name']}"
    if condition(status, "Created") is None:
        set_condition(status, "Created", f"{KIND}Created", f"{KIND} {meta['name']} is created.")
    if finished(status):
        # Replicas deleted by cleanPodPolicy leave the counts as they were at the end.
        if all(w is not None for w in observed.values()):
            status["replicaStatuses"] = replica_statuses(observed)
        return status
    status["replicaStatuses"] = replica_statuses(observed)
    status.setdefault("startTime", now())
    master = observed.get(("Master", 0))
    failure = _failure(job, observed)
    if failure is not None:
        set_condition(status, "Failed", *failure)
        status["completionTime"] = now()
    elif master is not None and master.phase == Phase.SUCCEEDED:
        set_condition(
            status, "Succeeded", f"{KIND}Succeeded", f"{KIND} {ident} successfully completed."
        )
        status["completionTime"] = now()
    elif any(w is not None and w.reason == "CrashLoopBackOff" for w in observed.values()):
        if not is_true(status, "Restarting"):
            set_condition(
                status,
                "Restarting",
                f"{KIND}Restarting",
                f"{KIND} {ident} is restarting because a replica failed.",
            )
    elif master is not None and master.phase == Phase.RUNNING and not is_true(status, "Running"):
        set_condition(status, "Running", f"{KIND}Running", f"{KIND} {ident} is running.")
    return status
