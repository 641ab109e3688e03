"""A pod spec's placement, copied into a WorkloadSpec the same way by every service.

Kubeflow users put ``nodeSelector``, ``tolerations``, ``affinity`` and ``imagePullSecrets`` on
a Notebook's pod template, a Katib trial's Job, an Argo template (or the Workflow's spec) and
an InferenceService's predictor, and ``envFrom`` on the container. The Kubernetes runtime puts
them on the Pod; the local runtime (one node, no image pulls) records them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Pod-spec field -> WorkloadSpec field (both spelled as the Kubernetes API spells them).
POD_FIELDS = ("nodeSelector", "tolerations", "affinity", "imagePullSecrets")


def placement(
    pod: Mapping[str, Any] | None,
    container: Mapping[str, Any] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The placement fields of ``pod`` (falling back to ``defaults``, e.g. an Argo Workflow's
    spec-wide ones) and the ``envFrom`` of ``container``, ready to merge into a WorkloadSpec."""
    found: dict[str, Any] = {}
    for key in POD_FIELDS:
        value = (pod or {}).get(key)
        if value in (None, {}, []):
            value = (defaults or {}).get(key)
        if value not in (None, {}, []):
            found[key] = value
    env_from = (container or {}).get("envFrom")
    if env_from:
        found["envFrom"] = env_from
    return found
