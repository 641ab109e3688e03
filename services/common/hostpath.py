"""``hostPath`` volumes are refused in every tenant-facing kind.

A ``hostPath`` names a directory of the machine the workload runs on. On a shared host that is
another tenant's volume, the platform's keys or its databases (issue 10: a Notebook's hostPath
mounted another tenant's PVC read-write), so Kubernetes' Pod Security "baseline" and
"restricted" levels forbid it too. A workload mounts only its own namespace's volumes
(``persistentVolumeClaim``, ``emptyDir``).

It is refused for every user, cluster admins included: validation knows no identity, and an
object an admin writes is later run, changed or copied by others (a Notebook shared with its
contributors, a WorkflowTemplate submitted from another profile). Data an admin wants a workload
to see goes into a PVC. The local runtime refuses hostPath as well; this check is the one that
answers the request with a 422 naming the field.
"""

from __future__ import annotations

from typing import Any

from services.common.errors import Cause

REFUSAL = (
    "not allowed: a workload may mount only its own namespace's volumes "
    "(persistentVolumeClaim or emptyDir); hostPath is refused for every user, "
    "cluster admins included"
)


def host_path_causes(node: Any, path: str) -> list[Cause]:
    """A cause for every ``volumes[i].hostPath`` anywhere in ``node`` (found at ``path``).

    Any pod template of any kind is covered (a Job's ``spec.template.spec``, a TFJob's
    ``tfReplicaSpecs.Worker.template.spec``, an InferenceService predictor): the walk looks
    for a ``volumes`` list wherever it is. Iterative, so a deeply nested body cannot exhaust
    the stack.
    """
    causes: list[Cause] = []
    stack: list[tuple[Any, str]] = [(node, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                child_path = f"{where}.{key}" if where else str(key)
                if key == "volumes" and isinstance(child, list):
                    causes += [
                        Cause(f"{child_path}[{i}].hostPath", REFUSAL, "FieldValueForbidden")
                        for i, volume in enumerate(child)
                        if isinstance(volume, dict) and volume.get("hostPath") is not None
                    ]
                stack.append((child, child_path))
        elif isinstance(value, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(value))
    return sorted(causes, key=lambda c: c.field)
