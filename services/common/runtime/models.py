"""Workload and volume models: a Kubernetes container spec, trimmed to what a workload needs.

Field names follow the Kubernetes API (camelCase aliases) so that the services can copy a
container out of a Trial template, an Argo step or an InferenceService predictor without
renaming anything. Python attribute names are snake_case; both spellings are accepted.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

# RFC 1123 label (namespaces) and subdomain (names), as Kubernetes validates them; they also
# keep a name from escaping its directory (no "/", no "..").
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def check_namespace(value: str) -> str:
    """Validate a namespace (RFC 1123 label, at most 63 characters)."""
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(f"namespace {value!r}: must be a lowercase RFC 1123 label")
    return value


def check_name(value: str, what: str = "name") -> str:
    """Validate an object name (RFC 1123 subdomain, at most 253 characters)."""
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(f"{what} {value!r}: must be a lowercase RFC 1123 subdomain")
    return value


class Phase(StrEnum):
    """The Kubernetes pod phases a workload goes through."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class EnvVar(_Model):
    name: str
    value: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ENV_NAME.match(v):
            raise ValueError(f"invalid environment variable name {v!r}")
        return v


class ResourceRequirements(_Model):
    """requests/limits such as {"memory": "512Mi", "cpu": "1"}; locally only memory is enforced."""

    requests: dict[str, str | int | float] = Field(default_factory=dict)
    limits: dict[str, str | int | float] = Field(default_factory=dict)


class VolumeMount(_Model):
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str | None = None

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or "\0" in v:
            raise ValueError(f"mountPath {v!r}: must be an absolute path")
        return v

    @field_validator("sub_path")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v and (v.startswith("/") or ".." in v.split("/")):
            raise ValueError(f"subPath {v!r}: must be a relative path without '..'")
        return v


class PersistentVolumeClaimSource(_Model):
    claim_name: str
    read_only: bool = False


class HostPathSource(_Model):
    """A path inside one of the runtime's volumes (arbitrary host paths are refused)."""

    path: str
    type: str | None = None


class Volume(_Model):
    name: str
    persistent_volume_claim: PersistentVolumeClaimSource | None = None
    empty_dir: dict[str, Any] | None = None
    host_path: HostPathSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        sources = [self.persistent_volume_claim, self.empty_dir, self.host_path]
        if sum(s is not None for s in sources) != 1:
            raise ValueError(
                f"volume {self.name!r}: exactly one of persistentVolumeClaim, emptyDir, "
                "hostPath is required"
            )
        return self


class HTTPGetAction(_Model):
    path: str = "/"
    port: int | str | None = None
    scheme: str = "HTTP"


class Probe(_Model):
    http_get: HTTPGetAction | None = None
    initial_delay_seconds: float = 0
    period_seconds: float = 10
    timeout_seconds: float = 1
    failure_threshold: int = 3


class ContainerPort(_Model):
    container_port: int | None = None
    name: str | None = None
    protocol: str = "TCP"


class WorkloadNetwork(_Model):
    """Workloads of one namespace that name the same ``group`` reach one another by name, as
    the pods of a distributed training job do (a PyTorchJob's replicas).

    ``hostname`` is the name this workload is reached by (on Kubernetes, a headless Service of
    that name selecting its pod, as the Training Operator makes one per replica); ``peers``
    are the names it must resolve. Locally the group shares one network namespace, as the
    containers of one pod do: every name resolves to the loopback, and a port is taken once
    for the whole group.
    """

    group: str
    hostname: str | None = None
    peers: list[str] = Field(default_factory=list)

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        return check_name(v, "network.group")

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 63 or not _DNS_LABEL.match(v)):
            raise ValueError(f"network.hostname {v!r}: must be a lowercase RFC 1123 label")
        return v

    @field_validator("peers")
    @classmethod
    def _peers(cls, v: list[str]) -> list[str]:
        for name in v:
            if len(name) > 63 or not _DNS_LABEL.match(name):
                raise ValueError(f"network.peers: {name!r} must be a lowercase RFC 1123 label")
        return v


#: Kubernetes' limit on one Secret, and so on a workload's ``files``.
FILES_MAX_BYTES = 1024 * 1024
#: Init steps one workload may have (a pod's init containers run one after another: a few).
INIT_CONTAINERS_MAX = 8
#: The name of the workload's own container on Kubernetes (an init step may not take it).
MAIN_CONTAINER = "workload"


class InitContainer(_Model):
    """A step that runs to completion, in the workload's place, before its command starts:
    a Kubernetes init container. It sees what the workload sees (its volume mounts, its
    ``files``, its network and its environment, plus ``env`` here), so it can fill an
    emptyDir the command then reads, as KServe's storage initializer fills ``/mnt/models``.

    Steps run in order, each once per workload (not again when the command restarts); a
    step that fails ends a workload whose restartPolicy is Never with reason ``InitError``
    and the step's last output, and is retried with back-off otherwise, as the kubelet does.
    ``image`` is the Kubernetes runtime's (default: the workload's); the local runtime runs
    the command with the host's programs, as it runs the workload's."""

    name: str
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    image: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > 63 or not _DNS_LABEL.match(v):
            raise ValueError(f"name {v!r}: must be a lowercase RFC 1123 label")
        if v == MAIN_CONTAINER:
            raise ValueError(f"name {v!r}: is the workload's own container")
        return v

    @model_validator(mode="after")
    def _runs_something(self) -> InitContainer:
        if not self.command and not self.args:
            raise ValueError("command: at least one of command or args is required")
        return self


