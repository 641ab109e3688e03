"""Kinds served by the serving service: KServe's ``serving.kserve.io/v1beta1`` InferenceService.

Field names, defaults and value ranges follow KServe's v1beta1 API (pkg/apis/serving/v1beta1):
``spec.predictor`` carries one model (``model`` with ``modelFormat``, ``storageUri``,
``protocolVersion``, ``runtime``), a legacy framework block (``sklearn``, ``xgboost``,
``lightgbm``, ``onnx``, ``pytorch``...: KServe's PredictorExtensionSpec, served as ``model``
with that format, see :func:`predictor_model`) or custom ``containers``, plus the component
extension (``minReplicas``, ``maxReplicas``, ``canaryTrafficPercent``...). Unknown fields
are rejected with their path (the Spec base).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from services.common import catalog
from services.common.errors import Cause
from services.common.hostpath import host_path_causes
from services.common.objectstore import in_namespace_area, namespace_prefixes
from services.common.resources import ResourceKind
from services.common.resources.kinds import Spec
from services.serving import corev1
from services.serving.modelcache import http_uri_problem

SERVICE = catalog.INFERENCE_SERVICE.service
#: Formats the bundled model server loads (services/serving/modelserver/loaders.py).
SUPPORTED_FORMATS = (
    "sklearn",
    "xgboost",
    "lightgbm",
    "onnx",
    "pytorch",
    "huggingface",
    "python",
)
#: KServe formats refused, and why: each needs a large runtime this platform does not run.
UNSUPPORTED_FORMATS = {
    "tensorflow": "TensorFlow models need TensorFlow Serving or the tensorflow package "
    "(over 500 MB), which the platform does not run; export the model to ONNX (tf2onnx) "
    "and serve it with modelFormat onnx",
    "pmml": "PMML needs a Java PMML evaluator (KServe's pmmlserver runs one on a JVM), "
    "which the platform does not run; export the model to ONNX or sklearn instead",
    "paddle": "Paddle models need the paddlepaddle runtime (hundreds of MB), which the "
    "platform does not run; export the model with paddle2onnx and serve it as onnx",
}
#: KServe v1beta1's per-framework predictor blocks (PredictorSpec); each is ``model`` with
#: the format of its name. KServe's defaulter rewrites them so; shipyard keeps them as
#: written (their field paths stay in messages) and reads them with predictor_model().
LEGACY_BLOCKS = (
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
)
#: The predictor's implementations, of which exactly one is given (KServe's one-of rule).
IMPLEMENTATIONS = ("model", *LEGACY_BLOCKS, "containers")
#: storageUri schemes served: volumes of the namespace, and downloads into its model cache.
STORAGE_SCHEMES = ("pvc://", "file://", "s3://", "http://", "https://")
#: Schemes KServe's storage initializer knows that shipyard does not download (yet).
REMOTE_SCHEMES = ("gs://", "hf://", "hdfs://", "webhdfs://", "oci://", "minio://")
SCHEMES_THAT_WORK = (
    "storageUri schemes that work: pvc://<claim>/<path>, file://<path inside a volume of the "
    "namespace>, s3://<platform bucket>/<key in the namespace's areas>, s3://<bucket>/<key> "
    "with spec.predictor.serviceAccountName (a Secret's credentials), http(s)://<host>/<file>"
)


class EnvVar(Spec):
    name: str
    value: str | None = None
    value_from: dict[str, Any] | None = Field(None, alias="valueFrom")


class ResourceRequirements(Spec):
    requests: dict[str, str | int | float] | None = None
    limits: dict[str, str | int | float] | None = None


class HTTPGetAction(Spec):
    path: str = "/"
    port: int | str | None = None
    scheme: str | None = None
    host: str | None = None
    http_headers: list[dict[str, Any]] | None = Field(None, alias="httpHeaders")


class Probe(Spec):
    http_get: HTTPGetAction | None = Field(None, alias="httpGet")
    tcp_socket: dict[str, Any] | None = Field(None, alias="tcpSocket")
    exec: dict[str, Any] | None = None
    initial_delay_seconds: int | None = Field(None, alias="initialDelaySeconds", ge=0)
    period_seconds: int | None = Field(None, alias="periodSeconds", ge=1)
    timeout_seconds: int | None = Field(None, alias="timeoutSeconds", ge=1)
    success_threshold: int | None = Field(None, alias="successThreshold", ge=1)
    failure_threshold: int | None = Field(None, alias="failureThreshold", ge=1)


class ContainerPort(Spec):
    container_port: int = Field(alias="containerPort", ge=1, le=65535)
    name: str | None = None
    protocol: str | None = None


class _ContainerFields(Spec):
    """The Kubernetes container fields KServe inlines into a model spec."""

    name: str | None = None
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    resources: ResourceRequirements | None = None
    ports: list[ContainerPort] | None = None
    readiness_probe: Probe | None = Field(None, alias="readinessProbe")
    liveness_probe: Probe | None = Field(None, alias="livenessProbe")
    working_dir: str | None = Field(None, alias="workingDir")
    image_pull_policy: str | None = Field(None, alias="imagePullPolicy")
    volume_mounts: list[dict[str, Any]] | None = Field(None, alias="volumeMounts")


class Container(_ContainerFields):
    name: str = "kserve-container"


class ModelFormat(Spec):
    name: str = Field(min_length=1)
    version: str | None = None


class PredictorExtension(_ContainerFields):
    """KServe's PredictorExtensionSpec: where the model is and which protocol serves it."""

    storage_uri: str | None = Field(None, alias="storageUri")
    runtime_version: str | None = Field(None, alias="runtimeVersion")
    protocol_version: Literal["v1", "v2"] | None = Field(None, alias="protocolVersion")


