"""Every kind the platform serves, as data: the one source of truth for their names.

The services build their :class:`~services.common.resources.ResourceKind` from an entry here
(adding the spec model, validator and finalizer, which need pydantic), the CLI resolves
``pvc`` or ``wf`` with it, and the gateway answers Kubernetes discovery (``/api/v1``,
``/apis/{group}/{version}``) from it. This module imports nothing but the standard library,
so the CLI and the gateway can know the kinds without loading any service's code.

Names, short names and printer columns follow the upstream projects' definitions: core/v1
(PersistentVolumeClaim, ConfigMap, Secret, ServiceAccount), Kubeflow's Notebook and Profile
CRDs, Katib's, Argo Workflows' and KServe's CRDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: What the generic resource API (services.common.resources.api) serves for every kind.
RESOURCE_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")
#: An object's ``/status``: written by the platform's controllers, readable by its users.
STATUS_VERBS = ("get", "patch", "update")


@dataclass(frozen=True)
class PrinterColumn:
    """A column of ``shipyard get`` (like a CRD's additionalPrinterColumns).

    ``path`` is a dotted path into the object (``status.phase``,
    ``metadata.labels.app``); ``wide`` columns show only with ``-o wide``.
    """

    name: str
    path: str
    wide: bool = False


class KindNames:
    """The names and API paths that follow from a kind's group, version, kind and plural.

    Shared by :class:`KindInfo` and :class:`~services.common.resources.ResourceKind`.
    """

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def base_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def collection_path(self, namespace: str | None) -> str:
        if self.namespaced and namespace is not None:
            return f"{self.base_path}/namespaces/{namespace}/{self.plural}"
        return f"{self.base_path}/{self.plural}"


@dataclass(frozen=True)
class KindInfo(KindNames):
    """One kind: its names, scope, who serves it and what can be done with it."""

    group: str  # "" for the core group (served under /api/v1)
    version: str
    kind: str
    plural: str
    service: str  # the owning service, or "gateway"
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    columns: tuple[PrinterColumn, ...] = ()
    verbs: tuple[str, ...] = RESOURCE_VERBS
    # Whether ``{plural}/status`` is a subresource (as for a CRD with ``subresources.status``).
    status: bool = True
    # The kind this one is another name for (KFServing's group for KServe's objects).
    alias_of: KindInfo | None = None

    def resource_kind_fields(self) -> dict[str, Any]:
        """The ``ResourceKind`` fields fixed here: ``ResourceKind(**fields, spec_model=...)``."""
        return {
            "group": self.group,
            "version": self.version,
            "kind": self.kind,
            "plural": self.plural,
            "service": self.service,
            "namespaced": self.namespaced,
            "short_names": self.short_names,
            "columns": self.columns,
        }


_KUBEFLOW = ("all", "kubeflow")

# ---- notebook: core/v1 PersistentVolumeClaim, kubeflow.org/v1 Notebook -----------------------

PVC = KindInfo(
    "",
    "v1",
    "PersistentVolumeClaim",
    "persistentvolumeclaims",
    "notebook",
    short_names=("pvc",),
    columns=(
        PrinterColumn("STATUS", "status.phase"),
        PrinterColumn("CAPACITY", "status.capacity.storage"),
        PrinterColumn("ACCESS MODES", "spec.accessModes"),
    ),
)
NOTEBOOK = KindInfo(
    "kubeflow.org",
    "v1",
    "Notebook",
    "notebooks",
    "notebook",
    short_names=("nb",),
    categories=_KUBEFLOW,
    columns=(
        PrinterColumn("READY", "status.readyReplicas"),
        PrinterColumn("URL", "status.url", wide=True),
    ),
)
# Kubeflow's admission-webhook CRD: env, volumes and annotations for the notebooks it selects.
PODDEFAULT = KindInfo(
    "kubeflow.org",
    "v1alpha1",
    "PodDefault",
    "poddefaults",
    "notebook",
    categories=("kubeflow",),
    status=False,
    columns=(PrinterColumn("DESCRIPTION", "spec.desc"),),
)

# ---- automl: Katib's kubeflow.org/v1beta1, and core/v1 ConfigMap (trial templates) -----------

_CONDITION = PrinterColumn("STATUS", "status.conditions[-1].type")
_REASON = PrinterColumn("REASON", "status.conditions[-1].reason", wide=True)

EXPERIMENT = KindInfo(
    "kubeflow.org",
    "v1beta1",
    "Experiment",
    "experiments",
    "automl",
    short_names=("exp", "experiment"),
    categories=_KUBEFLOW,
    columns=(
        _CONDITION,
        PrinterColumn("TRIALS", "status.trials"),
        PrinterColumn("SUCCEEDED", "status.trialsSucceeded"),
        PrinterColumn("RUNNING", "status.trialsRunning"),
        PrinterColumn("BEST-TRIAL", "status.currentOptimalTrial.bestTrialName"),
        PrinterColumn("OBJECTIVE", "status.currentOptimalTrial.observation.metrics[0].latest"),
        PrinterColumn("PARAMETERS", "status.currentOptimalTrial.parameterSummary"),
        _REASON,
    ),
)
TRIAL = KindInfo(
    "kubeflow.org",
    "v1beta1",
    "Trial",
    "trials",
    "automl",
    categories=_KUBEFLOW,
    columns=(
        PrinterColumn("TYPE", "status.conditions[-1].type"),
        PrinterColumn("STATUS", "status.conditions[-1].status"),
        PrinterColumn("PARAMETERS", "status.parameterSummary"),
        PrinterColumn("OBJECTIVE", "status.objectiveValue"),
        _REASON,
    ),
)
SUGGESTION = KindInfo(
    "kubeflow.org",
    "v1beta1",
    "Suggestion",
    "suggestions",
    "automl",
    categories=_KUBEFLOW,
    columns=(
        PrinterColumn("TYPE", "status.conditions[-1].type"),
        PrinterColumn("REQUESTED", "spec.requests"),
        PrinterColumn("ASSIGNED", "status.suggestionCount"),
    ),
)
CONFIG_MAP = KindInfo(
    "", "v1", "ConfigMap", "configmaps", "automl", short_names=("cm",), status=False
)
# The Training Operator's PyTorchJob: served by automl, whose trials are its main consumer
# (docs/architecture.md, "Training jobs"). STATE as the CRD's printer column shows it.
PYTORCHJOB = KindInfo(
    "kubeflow.org",
    "v1",
    "PyTorchJob",
    "pytorchjobs",
    "automl",
    categories=("kubeflow",),
    columns=(PrinterColumn("STATE", "status.conditions[-1].type"),),
)

# ---- pipeline: Argo's argoproj.io/v1alpha1 ----------------------------------------------------

WORKFLOW = KindInfo(
    "argoproj.io",
    "v1alpha1",
    "Workflow",
    "workflows",
    "pipeline",
    short_names=("wf",),
    categories=("all", "argo"),
    columns=(
        PrinterColumn("STATUS", "status.phase"),
        PrinterColumn("PROGRESS", "status.progress"),
        PrinterColumn("MESSAGE", "status.message", wide=True),
    ),
)
CRON_WORKFLOW = KindInfo(
    "argoproj.io",
    "v1alpha1",
    "CronWorkflow",
    "cronworkflows",
    "pipeline",
    short_names=("cwf", "cronwf"),
    categories=("all", "argo"),
    columns=(
        PrinterColumn("SCHEDULE", "spec.schedule"),
        PrinterColumn("SUSPENDED", "spec.suspend"),
    ),
)
WORKFLOW_TEMPLATE = KindInfo(
    "argoproj.io",
    "v1alpha1",
    "WorkflowTemplate",
    "workflowtemplates",
    "pipeline",
    short_names=("wftmpl",),
    categories=("argo",),
)

# ---- serving: KServe's serving.kserve.io/v1beta1, core/v1 Secret and ServiceAccount -----------

INFERENCE_SERVICE = KindInfo(
    "serving.kserve.io",
    "v1beta1",
    "InferenceService",
    "inferenceservices",
    "serving",
    short_names=("isvc",),
    categories=_KUBEFLOW,
    columns=(
        PrinterColumn("URL", "status.url"),
        PrinterColumn("READY", "status.conditions[type=Ready].status"),
        PrinterColumn("PREV", "status.components.predictor.traffic[tag=prev].percent"),
        # KServe's: the share of the latest revision, 100 when nothing is split.
        PrinterColumn("LATEST", "status.components.predictor.traffic[latestRevision=True].percent"),
        PrinterColumn(
            "PREVROLLEDOUTREVISION",
            "status.components.predictor.previousRolledoutRevision",
            wide=True,
        ),
        PrinterColumn(
            "LATESTREADYREVISION", "status.components.predictor.latestReadyRevision", wide=True
        ),
    ),
)
# KFServing's group, as the seed names it: the same objects under another apiVersion. No
# short name or category of its own, so ``isvc`` and ``get all`` mean KServe's, once.
KFSERVING_INFERENCE_SERVICE = KindInfo(
    "serving.kubeflow.org",
    "v1beta1",
    "InferenceService",
    "inferenceservices",
    "serving",
    columns=INFERENCE_SERVICE.columns,
    alias_of=INFERENCE_SERVICE,
)
# KServe's runtimes (serving.kserve.io/v1alpha1): which server runs a model format. Columns
# as KServe's CRDs print them (the first format and container: a path here has no ``[*]``).
_RUNTIME_COLUMNS = (
    PrinterColumn("DISABLED", "spec.disabled"),
    PrinterColumn("MODELTYPE", "spec.supportedModelFormats[0].name"),
    PrinterColumn("CONTAINERS", "spec.containers[0].name"),
)
SERVING_RUNTIME = KindInfo(
    "serving.kserve.io",
    "v1alpha1",
    "ServingRuntime",
    "servingruntimes",
    "serving",
    categories=_KUBEFLOW,
    columns=_RUNTIME_COLUMNS,
)
CLUSTER_SERVING_RUNTIME = KindInfo(
    "serving.kserve.io",
    "v1alpha1",
    "ClusterServingRuntime",
    "clusterservingruntimes",
    "serving",
    namespaced=False,
    categories=_KUBEFLOW,
    columns=_RUNTIME_COLUMNS,
)
SECRET = KindInfo(
    "",
    "v1",
    "Secret",
    "secrets",
    "serving",
    status=False,
    columns=(PrinterColumn("TYPE", "type"),),
)
SERVICE_ACCOUNT = KindInfo(
    "", "v1", "ServiceAccount", "serviceaccounts", "serving", short_names=("sa",), status=False
)
# KServe's InferenceGraph (serving.kserve.io/v1alpha1): a router chaining InferenceServices
# of its namespace (services/serving/graph.py), served at /graphs/{namespace}/{name}.
INFERENCE_GRAPH = KindInfo(
    "serving.kserve.io",
    "v1alpha1",
    "InferenceGraph",
    "inferencegraphs",
    "serving",
    short_names=("ig",),
    categories=_KUBEFLOW,
    columns=(
        PrinterColumn("URL", "status.url"),
        PrinterColumn("READY", "status.conditions[type=Ready].status"),
    ),
)

# ---- gateway: kubeflow.org/v1 Profile (cluster-scoped, gateway.profiles_api) -------------------

PROFILE = KindInfo(
    "kubeflow.org",
    "v1",
    "Profile",
    "profiles",
    "gateway",
    namespaced=False,
    categories=("kubeflow",),
    verbs=("create", "delete", "get", "list", "patch"),
    status=False,
    columns=(PrinterColumn("OWNER", "spec.owner.name"),),
)

#: Every kind, each service's together; where two share a name (the InferenceService alias)
#: the first is the one a bare name means.
ALL_KINDS: tuple[KindInfo, ...] = (
    PVC,
    NOTEBOOK,
    EXPERIMENT,
    TRIAL,
    SUGGESTION,
    CONFIG_MAP,
    PYTORCHJOB,
    # The notebook service's too, listed after Katib's so that kubeflow.org's versions come
    # in Kubernetes' priority order (v1, v1beta1, v1alpha1): discovery prefers the first.
    PODDEFAULT,
    WORKFLOW,
    CRON_WORKFLOW,
    WORKFLOW_TEMPLATE,
    INFERENCE_SERVICE,
    KFSERVING_INFERENCE_SERVICE,
    SECRET,
    SERVICE_ACCOUNT,
    SERVING_RUNTIME,
    CLUSTER_SERVING_RUNTIME,
    INFERENCE_GRAPH,
    PROFILE,
)


def kinds_of(service: str) -> tuple[KindInfo, ...]:
    """The kinds one service owns (aliases left out: they are the same objects)."""
    return tuple(k for k in ALL_KINDS if k.service == service and k.alias_of is None)


def group_versions() -> dict[str, list[str]]:
    """Each API group (``""`` for core) and its versions, in the order first served."""
    groups: dict[str, list[str]] = {}
    for k in ALL_KINDS:
        versions = groups.setdefault(k.group, [])
        if k.version not in versions:
            versions.append(k.version)
    return groups
