"""Kinds of the notebook service: core/v1 PersistentVolumeClaim, kubeflow.org/v1 Notebook,
kubeflow.org/v1alpha1 PodDefault."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from services.common import catalog
from services.common.errors import Cause
from services.common.hostpath import host_path_causes
from services.common.resources import ResourceKind
from services.common.resources.kinds import Spec
from services.common.runtime.quantity import parse_quantity

SERVICE = catalog.PVC.service


class ResourceRequirements(Spec):
    requests: dict[str, str | int] | None = None
    limits: dict[str, str | int] | None = None


class LabelSelector(Spec):
    match_labels: dict[str, str] | None = Field(None, alias="matchLabels")
    match_expressions: list[dict[str, Any]] | None = Field(None, alias="matchExpressions")


class PersistentVolumeClaimSpec(Spec):
    access_modes: (
        list[Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]] | None
    ) = Field(None, alias="accessModes")
    resources: ResourceRequirements | None = None
    storage_class_name: str | None = Field(None, alias="storageClassName")
    volume_mode: Literal["Filesystem", "Block"] | None = Field(None, alias="volumeMode")
    volume_name: str | None = Field(None, alias="volumeName")
    selector: LabelSelector | None = None
    data_source: dict[str, Any] | None = Field(None, alias="dataSource")
    data_source_ref: dict[str, Any] | None = Field(None, alias="dataSourceRef")


class PodTemplate(Spec):
    metadata: dict[str, Any] | None = None
    spec: dict[str, Any]  # a Kubernetes PodSpec; the notebook controller reads what it runs


class NotebookSpec(Spec):
    template: PodTemplate


class PodDefaultSpec(Spec):
    """Kubeflow's PodDefault: what it adds to the pods its ``selector`` matches.

    The notebook service applies it to notebook servers (``workload.apply_pod_defaults``):
    env, envFrom, volumes and volumeMounts, annotations and labels, tolerations; the other
    fields are kept as written (a Kubernetes cluster's webhook would use them)."""

    selector: LabelSelector
    desc: str | None = None
    service_account_name: str | None = Field(None, alias="serviceAccountName")
    automount_service_account_token: bool | None = Field(None, alias="automountServiceAccountToken")
    env: list[dict[str, Any]] | None = None
    env_from: list[dict[str, Any]] | None = Field(None, alias="envFrom")
    volumes: list[dict[str, Any]] | None = None
    volume_mounts: list[dict[str, Any]] | None = Field(None, alias="volumeMounts")
    tolerations: list[dict[str, Any]] | None = None
    annotations: dict[str, str] | None = None
    labels: dict[str, str] | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    sidecars: list[dict[str, Any]] | None = None
    init_containers: list[dict[str, Any]] | None = Field(None, alias="initContainers")


def validate_poddefault(obj: dict[str, Any]) -> Sequence[Cause]:
    """Names on every env var, volume and mount; no hostPath volume (as for a Notebook)."""
    spec = obj.get("spec") or {}
    causes = host_path_causes(spec, "spec")
    for field in ("env", "volumes", "volumeMounts"):
        for i, item in enumerate(spec.get(field) or []):
            if not isinstance(item, dict) or not item.get("name"):
                causes.append(Cause(f"spec.{field}[{i}].name", "Required value"))
    for i, mount in enumerate(spec.get("volumeMounts") or []):
        if isinstance(mount, dict) and not mount.get("mountPath"):
            causes.append(Cause(f"spec.volumeMounts[{i}].mountPath", "Required value"))
    return causes


def validate_claim(obj: dict[str, Any]) -> Sequence[Cause]:
    """The storage a claim asks for is a positive quantity, as Kubernetes requires."""
    resources = (obj.get("spec") or {}).get("resources") or {}
    causes = []
    for part in ("requests", "limits"):
        value = (resources.get(part) or {}).get("storage")
        if value is None:
            continue
        field = f"spec.resources.{part}[storage]"
        try:
            amount = parse_quantity(value, field)
        except (TypeError, ValueError):
            causes.append(Cause(field, f"Invalid value: {value!r}: not a quantity (e.g. 1Gi)"))
            continue
        if amount <= 0:
            causes.append(Cause(field, f"Invalid value: {value!r}: must be greater than zero"))
    return causes


def validate_notebook(obj: dict[str, Any]) -> Sequence[Cause]:
    """The pod template mounts no hostPath (``services.common.hostpath``)."""
    return host_path_causes(obj.get("spec") or {}, "spec")


PVC = ResourceKind(
    **catalog.PVC.resource_kind_fields(),
    spec_model=PersistentVolumeClaimSpec,
    finalizer="kubernetes.io/pvc-protection",
    validate=validate_claim,
)
NOTEBOOK = ResourceKind(
    **catalog.NOTEBOOK.resource_kind_fields(),
    spec_model=NotebookSpec,
    validate=validate_notebook,
)

PODDEFAULT = ResourceKind(
    **catalog.PODDEFAULT.resource_kind_fields(),
    spec_model=PodDefaultSpec,
    validate=validate_poddefault,
)

KINDS = (PVC, NOTEBOOK, PODDEFAULT)
