"""Kinds served by the AutoML service: Katib's kubeflow.org/v1beta1 Experiment, Trial, Suggestion.

Field names, defaults and enumerations follow Katib's Go types
(``pkg/apis/controller/{experiments,trials,suggestions}/v1beta1``). Every numeric value in
``feasibleSpace`` and ``algorithmSettings`` is a string, as in Katib. Defaults are applied by
the spec models (``parallelTrialCount: 3``, ``resumePolicy: Never``, metric strategies,
Job success/failure conditions, the StdOut collector); semantic checks live in
:mod:`services.automl.validation`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from services.automl import conditions, validation
from services.common import catalog
from services.common.resources import ResourceKind
from services.common.resources.kinds import Spec

SERVICE = catalog.EXPERIMENT.service
GROUP, VERSION = catalog.EXPERIMENT.group, catalog.EXPERIMENT.version
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
FINALIZER = "update-prometheus-metrics"  # Katib's experiment finalizer name

DEFAULT_JOB_SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
DEFAULT_JOB_FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
DEFAULT_METRICS_FILE = "/var/log/katib/metrics.log"
DEFAULT_TFEVENT_DIR = "/var/log/katib/tfevent/"


class NameValue(Spec):
    name: str
    value: str = ""


class MetricStrategy(Spec):
    name: str
    value: Literal["min", "max", "latest"]


class Objective(Spec):
    type: Literal["minimize", "maximize"] | None = None
    goal: float | None = None
    objective_metric_name: str = Field(alias="objectiveMetricName")
    additional_metric_names: list[str] | None = Field(None, alias="additionalMetricNames")
    metric_strategies: list[MetricStrategy] | None = Field(None, alias="metricStrategies")

    @model_validator(mode="after")
    def _default_strategies(self) -> Objective:
        # Katib's setDefaultObjective: the objective and every additional metric without a
        # strategy get min (minimize) or max (maximize); latest when no type is set.
        strategies = list(self.metric_strategies or [])
        named = {s.name for s in strategies}
        default: Literal["min", "max", "latest"] = (
            "min" if self.type == "minimize" else "max" if self.type == "maximize" else "latest"
        )
        for metric in [self.objective_metric_name, *(self.additional_metric_names or [])]:
            if metric not in named:
                strategies.append(MetricStrategy(name=metric, value=default))
                named.add(metric)
        self.metric_strategies = strategies
        return self


class FeasibleSpace(Spec):
    max: str | None = None
    min: str | None = None
    values: list[str] | None = Field(None, alias="list")
    step: str | None = None
    distribution: Literal["uniform", "logUniform", "normal", "logNormal"] | None = None


class ParameterSpec(Spec):
    name: str
    parameter_type: Literal["double", "int", "discrete", "categorical"] = Field(
        alias="parameterType"
    )
    feasible_space: FeasibleSpace = Field(alias="feasibleSpace")


class GraphConfig(Spec):
    num_layers: int | None = Field(None, alias="numLayers")
    input_sizes: list[int] | None = Field(None, alias="inputSizes")
    output_sizes: list[int] | None = Field(None, alias="outputSizes")


class Operation(Spec):
    operation_type: str | None = Field(None, alias="operationType")
    parameters: list[ParameterSpec] | None = None


class NasConfig(Spec):
    """Katib's NasConfig: the graph and the candidate operations (``services.automl.nas``)."""

    graph_config: GraphConfig | None = Field(None, alias="graphConfig")
    operations: list[Operation] | None = None


class AlgorithmSpec(Spec):
    algorithm_name: str = Field(alias="algorithmName")
    algorithm_settings: list[NameValue] | None = Field(None, alias="algorithmSettings")


class EarlyStoppingSpec(Spec):
    algorithm_name: str = Field(alias="algorithmName")
    algorithm_settings: list[NameValue] | None = Field(None, alias="algorithmSettings")


class TrialParameterSpec(Spec):
    name: str
    description: str | None = None
    reference: str


class ConfigMapSource(Spec):
    config_map_name: str | None = Field(None, alias="configMapName")
    config_map_namespace: str | None = Field(None, alias="configMapNamespace")
    template_path: str | None = Field(None, alias="templatePath")


class TrialTemplate(Spec):
    retain: bool | None = None
    trial_spec: dict[str, Any] | None = Field(None, alias="trialSpec")
    config_map: ConfigMapSource | None = Field(None, alias="configMap")
    trial_parameters: list[TrialParameterSpec] | None = Field(None, alias="trialParameters")
    primary_pod_labels: dict[str, str] | None = Field(None, alias="primaryPodLabels")
    primary_container_name: str | None = Field(None, alias="primaryContainerName")
    success_condition: str | None = Field(None, alias="successCondition")
    failure_condition: str | None = Field(None, alias="failureCondition")

    @model_validator(mode="after")
    def _default_conditions(self) -> TrialTemplate:
        # Katib's webhook: a Job's, or a Training Operator job's (services/automl/conditions.py)
        if self.trial_spec is not None:
            success, failure, labels = conditions.defaults(self.trial_spec.get("kind"))
            self.success_condition = self.success_condition or success
            self.failure_condition = self.failure_condition or failure
            self.primary_pod_labels = self.primary_pod_labels or labels
        return self


