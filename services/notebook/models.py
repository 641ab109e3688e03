"""Kinds of the notebook service: core/v1 PersistentVolumeClaim, kubeflow.org/v1 Notebook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from services.common.errors import Cause
from services.common.hostpath import host_path_causes
from services.common.resources import PrinterColumn, ResourceKind
from services.common.resources.kinds import Spec

SERVICE = "notebook"


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


def validate_notebook(obj: dict[str, Any]) -> Sequence[Cause]:
    """The pod template mounts no hostPath (``services.common.hostpath``)."""
    return host_path_causes(obj.get("spec") or {}, "spec")


PVC = ResourceKind(
    group="",
    version="v1",
    kind="PersistentVolumeClaim",
    plural="persistentvolumeclaims",
    spec_model=PersistentVolumeClaimSpec,
    service=SERVICE,
    short_names=("pvc",),
    finalizer="kubernetes.io/pvc-protection",
    columns=(
        PrinterColumn("STATUS", "status.phase"),
        PrinterColumn("CAPACITY", "status.capacity.storage"),
        PrinterColumn("ACCESS MODES", "spec.accessModes"),
    ),
)

NOTEBOOK = ResourceKind(
    group="kubeflow.org",
    version="v1",
    kind="Notebook",
    plural="notebooks",
    spec_model=NotebookSpec,
    service=SERVICE,
    short_names=("nb",),
    validate=validate_notebook,
    columns=(
        PrinterColumn("READY", "status.readyReplicas"),
        PrinterColumn("URL", "status.url", wide=True),
    ),
)

KINDS = (PVC, NOTEBOOK)