class ModelSpec(PredictorExtension):
    model_format: ModelFormat = Field(alias="modelFormat")
    runtime: str | None = None


class V2PredictorExtension(PredictorExtension):
    """A legacy block KServe serves over V2 unless told otherwise (onnx, triton,
    huggingface: KServe's defaulter sets their protocolVersion so)."""

    protocol_version: Literal["v1", "v2"] | None = Field("v2", alias="protocolVersion")


class LoggerSpec(Spec):
    url: str | None = None
    mode: Literal["all", "request", "response"] | None = None


#: KServe's batcher defaults (its agent's): 32 instances, 5000 ms, a 60 s predictor timeout.
BATCHER_DEFAULTS = {"maxBatchSize": 32, "maxLatency": 5000, "timeout": 60}


class BatcherSpec(Spec):
    """KServe's Batcher: ``maxBatchSize`` rows, ``maxLatency`` milliseconds, ``timeout``
    seconds; each defaults as KServe's (BATCHER_DEFAULTS) when left out."""

    max_batch_size: int | None = Field(None, alias="maxBatchSize", ge=1, le=65536)
    max_latency: int | None = Field(None, alias="maxLatency", ge=1, le=3_600_000)
    timeout: int | None = Field(None, ge=1)


def batcher_args(batcher: dict[str, Any] | None) -> list[str]:
    """The model server's arguments for ``spec.predictor.batcher`` (none without one)."""
    if batcher is None:
        return []
    size = batcher.get("maxBatchSize") or BATCHER_DEFAULTS["maxBatchSize"]
    latency = batcher.get("maxLatency") or BATCHER_DEFAULTS["maxLatency"]
    return ["--max-batch-size", str(size), "--max-latency-ms", str(latency)]


class PredictorSpec(Spec):
    model: ModelSpec | None = None
    # KServe's legacy per-framework blocks (LEGACY_BLOCKS), in its PredictorSpec's order.
    sklearn: PredictorExtension | None = None
    xgboost: PredictorExtension | None = None
    tensorflow: PredictorExtension | None = None
    pytorch: PredictorExtension | None = None
    triton: V2PredictorExtension | None = None
    onnx: V2PredictorExtension | None = None
    huggingface: V2PredictorExtension | None = None
    pmml: PredictorExtension | None = None
    lightgbm: PredictorExtension | None = None
    paddle: PredictorExtension | None = None
    containers: list[Container] | None = None
    # Component extension (ComponentExtensionSpec).
    min_replicas: int = Field(1, alias="minReplicas", ge=0)
    max_replicas: int | None = Field(None, alias="maxReplicas", ge=0)
    scale_target: int | None = Field(None, alias="scaleTarget", ge=1)
    scale_metric: Literal["cpu", "memory", "concurrency", "rps"] | None = Field(
        None, alias="scaleMetric"
    )
    container_concurrency: int | None = Field(None, alias="containerConcurrency", ge=0)
    timeout: int | None = Field(None, ge=1)
    canary_traffic_percent: int | None = Field(None, alias="canaryTrafficPercent", ge=0, le=100)
    logger: LoggerSpec | None = None
    batcher: BatcherSpec | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    deployment_strategy: dict[str, Any] | None = Field(None, alias="deploymentStrategy")
    # Pod-level fields KServe inlines; recorded for the Kubernetes runtime, unused locally.
    service_account_name: str | None = Field(None, alias="serviceAccountName")
    node_selector: dict[str, str] | None = Field(None, alias="nodeSelector")
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    image_pull_secrets: list[dict[str, Any]] | None = Field(None, alias="imagePullSecrets")
    volumes: list[dict[str, Any]] | None = None


