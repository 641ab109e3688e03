"""Trial templates: substitute parameters into ``trialSpec`` and turn the Job into a workload.

Substitution walks the template's *values* (never a shell line, never re-parsed text):
``${trialParameters.<name>}`` becomes the assignment of the parameter named by that trial
parameter's ``reference``, or trial metadata for ``${trialSpec.Name}``, ``Namespace``,
``Kind``, ``APIVersion``, ``Labels[key]`` and ``Annotations[key]``.
"""

from __future__ import annotations

import copy
import os
import re
from datetime import UTC, datetime
from typing import Any

from services.automl.validation import TRIAL_PARAM_RE
from services.common.hostpath import REFUSAL as HOST_PATH_REFUSAL
from services.common.runtime import SERVICE_LABEL, Phase, WorkloadStatus, placement

TRIAL_LABEL = "katib.kubeflow.org/trial"
WORKLOAD_PREFIX = "automl-"
_META_RE = re.compile(r"^\$\{trialSpec\.(\w+)(?:\[([^\]]+)\])?\}$")


class TemplateError(ValueError):
    """The template cannot become a workload; the message says why."""


def workload_name(trial_name: str) -> str:
    return f"{WORKLOAD_PREFIX}{trial_name}"[:253]


def _reference_value(
    ref: str, assignments: dict[str, str], trial_meta: dict[str, Any], trial_spec: dict[str, Any]
) -> str:
    if ref in assignments:
        return assignments[ref]
    match = _META_RE.match(ref)
    if not match:
        raise TemplateError(f"trial parameter reference {ref!r} matches no parameter")
    field, key = match.groups()
    meta = trial_spec.get("metadata") or {}
    if field == "Name":
        return str(trial_meta["name"])
    if field == "Namespace":
        return str(trial_meta["namespace"])
    if field == "Kind":
        return str(trial_spec.get("kind", ""))
    if field == "APIVersion":
        return str(trial_spec.get("apiVersion", ""))
    if field in ("Labels", "Annotations") and key is not None:
        source = (meta.get("labels") if field == "Labels" else meta.get("annotations")) or {}
        return str(source.get(key, ""))
    raise TemplateError(f"unsupported metadata reference {ref!r}")


def render_trial_spec(
    template: dict[str, Any], trial_meta: dict[str, Any], assignments: list[dict[str, str]]
) -> dict[str, Any]:
    """The experiment's ``trialSpec`` with every placeholder replaced (a new object)."""
    trial_spec = template["trialSpec"]
    values = {a["name"]: a["value"] for a in assignments}
    by_param = {
        tp["name"]: _reference_value(tp["reference"], values, trial_meta, trial_spec)
        for tp in template.get("trialParameters") or []
    }

    def substitute(node: Any) -> Any:
        if isinstance(node, str):

            def one(match: re.Match[str]) -> str:
                name = match.group(1)
                if name not in by_param:
                    raise TemplateError(
                        f"${{trialParameters.{name}}} is not declared in trialParameters"
                    )
                return by_param[name]

            return TRIAL_PARAM_RE.sub(one, node)
        if isinstance(node, list):
            return [substitute(v) for v in node]
        if isinstance(node, dict):
            return {k: substitute(v) for k, v in node.items()}
        return node

    rendered = substitute(copy.deepcopy(trial_spec))
    meta = rendered.setdefault("metadata", {})
    meta["name"], meta["namespace"] = trial_meta["name"], trial_meta["namespace"]
    return dict(rendered)


_CONTAINER_FIELDS = {
    "command": "command",
    "args": "args",
    "workingDir": "workingDir",
    "image": "image",
    "ports": "ports",
}