class FileSystemPath(Spec):
    path: str | None = None
    kind: Literal["File", "Directory"] | None = None
    format: Literal["TEXT", "JSON"] | None = None


class FilterSpec(Spec):
    metrics_format: list[str] | None = Field(None, alias="metricsFormat")


class SourceSpec(Spec):
    http_get: dict[str, Any] | None = Field(None, alias="httpGet")
    file_system_path: FileSystemPath | None = Field(None, alias="fileSystemPath")
    filter: FilterSpec | None = None


class CollectorSpec(Spec):
    kind: Literal[
        "StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "None", "Push"
    ] = "StdOut"
    custom_collector: dict[str, Any] | None = Field(None, alias="customCollector")


class MetricsCollectorSpec(Spec):
    source: SourceSpec | None = None
    collector: CollectorSpec | None = None

    @model_validator(mode="after")
    def _defaults(self) -> MetricsCollectorSpec:
        # Katib's setDefaultMetricsCollector.
        self.collector = self.collector or CollectorSpec()
        if self.collector.kind in ("File", "TensorFlowEvent"):
            self.source = self.source or SourceSpec()
            fsp = self.source.file_system_path = self.source.file_system_path or FileSystemPath()
            if self.collector.kind == "File":
                fsp.kind = fsp.kind or "File"
                fsp.path = fsp.path or DEFAULT_METRICS_FILE
                fsp.format = fsp.format or "TEXT"
            else:
                fsp.kind = fsp.kind or "Directory"
                fsp.path = fsp.path or DEFAULT_TFEVENT_DIR
        return self


class ExperimentSpec(Spec):
    parameters: list[ParameterSpec] | None = None
    objective: Objective | None = None
    algorithm: AlgorithmSpec | None = None
    early_stopping: EarlyStoppingSpec | None = Field(None, alias="earlyStopping")
    trial_template: TrialTemplate | None = Field(None, alias="trialTemplate")
    parallel_trial_count: int = Field(3, alias="parallelTrialCount")
    max_trial_count: int | None = Field(None, alias="maxTrialCount")
    max_failed_trial_count: int | None = Field(None, alias="maxFailedTrialCount")
    metrics_collector_spec: MetricsCollectorSpec = Field(
        default_factory=MetricsCollectorSpec, alias="metricsCollectorSpec"
    )
    nas_config: NasConfig | None = Field(None, alias="nasConfig")
    resume_policy: Literal["Never", "LongRunning", "FromVolume"] = Field(
        "Never", alias="resumePolicy"
    )


class ParameterAssignment(Spec):
    name: str
    value: str


class TrialSpec(Spec):
    objective: Objective | None = None
    parameter_assignments: list[ParameterAssignment] = Field(
        default_factory=list, alias="parameterAssignments"
    )
    early_stopping_rules: list[dict[str, Any]] | None = Field(None, alias="earlyStoppingRules")
    run_spec: dict[str, Any] | None = Field(None, alias="runSpec")
    metrics_collector: MetricsCollectorSpec = Field(
        default_factory=MetricsCollectorSpec, alias="metricsCollector"
    )
    primary_pod_labels: dict[str, str] | None = Field(None, alias="primaryPodLabels")
    primary_container_name: str | None = Field(None, alias="primaryContainerName")
    success_condition: str | None = Field(None, alias="successCondition")
    failure_condition: str | None = Field(None, alias="failureCondition")
    retain_run: bool | None = Field(None, alias="retainRun")
    labels: dict[str, str] | None = None


class SuggestionSpec(Spec):
    algorithm: AlgorithmSpec | None = None
    early_stopping: EarlyStoppingSpec | None = Field(None, alias="earlyStopping")
    requests: int = 0
    resume_policy: Literal["Never", "LongRunning", "FromVolume"] = Field(
        "Never", alias="resumePolicy"
    )


EXPERIMENT = ResourceKind(
    **catalog.EXPERIMENT.resource_kind_fields(),
    spec_model=ExperimentSpec,
    finalizer=FINALIZER,
    validate=validation.validate_experiment,
)
TRIAL = ResourceKind(
    **catalog.TRIAL.resource_kind_fields(),
    spec_model=TrialSpec,
    validate=validation.validate_trial,
)
SUGGESTION = ResourceKind(**catalog.SUGGESTION.resource_kind_fields(), spec_model=SuggestionSpec)

# core/v1 ConfigMap: served here because Katib trial templates are its one consumer today
# (``trialTemplate.configMap``); a service that needs one later reads it through the API.
CONFIG_MAP = ResourceKind(
    **catalog.CONFIG_MAP.resource_kind_fields(),
    spec_model=None,
    extra_top_level=("data", "binaryData", "immutable"),
    validate=validation.validate_config_map,
)

KINDS = (EXPERIMENT, TRIAL, SUGGESTION, CONFIG_MAP)