class ComponentSpec(Spec):
    """KServe's TransformerSpec and ExplainerSpec with a custom container (its PodSpec and
    ComponentExtensionSpec): one ``kserve-container``, run beside the predictor
    (services/serving/components.py)."""

    containers: list[Container] = Field(min_length=1, max_length=1)
    min_replicas: int = Field(1, alias="minReplicas", ge=0)
    max_replicas: int | None = Field(None, alias="maxReplicas", ge=0)
    scale_target: int | None = Field(None, alias="scaleTarget", ge=1)
    scale_metric: Literal["cpu", "memory", "concurrency", "rps"] | None = Field(
        None, alias="scaleMetric"
    )
    container_concurrency: int | None = Field(None, alias="containerConcurrency", ge=0)
    timeout: int | None = Field(None, ge=1)
    logger: LoggerSpec | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    service_account_name: str | None = Field(None, alias="serviceAccountName")
    node_selector: dict[str, str] | None = Field(None, alias="nodeSelector")
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    image_pull_secrets: list[dict[str, Any]] | None = Field(None, alias="imagePullSecrets")
    volumes: list[dict[str, Any]] | None = None


class InferenceServiceSpec(Spec):
    predictor: PredictorSpec
    transformer: ComponentSpec | None = None
    explainer: ComponentSpec | None = None


def validate_inference_service(obj: dict[str, Any]) -> Sequence[Cause]:
    """Checks across fields, each with its field path (the spec model checked the shapes)."""
    causes: list[Cause] = []
    spec = obj.get("spec") or {}
    pred = spec.get("predictor") or {}
    for part in ("transformer", "explainer"):
        component = spec.get(part) or {}
        if component.get("minReplicas", 1) == 0:
            causes.append(
                Cause(
                    f"spec.{part}.minReplicas",
                    f"a {part} does not scale to zero here (only the predictor does)",
                    "FieldValueNotSupported",
                )
            )
    for part in ("predictor", "transformer", "explainer"):
        component = spec.get(part) or {}
        min_r, max_r = component.get("minReplicas", 1), component.get("maxReplicas")
        if max_r not in (None, 0) and max_r < min_r:
            causes.append(
                Cause(f"spec.{part}.maxReplicas", f"must be >= minReplicas ({min_r}), got {max_r}")
            )
    given = [k for k in IMPLEMENTATIONS if pred.get(k)]
    if len(given) != 1:
        causes.append(
            Cause(
                "spec.predictor",
                f"exactly one of [{', '.join(IMPLEMENTATIONS)}] must be specified "
                f"(got {', '.join(given) or 'none'})",
                "FieldValueRequired" if not given else "FieldValueInvalid",
            )
        )
    if pred.get("batcher") is not None and pred.get("containers") is not None:
        causes.append(
            Cause(
                "spec.predictor.batcher",
                "batching is done by the platform's model server, so it needs a model "
                "(spec.predictor.model), not custom containers",
                "FieldValueNotSupported",
            )
        )
    if pred.get("containers") is not None and len(pred["containers"]) != 1:
        causes.append(
            Cause(
                "spec.predictor.containers",
                "exactly one container is supported (transformers are separate)",
            )
        )
    found = predictor_model(pred) if len(given) == 1 else None
    if found is not None:
        key, block, fmt = found
        path = f"spec.predictor.{key}"
        if not block.get("command") and not block.get("runtime"):
            causes += _format_causes(path, key, fmt)
        uri = block.get("storageUri")
        if not uri:
            causes.append(Cause(f"{path}.storageUri", "Required value", "FieldValueRequired"))
        else:
            causes += _storage_uri_causes(
                f"{path}.storageUri",
                uri,
                obj["metadata"]["namespace"],
                credentials=bool(pred.get("serviceAccountName")),
            )
    causes += host_path_causes(spec, "spec")
    return causes


