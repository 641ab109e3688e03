"""Pydantic models of the Argo ``Workflow`` spec subset the engine runs.

Unknown fields are rejected (``Spec`` forbids extras), so a feature the engine does not
implement (``resource`` templates, ``sidecars``, ``hooks``...) fails at submission with the
field's path instead of being silently ignored. Field names are Argo's (camelCase).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from services.common.hostpath import REFUSAL as HOST_PATH_REFUSAL
from services.common.resources.kinds import Spec


class _M(Spec):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


def _stringify(value: Any) -> Any:
    """Argo parameter values are strings; YAML gives ints, floats and bools too."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


class ValueFrom(_M):
    path: str | None = None
    default: str | None = None
    supplied: dict[str, Any] | None = None  # a suspend node's output set on resume
    parameter: str | None = None  # {{...}} expression (dag/steps outputs)
    expression: str | None = None

    _s = field_validator("default", mode="before")(lambda cls, v: _stringify(v))


class Parameter(_M):
    name: str
    value: str | None = None
    default: str | None = None
    enum: list[str] | None = None
    description: str | None = None
    value_from: ValueFrom | None = None
    global_name: str | None = None

    @field_validator("value", "default", mode="before")
    @classmethod
    def _str(cls, v: Any) -> Any:
        return _stringify(v)

    @field_validator("enum", mode="before")
    @classmethod
    def _enum(cls, v: Any) -> Any:
        return [_stringify(x) for x in v] if isinstance(v, list) else v


class S3Artifact(_M):
    """Argo's ``s3`` artifact location; bucket and endpoint default to the platform's."""

    key: str | None = None
    bucket: str | None = None
    endpoint: str | None = None
    region: str | None = None
    insecure: bool | None = None
    access_key_secret: dict[str, Any] | None = None
    secret_key_secret: dict[str, Any] | None = None


class HTTPArtifact(_M):
    """Argo's ``http`` artifact: fetched by the pipeline service (SSRF-checked) into the store."""

    url: str
    headers: list[dict[str, str]] | None = None