class WorkloadSpec(_Model):
    """What to run. ``kind`` is ``job`` (runs to completion) or ``server`` (serves on $PORT).

    ``command``/``args`` are an argv, never a shell line; ``$(VAR)`` in them is replaced from
    the workload's environment as Kubernetes does (``$$(VAR)`` keeps it literal). ``image`` is
    recorded for the record and for the Kubernetes runtime; the local runtime never pulls it.
    """

    kind: Literal["job", "server"] = "job"
    namespace: str
    name: str
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    working_dir: str | None = None
    image: str | None = None
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    ports: list[ContainerPort] = Field(default_factory=list)
    readiness_probe: Probe | None = None
    restart_policy: Literal["Never", "OnFailure", "Always"] | None = None
    backoff_limit: int | None = None
    active_deadline_seconds: float | None = None
    termination_grace_period_seconds: float = 5
    labels: dict[str, str] = Field(default_factory=dict)
    owner: str | dict[str, Any] | None = None
    #: Files the runtime places in the workload, read-only, before it starts (a plan, a
    #: script, a platform tool): absolute path inside -> text. Like a Secret volume, and
    #: bounded like one (FILES_MAX_BYTES in all); the way data goes in without a host path.
    files: dict[str, str] = Field(default_factory=dict)
    # Placement and pod-level fields, passed through to a Pod by the Kubernetes runtime. The
    # local runtime has one node and pulls nothing: it records them and ignores them.
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    image_pull_secrets: list[dict[str, Any]] = Field(default_factory=list)
    env_from: list[dict[str, Any]] = Field(default_factory=list)
    #: A network shared with other workloads of the namespace (see WorkloadNetwork).
    network: WorkloadNetwork | None = None
    #: Steps run to completion before ``command`` (see InitContainer).
    init_containers: list[InitContainer] = Field(default_factory=list)

    @field_validator("init_containers")
    @classmethod
    def _init_containers(cls, v: list[InitContainer]) -> list[InitContainer]:
        if len(v) > INIT_CONTAINERS_MAX:
            raise ValueError(f"initContainers: at most {INIT_CONTAINERS_MAX} steps")
        seen: set[str] = set()
        for step in v:
            if step.name in seen:
                raise ValueError(f"initContainers: the name {step.name!r} is used twice")
            seen.add(step.name)
        return v

    @field_validator("files")
    @classmethod
    def _files(cls, v: dict[str, str]) -> dict[str, str]:
        total = 0
        for path, text in v.items():
            parts = path.split("/")
            if not path.startswith("/") or ".." in parts or "\0" in path or path.endswith("/"):
                raise ValueError(f"files[{path!r}]: must be an absolute file path without '..'")
            total += len(text.encode())
        if total > FILES_MAX_BYTES:
            raise ValueError(f"files: {total} bytes in all, more than {FILES_MAX_BYTES}")
        return v

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        return check_namespace(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @field_validator("env", mode="before")
    @classmethod
    def _env_dict(cls, v: Any) -> Any:
        # Accept a plain mapping as well as the Kubernetes list of {name, value}.
        if isinstance(v, dict):
            return [{"name": k, "value": "" if val is None else str(val)} for k, val in v.items()]
        return v

    @field_validator("working_dir")
    @classmethod
    def _wd(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"workingDir {v!r}: must be an absolute path")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadSpec:
        if not self.command and not self.args:
            raise ValueError("command: at least one of command or args is required")
        names = {v.name for v in self.volumes}
        for i, m in enumerate(self.volume_mounts):
            if m.name not in names:
                raise ValueError(f"volumeMounts[{i}].name: no volume named {m.name!r}")
        if self.kind == "job" and self.restart_policy == "Always":
            raise ValueError("restartPolicy: a job may not use Always (use Never or OnFailure)")
        if self.active_deadline_seconds is not None and self.active_deadline_seconds <= 0:
            raise ValueError("activeDeadlineSeconds: must be > 0")
        return self

    @property
    def effective_restart_policy(self) -> str:
        """Kubernetes defaults: Always for long-running servers, Never for jobs."""
        if self.restart_policy:
            return self.restart_policy
        return "Always" if self.kind == "server" else "Never"

    def env_dict(self) -> dict[str, str]:
        return {e.name: e.value for e in self.env}


class WorkloadStatus(_Model):
    """What a caller may act on. ``endpoint`` is set for servers only once they are ready: an
    opaque URL that the platform's gateway can reach (services.common.runtime.endpoint
    connects to it), never something for a caller to take apart."""

    namespace: str
    name: str
    kind: Literal["job", "server"] = "job"
    phase: Phase = Phase.PENDING
    ready: bool = False
    exit_code: int | None = None
    start_time: datetime | None = None
    finish_time: datetime | None = None
    reason: str | None = None
    message: str | None = None
    endpoint: str | None = None
    restart_count: int = 0
    image: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    owner: str | dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.phase.finished


class VolumeInfo(_Model):
    """A runtime volume: what backs a PersistentVolumeClaim (where it lives is not said)."""

    namespace: str
    name: str
    size: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