def predictor_model(predictor: dict[str, Any]) -> tuple[str, dict[str, Any], str] | None:
    """(its field, the model block, its format) of a predictor that serves a model: ``model``
    with its ``modelFormat.name``, or a legacy block with the format of its name, as KServe
    reads ``spec.predictor.xgboost`` as ``model`` with ``modelFormat: {name: xgboost}``.
    None for custom ``containers``."""
    block = predictor.get("model")
    if block:
        return "model", block, str((block.get("modelFormat") or {}).get("name") or "").lower()
    for key in LEGACY_BLOCKS:
        if predictor.get(key):
            return key, predictor[key], key
    return None


def _format_causes(path: str, key: str, fmt: str) -> list[Cause]:
    """A model format refused outright (a block with its own ``command`` or a named
    ``runtime`` may name any: that server is the user's). Any other format is served by a
    ServingRuntime that lists it, else gets KServe's NoSupportingRuntime condition
    (services/serving/runtimes.py)."""
    field = f"{path}.modelFormat.name" if key == "model" else path
    if fmt in SUPPORTED_FORMATS or fmt not in UNSUPPORTED_FORMATS:
        return []
    why = UNSUPPORTED_FORMATS[fmt]
    return [
        Cause(
            field,
            f"model format {fmt!r} is not supported: {why}. Supported formats: "
            f"{', '.join(SUPPORTED_FORMATS)} (or bring a server: spec.predictor.containers)",
            "FieldValueNotSupported",
        )
    ]


def _storage_uri_causes(
    field: str, uri: str, namespace: str, *, credentials: bool = False
) -> list[Cause]:
    """What is wrong with a storageUri on its own (the admission hook checks the bucket and
    the volumes, which need the service's settings and runtime). With ``credentials`` (a
    serviceAccountName) an ``s3://`` URI may name any bucket: where it points is known only
    from the Secret, and the download applies the namespace's areas if that is the
    platform's own bucket."""
    scheme = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    if uri.startswith(REMOTE_SCHEMES):
        return [
            Cause(
                field, f"{scheme} is not supported; {SCHEMES_THAT_WORK}", "FieldValueNotSupported"
            )
        ]
    if not uri.startswith(STORAGE_SCHEMES):
        return [Cause(field, f"unknown scheme; {SCHEMES_THAT_WORK}", "FieldValueNotSupported")]
    if uri.startswith("file://") and not uri[len("file://") :].startswith("/"):
        return [Cause(field, "file:// needs an absolute path")]
    if uri.startswith("pvc://") and not uri[len("pvc://") :].split("/", 1)[0]:
        return [Cause(field, "pvc:// needs a claim name (pvc://<claim>/<path>)")]
    if uri.startswith("s3://"):
        _, _, rest = uri.partition("://")
        bucket, _, key = rest.partition("/")
        areas = ", ".join(f"s3://{bucket or '<bucket>'}/{p}" for p in namespace_prefixes(namespace))
        if credentials and bucket:
            return []
        if not bucket or not in_namespace_area(namespace, key.rstrip("/") or key):
            return [
                Cause(
                    field,
                    f"{key!r} is not in namespace {namespace!r}'s areas of the platform's "
                    f"bucket: a model is read only from {areas} (other buckets and "
                    "endpoints: spec.predictor.serviceAccountName, a ServiceAccount whose "
                    "Secret holds the credentials)",
                    "FieldValueForbidden",
                )
            ]
    if uri.startswith(("http://", "https://")):
        problem = http_uri_problem(uri)
        if problem is not None:
            return [Cause(field, f"{problem}")]
    return []


INFERENCE_SERVICE = ResourceKind(
    **catalog.INFERENCE_SERVICE.resource_kind_fields(),
    spec_model=InferenceServiceSpec,
    finalizer="inferenceservice.finalizers",
    validate=validate_inference_service,
)

# core/v1 Secret and ServiceAccount: served here because storageUri credentials are their one
# consumer today (services/serving/corev1.py); a service that needs one later reads it
# through the API. Secret values stay out of events, and reading them takes ``edit``.
SECRET = ResourceKind(
    **catalog.SECRET.resource_kind_fields(),
    spec_model=None,
    extra_top_level=("data", "stringData", "type", "immutable"),
    validate=corev1.validate_secret,
    read_role="edit",
    event_omit=("data", "stringData"),
)
SERVICE_ACCOUNT = ResourceKind(
    **catalog.SERVICE_ACCOUNT.resource_kind_fields(),
    spec_model=None,
    extra_top_level=("secrets", "imagePullSecrets", "automountServiceAccountToken"),
    validate=corev1.validate_service_account,
)

KINDS = (INFERENCE_SERVICE, SECRET, SERVICE_ACCOUNT)
