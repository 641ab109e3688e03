"""Katib trials whose ``trialSpec`` is a PyTorchJob: the trial creates the job and follows it.

As Katib's trial controller does: the trial's rendered ``runSpec`` becomes a PyTorchJob named
after the trial (created in the automl service's own store, owned by the trial), the trial's
outcome is the first of its ``failureCondition`` / ``successCondition`` (GJSON,
services/automl/conditions.py) to hold on the job object, and metrics are read from the
replica that ``primaryPodLabels`` picks (Katib's default ``training.kubeflow.org/job-role:
master``). The job is deleted when the trial ends unless the template says ``retain``.

Every replica's ``pytorch`` container gets the trial's environment (``KATIB_TRIAL_NAME``, the
Push collector's URL and token); the primary replicas also mount the File or TensorFlowEvent
collector's metrics volume. Replica pods carry the trial's label, so stopping a trial's
workloads (a killed or early-stopped trial) stops its replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
from typing import TYPE_CHECKING, Any

from services.automl import conditions
from services.automl.template import TRIAL_LABEL
from services.automl.training import replicas as rep
from services.automl.training.models import PYTORCHJOB
from services.automl.training.validation import CONTAINER
from services.common.errors import ApiError
from services.common.resources.store import owner_reference
from services.common.runtime import SERVICE_LABEL, Runtime

if TYPE_CHECKING:
    from services.automl.controller import AutoMLController

POLL_SECONDS = 0.5
#: How long the primary replica may take to appear once the job exists.
PRIMARY_WAIT_SECONDS = 60.0


def is_training_run(run_spec: dict[str, Any] | None) -> bool:
    return bool(run_spec) and run_spec.get("kind") == "PyTorchJob"  # type: ignore[union-attr]


def trial_conditions(trial: dict[str, Any]) -> tuple[str | None, str | None, dict[str, str]]:
    """The trial's success and failure conditions and primary pod labels, Katib's defaults
    for its run's kind filling what the template left out."""
    spec = trial["spec"]
    success, failure, labels = conditions.defaults((spec.get("runSpec") or {}).get("kind"))
    return (
        spec.get("successCondition") or success,
        spec.get("failureCondition") or failure,
        spec.get("labels") or labels or {},
    )


def _replica_labels(rtype: str, replica: dict[str, Any]) -> dict[str, str]:
    labels = ((replica.get("template") or {}).get("metadata") or {}).get("labels") or {}
    out = {str(k): str(v) for k, v in labels.items()}
    if rtype == "Master":
        out[rep.JOB_ROLE_LABEL] = "master"
    return out


def job_object(
    trial: dict[str, Any], env: dict[str, str], extra_volume: tuple[str, str, str] | None
) -> dict[str, Any]:
    """The PyTorchJob a trial runs: its runSpec, named and labelled for the trial."""
    meta = trial["metadata"]
    job = copy.deepcopy(trial["spec"]["runSpec"])
    _, _, primary = trial_conditions(trial)
    job["metadata"] = {
        **{k: v for k, v in (job.get("metadata") or {}).items() if k in ("labels", "annotations")},
        "name": meta["name"],
        "namespace": meta["namespace"],
        "ownerReferences": [owner_reference(trial)],
    }
    job["metadata"]["labels"] = {**(job["metadata"].get("labels") or {}), TRIAL_LABEL: meta["name"]}
    for rtype, replica in ((job.get("spec") or {}).get("pytorchReplicaSpecs") or {}).items():
        template = replica.setdefault("template", {})
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), TRIAL_LABEL: meta["name"]}
        pod = template.setdefault("spec", {})
        for container in pod.get("containers") or []:
            if container.get("name") != CONTAINER:
                continue
            container["env"] = [
                *(container.get("env") or []),
                *({"name": k, "value": v} for k, v in env.items()),
            ]
            picked = all(_replica_labels(rtype, replica).get(k) == v for k, v in primary.items())
            if extra_volume is not None and picked:
                vol_name, claim, path = extra_volume
                pod["volumes"] = [
                    *(pod.get("volumes") or []),
                    {"name": vol_name, "persistentVolumeClaim": {"claimName": claim}},
                ]
                container["volumeMounts"] = [
                    *(container.get("volumeMounts") or []),
                    {"name": vol_name, "mountPath": os.path.dirname(path) or "/"},
                ]
    return job


