"""A PyTorchJob's checks, as the Training Operator's webhook makes them, with field paths.

Beyond the schema (models.py): replica types are Master and Worker, one Master, a container
named ``pytorch`` in each template, names short enough for each replica's hostname
(``<job>-worker-<i>`` is a DNS label), no hostPath, non-negative run-policy numbers; plus what
this platform cannot run, said rather than ignored: an elastic policy, and a container without
a command (the local runtime runs no image entrypoint).
"""

from __future__ import annotations

import re
from typing import Any

from services.common.errors import Cause, causes_from_validation
from services.common.hostpath import host_path_causes

REPLICA_TYPES = ("Master", "Worker")
CONTAINER = "pytorch"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _container_causes(replica: dict[str, Any], path: str) -> list[Cause]:
    pod = (replica.get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or []
    found = next((c for c in containers if c.get("name") == CONTAINER), None)
    if found is None:
        return [
            Cause(
                f"{path}.template.spec.containers",
                f"Required value: there is no container named {CONTAINER!r}",
                "FieldValueRequired",
            )
        ]
    if not found.get("command") and not found.get("args"):
        i = containers.index(found)
        return [
            Cause(
                f"{path}.template.spec.containers[{i}].command",
                "Required value: the local runtime does not run an image's entrypoint",
                "FieldValueRequired",
            )
        ]
    return []


def _replica_causes(specs: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    base = "spec.pytorchReplicaSpecs"
    if not specs:
        return [Cause(base, "Required value: at least a Master replica", "FieldValueRequired")]
    for rtype, replica in specs.items():
        path = f"{base}.{rtype}"
        if rtype not in REPLICA_TYPES:
            causes.append(
                Cause(
                    path,
                    "Unsupported value: replica types are Master and Worker",
                    "FieldValueNotSupported",
                )
            )
            continue
        if replica.get("replicas", 1) < 0:
            causes.append(Cause(f"{path}.replicas", "must be greater than or equal to 0"))
        if rtype == "Master" and replica.get("replicas", 1) != 1:
            causes.append(
                Cause(f"{path}.replicas", "Invalid value: there must be only 1 Master replica")
            )
        causes += _container_causes(replica, path)
        causes += host_path_causes(replica.get("template") or {}, f"{path}.template")
    if "Master" not in specs:
        causes.append(
            Cause(
                f"{base}.Master", "Required value: a Master replica (rank 0)", "FieldValueRequired"
            )
        )
    return causes


def validate_pytorchjob(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes = _replica_causes(spec.get("pytorchReplicaSpecs") or {})
    name = (obj.get("metadata") or {}).get("name")
    workers = ((spec.get("pytorchReplicaSpecs") or {}).get("Worker") or {}).get("replicas", 0)
    if name:
        longest = f"{name}-worker-{max(int(workers or 0) - 1, 0)}"
        if not _DNS1035.match(name) or len(longest) > 63:
            causes.append(
                Cause(
                    "metadata.name",
                    f"Invalid value: {name!r}: replica hostnames such as {longest!r} must be "
                    "DNS-1035 labels (a lowercase letter first, at most 63 characters)",
                )
            )
    run = spec.get("runPolicy") or {}
    for field in ("backoffLimit", "ttlSecondsAfterFinished"):
        if run.get(field) is not None and run[field] < 0:
            causes.append(Cause(f"spec.runPolicy.{field}", "must be greater than or equal to 0"))
    if run.get("activeDeadlineSeconds") is not None and run["activeDeadlineSeconds"] <= 0:
        causes.append(Cause("spec.runPolicy.activeDeadlineSeconds", "must be greater than 0"))
    if spec.get("elasticPolicy") is not None:
        causes.append(
            Cause(
                "spec.elasticPolicy",
                "Unsupported value: elastic training (torchrun rendezvous) is not run here",
                "FieldValueNotSupported",
            )
        )
    return causes


def check_trial_job(trial_spec: dict[str, Any], path: str) -> list[Cause]:
    """A Katib trial template's PyTorchJob, found at ``path``: the kind's schema and checks
    (its name is the trial's, so not checked here)."""
    from pydantic import ValidationError

    from services.automl.training.models import PyTorchJobSpec

    try:
        spec = PyTorchJobSpec.model_validate(trial_spec.get("spec") or {}).model_dump(
            by_alias=True, exclude_none=True, mode="json"
        )
    except ValidationError as exc:
        return causes_from_validation(exc, prefix=f"{path}.spec")
    causes = validate_pytorchjob({"metadata": {}, "spec": spec})
    return [Cause(f"{path}.{c.field}", c.message, c.reason) for c in causes]