class Artifact(_M):
    name: str
    path: str | None = None
    from_: str | None = Field(None, alias="from")
    optional: bool | None = None
    mode: int | None = None
    raw: dict[str, str] | None = None  # {data: "..."}
    archive: dict[str, Any] | None = None  # {none: {}} or {tar: {...}} (the default)
    s3: S3Artifact | None = None
    http: HTTPArtifact | None = None
    global_name: str | None = None

    @field_validator("archive")
    @classmethod
    def _archive(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v and not set(v) <= {"none", "tar"}:
            raise ValueError("archive must be {none: {}} or {tar: {}} (zip is not supported)")
        return v


class Inputs(_M):
    parameters: list[Parameter] | None = None
    artifacts: list[Artifact] | None = None


class Outputs(_M):
    parameters: list[Parameter] | None = None
    artifacts: list[Artifact] | None = None
    result: str | None = None
    exit_code: str | None = None


class Arguments(_M):
    parameters: list[Parameter] | None = None
    artifacts: list[Artifact] | None = None


class EnvVar(_M):
    name: str
    value: str | None = None

    _s = field_validator("value", mode="before")(lambda cls, v: _stringify(v))


class VolumeMount(_M):
    name: str
    mount_path: str
    read_only: bool | None = None
    sub_path: str | None = None


class Resources(_M):
    requests: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None


class Container(_M):
    """A container; ``image`` is recorded, not pulled, by the local runtime."""

    name: str | None = None
    image: str | None = None
    image_pull_policy: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    working_dir: str | None = None
    volume_mounts: list[VolumeMount] | None = None
    resources: Resources | None = None
    env_from: list[dict[str, Any]] | None = None

    @field_validator("command", "args", mode="before")
    @classmethod
    def _argv(cls, v: Any) -> Any:
        return [_stringify(x) for x in v] if isinstance(v, list) else v


class ScriptTemplate(Container):
    source: str


class Sequence_(_M):
    count: str | None = None
    start: str | None = None
    end: str | None = None
    format: str | None = None

    @field_validator("count", "start", "end", mode="before")
    @classmethod
    def _str(cls, v: Any) -> Any:
        return _stringify(v)


class TemplateRef(_M):
    name: str
    template: str
    cluster_scope: bool | None = None


class Task(_M):
    """A DAG task or a step: what to run, with which arguments, under which condition."""

    name: str
    template: str | None = None
    template_ref: TemplateRef | None = None
    arguments: Arguments | None = None
    dependencies: list[str] | None = None
    depends: str | None = None
    when: str | None = None
    with_items: list[Any] | None = None
    with_param: str | None = None
    with_sequence: Sequence_ | None = None
    continue_on: dict[str, bool] | None = None
    on_exit: str | None = None


class DAG(_M):
    tasks: list[Task]
    target: str | None = None
    fail_fast: bool | None = None


class Backoff(_M):
    duration: str | None = None
    factor: str | None = None
    max_duration: str | None = None

    @field_validator("duration", "factor", "max_duration", mode="before")
    @classmethod
    def _str(cls, v: Any) -> Any:
        return _stringify(v)


class RetryStrategy(_M):
    limit: str | None = None
    retry_policy: str | None = None
    backoff: Backoff | None = None
    expression: str | None = None

    @field_validator("limit", mode="before")
    @classmethod
    def _str(cls, v: Any) -> Any:
        return _stringify(v)

    @field_validator("retry_policy")
    @classmethod
    def _policy(cls, v: str | None) -> str | None:
        if v not in (None, "Always", "OnFailure", "OnError", "OnTransientError"):
            raise ValueError("must be one of Always, OnFailure, OnError, OnTransientError")
        return v


class SuspendTemplate(_M):
    duration: str | None = None

    _s = field_validator("duration", mode="before")(lambda cls, v: _stringify(v))


class Memoize(_M):
    key: str
    max_age: str | None = None
    cache: dict[str, Any] | None = None  # Argo's ConfigMap; shipyard caches in its database


class TemplateMetadata(_M):
    annotations: dict[str, str] | None = None
    labels: dict[str, str] | None = None


class PVCSource(_M):
    claim_name: str
    read_only: bool | None = None


class Volume(_M):
    name: str
    persistent_volume_claim: PVCSource | None = None
    empty_dir: dict[str, Any] | None = None
    # Named so that the 422 says why rather than "unknown field" (services.common.hostpath).
    host_path: Any = None

    @field_validator("host_path")
    @classmethod
    def _no_host_path(cls, v: Any) -> Any:
        if v is not None:  # an explicit null is an absent field, as in Kubernetes
            raise ValueError(HOST_PATH_REFUSAL)
        return v


class Plugin(_M):
    """shipyard's own executor plugins (only ``kfp``: a KFP IR task), set by the KFP API."""

    kfp: dict[str, Any]


class Template(_M):
    name: str
    inputs: Inputs | None = None
    outputs: Outputs | None = None
    container: Container | None = None
    script: ScriptTemplate | None = None
    dag: DAG | None = None
    steps: list[list[Task]] | None = None
    suspend: SuspendTemplate | None = None
    plugin: Plugin | None = None
    retry_strategy: RetryStrategy | None = None
    active_deadline_seconds: str | None = None
    timeout: str | None = None
    parallelism: int | None = None
    volumes: list[Volume] | None = None
    metadata: TemplateMetadata | None = None
    memoize: Memoize | None = None
    fail_fast: bool | None = None
    # Placement, as Argo has it per template (the Workflow's spec gives the defaults); the
    # Kubernetes runtime puts them on the step's Pod.
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None

    @field_validator("active_deadline_seconds", mode="before")
    @classmethod
    def _str(cls, v: Any) -> Any:
        return _stringify(v)


class VolumeClaimTemplate(_M):
    metadata: dict[str, Any]
    spec: dict[str, Any] | None = None


class WorkflowTemplateRef(_M):
    name: str
    cluster_scope: bool | None = None


class ArtifactRepositoryRef(_M):
    """Argo's reference to a repository in a ConfigMap of the workflow's namespace."""

    config_map: str | None = None
    key: str | None = None


class WorkflowSpec(_M):
    entrypoint: str | None = None
    templates: list[Template] | None = None
    arguments: Arguments | None = None
    volumes: list[Volume] | None = None
    volume_claim_templates: list[VolumeClaimTemplate] | None = None
    parallelism: int | None = None
    active_deadline_seconds: int | None = None
    on_exit: str | None = None
    suspend: bool | None = None
    shutdown: str | None = None
    service_account_name: str | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    image_pull_secrets: list[dict[str, Any]] | None = None
    workflow_template_ref: WorkflowTemplateRef | None = None
    ttl_strategy: dict[str, Any] | None = None
    pod_gc: dict[str, Any] | None = None
    workflow_metadata: dict[str, Any] | None = None
    artifact_repository_ref: ArtifactRepositoryRef | None = None

    @field_validator("shutdown")
    @classmethod
    def _shutdown(cls, v: str | None) -> str | None:
        if v not in (None, "", "Stop", "Terminate"):
            raise ValueError("must be Stop or Terminate")
        return v


class WorkflowTemplateSpec(WorkflowSpec):
    """A WorkflowTemplate's spec is a workflow spec kept for reuse."""


class CronWorkflowSpec(_M):
    schedule: str | None = None
    schedules: list[str] | None = None
    timezone: str | None = None
    suspend: bool | None = None
    concurrency_policy: str | None = None
    starting_deadline_seconds: int | None = None
    successful_jobs_history_limit: int | None = None
    failed_jobs_history_limit: int | None = None
    workflow_spec: WorkflowSpec
    workflow_metadata: dict[str, Any] | None = None

    @field_validator("concurrency_policy")
    @classmethod
    def _policy(cls, v: str | None) -> str | None:
        if v not in (None, "Allow", "Forbid", "Replace"):
            raise ValueError("must be Allow, Forbid or Replace")
        return v
