"""PyTorchJob (kubeflow.org/v1): the spec as the Training Operator defines it, with its defaults.

Field names and defaults follow the operator's Go types (``pkg/apis/kubeflow.org/v1``):
a replica's ``replicas`` defaults to 1 and its ``restartPolicy`` to OnFailure, and the job's
``runPolicy.cleanPodPolicy`` to None. Semantic checks are in :mod:`.validation`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from services.automl.training.validation import validate_pytorchjob
from services.common import catalog
from services.common.resources import ResourceKind
from services.common.resources.kinds import Spec

#: Removed once the job's replica workloads are deleted (so DELETE never leaves them running).
FINALIZER = "training.kubeflow.org/replicas"

RestartPolicy = Literal["Always", "OnFailure", "Never", "ExitCode"]


class ReplicaSpec(Spec):
    replicas: int = 1
    restart_policy: RestartPolicy = Field("OnFailure", alias="restartPolicy")
    template: dict[str, Any] = Field(default_factory=dict)


class RunPolicy(Spec):
    clean_pod_policy: Literal["All", "Running", "None"] = Field("None", alias="cleanPodPolicy")
    ttl_seconds_after_finished: int | None = Field(None, alias="ttlSecondsAfterFinished")
    active_deadline_seconds: int | None = Field(None, alias="activeDeadlineSeconds")
    backoff_limit: int | None = Field(None, alias="backoffLimit")
    scheduling_policy: dict[str, Any] | None = Field(None, alias="schedulingPolicy")
    suspend: bool | None = None
    managed_by: str | None = Field(None, alias="managedBy")


class PyTorchJobSpec(Spec):
    pytorch_replica_specs: dict[str, ReplicaSpec] = Field(alias="pytorchReplicaSpecs")
    run_policy: RunPolicy = Field(default_factory=RunPolicy, alias="runPolicy")
    elastic_policy: dict[str, Any] | None = Field(None, alias="elasticPolicy")
    nproc_per_node: str | None = Field(None, alias="nprocPerNode")


PYTORCHJOB = ResourceKind(
    **catalog.PYTORCHJOB.resource_kind_fields(),
    spec_model=PyTorchJobSpec,
    finalizer=FINALIZER,
    validate=validate_pytorchjob,
)

KINDS = (PYTORCHJOB,)