def pod_workload(
    pod: dict[str, Any],
    primary: str | None,
    *,
    namespace: str,
    name: str,
    env: dict[str, str],
    where: str = "spec.template.spec",
) -> dict[str, Any]:
    """A runtime WorkloadSpec (as a dict) for the ``primary`` container of a pod template's
    ``spec`` (the first container when ``primary`` is None); ``env`` is added to its own.
    ``where`` is the pod spec's path in the object, for messages."""
    containers = pod.get("containers") or []
    if not containers:
        raise TemplateError("the pod template has no containers")
    container = (
        containers[0]
        if not primary
        else next((c for c in containers if c.get("name") == primary), None)
    )
    if container is None:
        names = ", ".join(str(c.get("name")) for c in containers)
        raise TemplateError(
            f"primaryContainerName {primary!r} names no container (containers: {names})"
        )
    spec: dict[str, Any] = {"kind": "job", "namespace": namespace, "name": name}
    for src, dst in _CONTAINER_FIELDS.items():
        if container.get(src) is not None:
            spec[dst] = container[src]
    if not spec.get("command") and not spec.get("args"):
        raise TemplateError(
            f"container {container.get('name')!r} has no command or args "
            "(the local runtime does not read the image's entrypoint)"
        )
    resources = container.get("resources") or {}
    spec["resources"] = {k: v for k, v in resources.items() if k in ("requests", "limits")}
    spec["env"] = [
        {"name": e["name"], "value": str(e.get("value", ""))}
        for e in container.get("env") or []
        if "name" in e and "valueFrom" not in e
    ]
    spec["env"] += [{"name": k, "value": v} for k, v in env.items()]
    spec["volumeMounts"] = [
        {k: m[k] for k in ("name", "mountPath", "readOnly", "subPath") if k in m}
        for m in container.get("volumeMounts") or []
    ]
    spec["volumes"] = []
    for i, v in enumerate(pod.get("volumes") or []):
        if v.get("hostPath") is not None:  # refused by the API; a stored one is never mounted
            raise TemplateError(f"{where}.volumes[{i}].hostPath: {HOST_PATH_REFUSAL}")
        spec["volumes"].append(
            {k: v[k] for k in ("name", "persistentVolumeClaim", "emptyDir") if k in v}
        )
    restart = pod.get("restartPolicy")
    if restart in ("Never", "OnFailure"):
        spec["restartPolicy"] = restart
    if pod.get("terminationGracePeriodSeconds") is not None:
        spec["terminationGracePeriodSeconds"] = float(pod["terminationGracePeriodSeconds"])
    spec.update(placement(pod, container))
    return spec


def job_workload(
    run_spec: dict[str, Any],
    primary: str | None,
    *,
    namespace: str,
    trial_name: str,
    labels: dict[str, str],
    env: dict[str, str],
    extra_volume: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """A runtime WorkloadSpec (as a dict) for the primary container of a batch/v1 Job.

    ``extra_volume`` is (volume name, claim name, mount path): the File collector's
    metrics directory.
    """
    job = run_spec.get("spec") or {}
    pod = (job.get("template") or {}).get("spec") or {}
    if not pod.get("containers"):
        raise TemplateError("the Job has no containers")
    spec = pod_workload(pod, primary, namespace=namespace, name=workload_name(trial_name), env=env)
    add_metrics_volume(spec, extra_volume)
    if job.get("backoffLimit") is not None:
        spec["backoffLimit"] = int(job["backoffLimit"])
    if job.get("activeDeadlineSeconds") is not None:
        spec["activeDeadlineSeconds"] = float(job["activeDeadlineSeconds"])
    spec["labels"] = {**labels, SERVICE_LABEL: "automl", TRIAL_LABEL: trial_name}
    spec["owner"] = f"trials/{namespace}/{trial_name}"
    return spec


def add_metrics_volume(spec: dict[str, Any], extra_volume: tuple[str, str, str] | None) -> None:
    """Mount a collector's metrics claim: (volume name, claim name, file or directory path)."""
    if extra_volume is None:
        return
    vol_name, claim, path = extra_volume
    spec["volumes"].append({"name": vol_name, "persistentVolumeClaim": {"claimName": claim}})
    spec["volumeMounts"].append({"name": vol_name, "mountPath": os.path.dirname(path) or "/"})


def job_document(status: WorkloadStatus) -> dict[str, Any]:
    """A finished Job workload as Kubernetes' job controller reports a batch/v1 Job: what a
    trial's success and failure conditions are evaluated on (services/automl/conditions.py)."""
    stamp = (status.finish_time or status.start_time or datetime.now(UTC)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    job: dict[str, Any] = {"apiVersion": "batch/v1", "kind": "Job", "status": {}}
    if status.start_time is not None:
        job["status"]["startTime"] = status.start_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    if status.phase == Phase.SUCCEEDED:
        condition = {
            "type": "Complete",
            "reason": "CompletionsReached",
            "message": "Reached expected number of succeeded pods",
        }
        job["status"].update(succeeded=1, completionTime=stamp)
    elif status.phase == Phase.FAILED:
        detail = status.message or status.reason or f"exit code {status.exit_code}"
        condition = {"type": "Failed", "reason": status.reason or "Error", "message": detail}
        job["status"]["failed"] = 1
    else:
        job["status"]["active"] = 1
        return job
    job["status"]["conditions"] = [
        {**condition, "status": "True", "lastProbeTime": stamp, "lastTransitionTime": stamp}
    ]
    return job