async def start_job(
    ctl: AutoMLController,
    trial: dict[str, Any],
    env: dict[str, str],
    extra_volume: tuple[str, str, str] | None,
) -> None:
    """Create the trial's PyTorchJob unless it exists (idempotent, like ``runtime.apply``)."""
    meta = trial["metadata"]
    if await ctl.store.find(PYTORCHJOB, meta["namespace"], meta["name"]) is not None:
        return
    job = job_object(trial, env, extra_volume)
    try:
        await ctl.store.create(PYTORCHJOB, meta["namespace"], job)
    except ApiError as exc:
        if exc.code == 409:  # created meanwhile by an earlier pass
            return
        raise ValueError(f"the trial's PyTorchJob is invalid: {exc.message}") from None


async def primary_now(runtime: Runtime, trial: dict[str, Any]) -> str | None:
    """The workload of the replica whose labels match ``primaryPodLabels`` (the first, by
    name), or None while there is none."""
    meta = trial["metadata"]
    _, _, primary = trial_conditions(trial)
    selector = {**primary, SERVICE_LABEL: "automl", rep.JOB_NAME_LABEL: meta["name"]}
    found = sorted(w.name for w in await runtime.list(selector, meta["namespace"]))
    return found[0] if found else None


async def primary_workload(ctl: AutoMLController, trial: dict[str, Any]) -> str:
    """:func:`primary_now`, waiting for it to appear; the master's when none does in time."""
    meta = trial["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(PRIMARY_WAIT_SECONDS):
            while True:
                found = await primary_now(ctl.runtime, trial)
                if found:
                    return found
                if await ctl.store.find(PYTORCHJOB, namespace, name) is None:
                    break
                await asyncio.sleep(POLL_SECONDS)
    return rep.workload_name(name, "Master", 0)


async def wait_outcome(
    ctl: AutoMLController,
    trial: dict[str, Any],
    timeout: float,  # noqa: ASYNC109 - a trial's own deadline
) -> tuple[str, str]:
    """("Succeeded" | "Failed", what the matching job condition says), as Katib decides it.

    The job's status is written by the PyTorchJob controller in this same service; it is
    read from the store every half second (bounded by ``timeout``)."""
    meta = trial["metadata"]
    success, failure, _ = trial_conditions(trial)
    async with asyncio.timeout(timeout):
        while True:
            job = await ctl.store.find(PYTORCHJOB, meta["namespace"], meta["name"])
            if job is None:
                return "Failed", "the trial's PyTorchJob was deleted"
            found = conditions.job_outcome(job, success, failure)
            if found is not None:
                state, condition = found
                detail = condition.get("message") or condition.get("reason") or ""
                return state, str(detail)
            await asyncio.sleep(POLL_SECONDS)


async def finish(ctl: AutoMLController, trial: dict[str, Any], stop: bool = False) -> None:
    """Delete the trial's PyTorchJob once the trial ended, unless the template retains it;
    ``stop``: a killed or early-stopped trial's replicas still running are stopped either way."""
    meta = trial["metadata"]
    if stop:
        await ctl.runtime.stop_all({SERVICE_LABEL: "automl", TRIAL_LABEL: meta["name"]})
    if trial["spec"].get("retainRun"):
        return
    await forget(ctl, meta["namespace"], meta["name"])


async def forget(ctl: AutoMLController, namespace: str, trial_name: str) -> None:
    """Delete the PyTorchJob a trial named ``trial_name`` made, if there is one."""
    job = await ctl.store.find(PYTORCHJOB, namespace, trial_name)
    if job is None or (job["metadata"].get("labels") or {}).get(TRIAL_LABEL) != trial_name:
        return
    if job["metadata"].get("deletionTimestamp"):
        return
    with contextlib.suppress(ApiError):
        await ctl.store.delete(PYTORCHJOB, namespace, trial_name)
