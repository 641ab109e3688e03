"""Kinds of the notebook service: core/v1 PersistentVolumeClaim, kubeflow.org/v1 Notebook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from services.common import catalog
from services.common.errors import Cause
from services.common.hostpath import host_path_causes
from services.common.resources import ResourceKind
from services.common.resources.kinds import Spec

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


def validate_notebook(obj: dict[str, Any]) -> Sequence[Cause]:
    """The pod template mounts no hostPath (``services.common.hostpath``)."""
    return host_path_causes(obj.get("spec") or {}, "spec")


PVC = ResourceKind(
    **catalog.PVC.resource_kind_fields(),
    spec_model=PersistentVolumeClaimSpec,
    finalizer="kubernetes.io/pvc-protection",
)
NOTEBOOK = ResourceKind(
    **catalog.NOTEBOOK.resource_kind_fields(),
    spec_model=NotebookSpec,
    validate=validate_notebook,
)

KINDS = (PVC, NOTEBOOK)
