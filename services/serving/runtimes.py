"""KServe's ServingRuntime and ClusterServingRuntime (``serving.kserve.io/v1alpha1``): which
server runs a model, and how an InferenceService's model finds one.

A runtime names the model formats it serves (``supportedModelFormats``: name, version,
``autoSelect``, ``priority``), the protocols it speaks (``protocolVersions``) and the
container that serves (``containers[0]``, the ``kserve-container``). Selection follows
KServe's predictor reconciler (pkg/apis/serving/v1beta1/predictor_model.go):

- ``spec.predictor.model.runtime`` names one: a ServingRuntime of the namespace first, then
  a ClusterServingRuntime. It must exist, not be disabled, speak the model's
  ``protocolVersion`` (when given) and list the model's format (autoSelect or not).
- Otherwise the runtimes that list the format (and version, when the model gives one) with
  ``autoSelect: true``, that are enabled, single-model and speak the protocol (v1 when the
  model says none) are ranked: the namespace's before the cluster's, each by priority (a
  runtime with a priority before one without, higher first), then newest first, then name.

The chosen runtime goes to ``status.servingRuntimeName`` or
``status.clusterServingRuntimeName`` as KServe writes it, and onto the revision's workload
(labels), so a runtime edited later changes no running revision. Its container's ``args``
and ``env`` values are templates over the InferenceService's metadata, as KServe's
``ReplacePlaceholders`` (a Go template over ObjectMeta): ``{{.Name}}``, ``{{.Namespace}}``,
``{{.Labels.<key>}}``, ``{{.Annotations.<key>}}`` and ``{{index .Labels "<key>"}}``.

The built-in ClusterServingRuntimes (:func:`builtin_runtimes`, one per format the platform's
model server loads, named as KServe's config/runtimes names them) run that model server: a
container whose command is ``python -m services.serving.modelserver`` gets the platform's
interpreter, the model's place, protocol, port and path prefix from the controller. Any other
container is the user's own server: its command runs as given (on the local runtime in the
sandbox, the image being recorded only), with ``PORT``, ``MODEL_DIR`` and
``SHIPYARD_PATH_PREFIX`` in its environment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from services.common import catalog
from services.common.errors import ApiError, Cause
from services.common.resources import ResourceKind, ResourceStore
from services.common.resources.kinds import Spec
from services.serving.models import SUPPORTED_FORMATS, Container

MODEL_SERVER = "services.serving.modelserver"
PROTOCOLS = ("v1", "v2", "grpc-v1", "grpc-v2")
#: KServe's ClusterServingRuntime names (config/runtimes) for the formats the model server
#: loads; a format KServe has no runtime of its own for gets ``shipyard-<format>server``.
BUILTIN_NAMES = {
    "sklearn": "kserve-sklearnserver",
    "xgboost": "kserve-xgbserver",
    "lightgbm": "kserve-lgbserver",
    "pytorch": "kserve-torchserve",
    "onnx": "kserve-onnxserver",
    "huggingface": "kserve-huggingfaceserver",
}
#: KServe's versions for the built-in formats (its config/runtimes).
BUILTIN_VERSIONS = {"sklearn": "1", "xgboost": "2", "lightgbm": "4", "pytorch": "1", "onnx": "1"}
BUILTIN_LABEL = "serving.shipyard.io/builtin"
#: Workload labels naming the ServingRuntime (or ClusterServingRuntime) a revision runs.
RUNTIME_LABEL = "serving.kserve.io/servingruntime"
CLUSTER_RUNTIME_LABEL = "serving.kserve.io/clusterservingruntime"
#: Template fields KServe fills from the InferenceService's ObjectMeta.
_TEMPLATE = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_FIELD = re.compile(r"^\.(Name|Namespace|GenerateName|UID)$")
_MAP_KEY = re.compile(
    r'^\.(Labels|Annotations)\.([A-Za-z0-9_]+)$|^index \.(Labels|Annotations) "([^"]+)"$'
)
_MAX_TEMPLATES = 64


class SupportedModelFormat(Spec):
    name: str = Field(min_length=1, max_length=253)
    version: str | None = None
    auto_select: bool | None = Field(None, alias="autoSelect")
    priority: int | None = Field(None, ge=1)


class ServingRuntimeSpec(Spec):
    """KServe's ServingRuntimeSpec (v1alpha1). Pod-level fields are recorded for the
    Kubernetes runtime; ``builtInAdapter`` (ModelMesh's) and the ModelMesh endpoints are
    accepted and ignored, as a single-model KServe ignores them."""

    supported_model_formats: list[SupportedModelFormat] | None = Field(
        None, alias="supportedModelFormats"
    )
    protocol_versions: list[Literal["v1", "v2", "grpc-v1", "grpc-v2"]] | None = Field(
        None, alias="protocolVersions"
    )
    multi_model: bool | None = Field(None, alias="multiModel")
    disabled: bool | None = None
    containers: list[Container] = Field(min_length=1)
    built_in_adapter: dict[str, Any] | None = Field(None, alias="builtInAdapter")
    grpc_endpoint: str | None = Field(None, alias="grpcEndpoint")
    grpc_data_endpoint: str | None = Field(None, alias="grpcDataEndpoint")
    http_data_endpoint: str | None = Field(None, alias="httpDataEndpoint")
    replicas: int | None = Field(None, ge=0)
    storage_helper: dict[str, Any] | None = Field(None, alias="storageHelper")
    volumes: list[dict[str, Any]] | None = None
    node_selector: dict[str, str] | None = Field(None, alias="nodeSelector")
    affinity: dict[str, Any] | None = None
    tolerations: list[dict[str, Any]] | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    image_pull_secrets: list[dict[str, Any]] | None = Field(None, alias="imagePullSecrets")
    scheduler_name: str | None = Field(None, alias="schedulerName")


def validate_serving_runtime(obj: dict[str, Any]) -> Sequence[Cause]:
    """Templates in the container must be ones this platform fills (KServe fails the
    InferenceService later; refusing here names the field)."""
    causes: list[Cause] = []
    for i, container in enumerate((obj.get("spec") or {}).get("containers") or []):
        for j, arg in enumerate(container.get("args") or []):
            problem = template_problem(arg)
            if problem:
                causes.append(Cause(f"spec.containers[{i}].args[{j}]", problem))
        for j, var in enumerate(container.get("env") or []):
            problem = template_problem(var.get("value") or "")
            if problem:
                causes.append(Cause(f"spec.containers[{i}].env[{j}].value", problem))
    return causes


SERVING_RUNTIME = ResourceKind(
    **catalog.SERVING_RUNTIME.resource_kind_fields(),
    spec_model=ServingRuntimeSpec,
    validate=validate_serving_runtime,
)
CLUSTER_SERVING_RUNTIME = ResourceKind(
    **catalog.CLUSTER_SERVING_RUNTIME.resource_kind_fields(),
    spec_model=ServingRuntimeSpec,
    validate=validate_serving_runtime,
)
KINDS = (SERVING_RUNTIME, CLUSTER_SERVING_RUNTIME)


# ------------------------------------------------------------------ templates
def template_problem(text: str) -> str | None:
    """Why ``text`` holds a template this platform cannot fill (None: it can)."""
    found = _TEMPLATE.findall(text)
    if len(found) > _MAX_TEMPLATES:
        return f"more than {_MAX_TEMPLATES} templates"
    for expr in found:
        if not (_FIELD.match(expr) or _MAP_KEY.match(expr)):
            return (
                f"template {{{{{expr}}}}} is not supported: use {{{{.Name}}}}, "
                "{{.Namespace}}, {{.Labels.<key>}} or {{.Annotations.<key>}}"
            )
    return None


def fill_template(text: str, meta: dict[str, Any]) -> str:
    """``text`` with KServe's placeholders replaced from ``meta`` (an ObjectMeta); a missing
    label or annotation gives ``<no value>``, as Go's template does."""
    fields = {
        "Name": meta.get("name") or "",
        "Namespace": meta.get("namespace") or "",
        "GenerateName": meta.get("generateName") or "",
        "UID": meta.get("uid") or "",
    }

    def one(match: re.Match[str]) -> str:
        expr = match.group(1)
        simple = _FIELD.match(expr)
        if simple:
            return str(fields[simple.group(1)])
        keyed = _MAP_KEY.match(expr)
        if keyed is None:
            raise ValueError(template_problem(match.group(0)) or expr)
        which, key = (keyed.group(1), keyed.group(2)) if keyed.group(1) else keyed.group(3, 4)
        values = meta.get(which.lower()) or {}
        return str(values[key]) if key in values else "<no value>"

    return _TEMPLATE.sub(one, text)


# ------------------------------------------------------------------ selection
class RuntimeNotAvailable(ValueError):
    """No runtime can serve the model; ``reason`` is KServe's FailureReason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SelectedRuntime:
    name: str
    cluster: bool  # a ClusterServingRuntime (else the namespace's ServingRuntime)
    spec: dict[str, Any]
    protocol: str  # the model's protocolVersion, or the runtime's first (KServe's rule)

    @property
    def container(self) -> dict[str, Any]:
        return dict(self.spec["containers"][0])

    @property
    def platform_server(self) -> bool:
        """Whether the container runs the platform's own model server."""
        command = self.container.get("command") or []
        return command[-2:] == ["-m", MODEL_SERVER]


def _supports(spec: dict[str, Any], fmt: str, version: str | None, named: bool) -> bool:
    """KServe's RuntimeSupportsModel: the format (and version, when the model gives one)
    among the runtime's formats, counting only autoSelect ones unless the runtime is named."""
    for entry in spec.get("supportedModelFormats") or []:
        if not named and not entry.get("autoSelect"):
            continue
        if str(entry.get("name", "")).lower() != fmt:
            continue
        if version is None or str(entry.get("version")) == version:
            return True
    return False


def _speaks(spec: dict[str, Any], protocol: str | None) -> bool:
    versions = spec.get("protocolVersions") or []
    return not protocol or not versions or protocol in versions


def _priority(spec: dict[str, Any], fmt: str) -> int | None:
    for entry in spec.get("supportedModelFormats") or []:
        if str(entry.get("name", "")).lower() == fmt:
            return entry.get("priority")  # type: ignore[no-any-return]
    return None


def _first_protocol(spec: dict[str, Any]) -> str:
    versions = spec.get("protocolVersions") or []
    ranked = sorted(versions, key=PROTOCOLS.index)
    return ranked[0] if ranked and ranked[0] in ("v1", "v2") else "v1"


def _ranked(objects: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """Newest first, then by name (KServe's list order), then by priority (stable)."""
    by_name = sorted(objects, key=lambda o: o["metadata"]["name"])
    newest = sorted(
        by_name, key=lambda o: o["metadata"].get("creationTimestamp") or "", reverse=True
    )
    with_priority = [o for o in newest if _priority(o["spec"], fmt) is not None]
    without = [o for o in newest if _priority(o["spec"], fmt) is None]
    with_priority.sort(key=lambda o: -int(_priority(o["spec"], fmt) or 0))
    return with_priority + without


async def select_runtime(
    store: ResourceStore, namespace: str, block: dict[str, Any], fmt: str
) -> SelectedRuntime:
    """The runtime that serves a model block (``spec.predictor.model`` or a legacy block
    read as one), as KServe selects it; RuntimeNotAvailable (with KServe's reason) if none."""
    fmt = fmt.lower()
    version = (block.get("modelFormat") or {}).get("version")
    version = None if version is None else str(version)
    protocol = block.get("protocolVersion")
    named = block.get("runtime")
    if named:
        obj, cluster = await _named(store, namespace, named)
        spec = obj["spec"]
        if spec.get("disabled"):
            raise RuntimeNotAvailable("RuntimeDisabled", f"Specified runtime {named} is disabled")
        if protocol and not _speaks(spec, protocol):
            raise RuntimeNotAvailable(
                "NoSupportingRuntime",
                f"Specified runtime {named} does not support protocol version {protocol}",
            )
        if not _supports(spec, fmt, version, named=True):
            raise RuntimeNotAvailable(
                "NoSupportingRuntime",
                f"Specified runtime {named} does not support model format {_label(fmt, version)}",
            )
        return SelectedRuntime(named, cluster, spec, protocol or _first_protocol(spec))
    wanted = protocol or "v1"
    for kind, cluster in ((SERVING_RUNTIME, False), (CLUSTER_SERVING_RUNTIME, True)):
        candidates = [
            o
            for o in await store.list_all(kind, namespace if not cluster else None)
            if not o["spec"].get("disabled")
            and not o["spec"].get("multiModel")
            and _supports(o["spec"], fmt, version, named=False)
            and _speaks(o["spec"], wanted)
        ]
        if candidates:
            chosen = _ranked(candidates, fmt)[0]
            spec = chosen["spec"]
            return SelectedRuntime(
                chosen["metadata"]["name"], cluster, spec, protocol or _first_protocol(spec)
            )
    raise RuntimeNotAvailable(
        "NoSupportingRuntime",
        f"No runtime found to support model format {_label(fmt, version)} over protocol "
        f"{wanted}: no enabled ServingRuntime in namespace {namespace!r} or "
        "ClusterServingRuntime lists it with autoSelect: true (name one with "
        "spec.predictor.model.runtime, or create one)",
    )


def _label(fmt: str, version: str | None) -> str:
    return f"{fmt!r}" + (f" version {version!r}" if version else "")


async def _named(store: ResourceStore, namespace: str, name: str) -> tuple[dict[str, Any], bool]:
    """A runtime by name: the namespace's ServingRuntime, else the ClusterServingRuntime."""
    found = await store.find(SERVING_RUNTIME, namespace, name)
    if found is not None:
        return found, False
    found = await store.find(CLUSTER_SERVING_RUNTIME, None, name)
    if found is not None:
        return found, True
    raise RuntimeNotAvailable(
        "RuntimeNotRecognized",
        f"No ServingRuntime {name!r} in namespace {namespace!r} and no ClusterServingRuntime "
        f"{name!r}: waiting for the runtime to become available",
    )


# ------------------------------------------------------------------ built-ins
def builtin_runtimes(formats: Sequence[str] = SUPPORTED_FORMATS) -> list[dict[str, Any]]:
    """The ClusterServingRuntimes the platform registers: one per format its model server
    loads, each running that server (templated as KServe's runtimes are)."""
    out = []
    for fmt in formats:
        name = BUILTIN_NAMES.get(fmt, f"shipyard-{fmt}server")
        entry: dict[str, Any] = {"name": fmt, "autoSelect": True, "priority": 1}
        if fmt in BUILTIN_VERSIONS:
            entry["version"] = BUILTIN_VERSIONS[fmt]
        out.append(
            {
                "apiVersion": CLUSTER_SERVING_RUNTIME.api_version,
                "kind": CLUSTER_SERVING_RUNTIME.kind,
                "metadata": {
                    "name": name,
                    "labels": {BUILTIN_LABEL: "true"},
                    "annotations": {"serving.kserve.io/server-type": name.split("-", 1)[-1]},
                },
                "spec": {
                    "supportedModelFormats": [entry],
                    "protocolVersions": ["v1", "v2"],
                    "containers": [
                        {
                            "name": "kserve-container",
                            "command": ["python", "-m", MODEL_SERVER],
                            "args": [
                                "--model-name={{.Name}}",
                                "--model-dir=/mnt/models",
                                f"--model-format={fmt}",
                            ],
                        }
                    ],
                },
            }
        )
    return out


async def register_builtin_runtimes(store: ResourceStore) -> list[str]:
    """Create the built-in ClusterServingRuntimes that do not exist yet (an admin's edit of
    one, such as ``disabled: true``, stays); the names created."""
    created = []
    for obj in builtin_runtimes():
        name = obj["metadata"]["name"]
        if await store.find(CLUSTER_SERVING_RUNTIME, None, name) is not None:
            continue
        try:
            await store.create(CLUSTER_SERVING_RUNTIME, None, obj)
        except ApiError as exc:
            if exc.code != 409:  # another replica created it meanwhile
                raise
            continue
        created.append(name)
    return created


def runtime_container(
    selected: SelectedRuntime, meta: dict[str, Any], block: dict[str, Any]
) -> dict[str, Any]:
    """The runtime's container for one InferenceService, as KServe merges it: templates
    filled from the InferenceService's metadata, the model block's ``args`` after the
    runtime's, its ``env`` over the runtime's (by name), its ``resources`` and ``image``
    over the runtime's when given."""
    container = selected.container
    args = [fill_template(a, meta) for a in container.get("args") or []]
    env = {
        e["name"]: {**e, "value": fill_template(e.get("value") or "", meta)}
        for e in container.get("env") or []
    }
    for e in block.get("env") or []:
        env[e["name"]] = e
    merged = {
        **container,
        "args": [*args, *(block.get("args") or [])],
        "env": list(env.values()),
    }
    for field in ("resources", "image"):
        if block.get(field):
            merged[field] = block[field]
    return merged
