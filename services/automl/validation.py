"""Semantic checks on an Experiment beyond its schema, with Katib's rules and field paths.

Runs on create and update (``ResourceKind.validate``); every problem becomes a cause
such as ``spec.parameters[1].feasibleSpace.min: must be < max`` in a 422 Status. Kept free
of Optuna imports: the CLI imports the kinds too.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable
from typing import Any

from services.automl import conditions, enas, nas, pbt
from services.common.errors import Cause
from services.common.hostpath import host_path_causes
from services.common.resources.names import check_config_key
from services.common.tenant_regex import PatternError, compile_pattern

# Katib's algorithm settings, by algorithm (suggestion services in pkg/suggestion/v1beta1).
ALGORITHM_SETTINGS: dict[str, tuple[str, ...]] = {
    "random": ("random_state",),
    "grid": ("random_state",),
    "tpe": ("n_EI_candidates", "random_state", "gamma", "prior_weight"),
    "multivariate-tpe": ("n_ei_candidates", "random_state", "n_startup_trials"),
    "cmaes": ("random_state", "sigma", "restart_strategy"),
    "sobol": (),
    "bayesianoptimization": (
        "base_estimator",
        "n_initial_points",
        "acq_func",
        "acq_optimizer",
        "random_state",
    ),
    "hyperband": ("resource_name", "eta", "r_l"),
    "pbt": pbt.SETTINGS,
    "darts": tuple(nas.DARTS_DEFAULTS),
    "enas": tuple(enas.DEFAULTS),
}
NAS_ALGORITHMS = ("darts", "enas")
INT_SETTINGS = {
    "random_state",
    "n_EI_candidates",
    "n_ei_candidates",
    "n_startup_trials",
    "n_initial_points",
}
FLOAT_SETTINGS = {"gamma", "prior_weight", "sigma", "eta", "r_l"}
CHOICE_SETTINGS = {
    "restart_strategy": ("none", "ipop", "bipop"),
    "base_estimator": ("GP",),
    "acq_func": ("gp_hedge", "LCB", "EI", "PI"),
    "acq_optimizer": ("auto", "sampling", "lbfgs"),
}
EARLY_STOPPING_SETTINGS = {"medianstop": ("min_trials_required", "start_step")}
SUPPORTED_COLLECTORS = ("StdOut", "File", "TensorFlowEvent", "Custom", "Push", "None")
TRIAL_PARAM_RE = re.compile(r"\$\{trialParameters\.([^}]+)\}")
META_REFERENCE_RE = re.compile(
    r"^\$\{trialSpec\.(Name|Namespace|Kind|APIVersion|Labels\[[^\]]+\]|Annotations\[[^\]]+\])\}$"
)


def _float(value: str | None) -> float | None:
    try:
        out = float(value) if value is not None else None
    except ValueError:
        return None
    return out if out is not None and math.isfinite(out) else None


def settings_map(settings: Iterable[dict[str, Any]] | None) -> dict[str, str]:
    return {s["name"]: str(s.get("value", "")) for s in settings or []}


def check_algorithm(
    algorithm: dict[str, Any] | None, parameters: list[dict[str, Any]]
) -> list[Cause]:
    if not algorithm:
        return [Cause("spec.algorithm", "Required value", "FieldValueRequired")]
    name = algorithm.get("algorithmName", "")
    if name not in ALGORITHM_SETTINGS:
        return [
            Cause(
                "spec.algorithm.algorithmName",
                f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHM_SETTINGS)}",
                "FieldValueNotSupported",
            )
        ]
    if name == "pbt":
        return pbt.check_settings(algorithm.get("algorithmSettings"))
    if name in NAS_ALGORITHMS:
        return []  # checked with the nasConfig (nas.check_darts, nas.check_enas)
    causes: list[Cause] = []
    valid = ALGORITHM_SETTINGS[name]
    for i, setting in enumerate(algorithm.get("algorithmSettings") or []):
        path = f"spec.algorithm.algorithmSettings[{i}]"
        key, value = setting["name"], str(setting.get("value", ""))
        if key not in valid:
            causes.append(
                Cause(
                    f"{path}.name",
                    f"unknown setting {key!r} for algorithm {name}; "
                    f"valid: {', '.join(valid) or '(none)'}",
                    "FieldValueNotSupported",
                )
            )
        elif key in INT_SETTINGS:
            try:
                ok = int(value) >= 0 if key == "random_state" else int(value) > 0
            except ValueError:
                ok = False
            if not ok:
                causes.append(Cause(f"{path}.value", f"{key} must be a positive integer"))
        elif key in FLOAT_SETTINGS:
            number = _float(value)
            if number is None or number <= 0 or (key == "eta" and number <= 1):
                causes.append(
                    Cause(
                        f"{path}.value", f"{key} must be a number > {'1' if key == 'eta' else '0'}"
                    )
                )
        elif key in CHOICE_SETTINGS and value not in CHOICE_SETTINGS[key]:
            causes.append(
                Cause(f"{path}.value", f"{key} must be one of {', '.join(CHOICE_SETTINGS[key])}")
            )
    settings = settings_map(algorithm.get("algorithmSettings"))
    if name == "grid":
        for i, p in enumerate(parameters):
            if p["parameterType"] == "double" and not p["feasibleSpace"].get("step"):
                causes.append(
                    Cause(
                        f"spec.parameters[{i}].feasibleSpace.step",
                        "grid needs a step for double parameters",
                    )
                )
    if name == "hyperband":
        names = {p["name"] for p in parameters}
        if settings.get("resource_name") not in names:
            causes.append(
                Cause(
                    "spec.algorithm.algorithmSettings",
                    "hyperband needs resource_name naming one of the parameters",
                )
            )
        if "r_l" not in settings:
            causes.append(
                Cause(
                    "spec.algorithm.algorithmSettings", "hyperband needs r_l (the maximum resource)"
                )
            )
    return causes


def _check_parameter(at: str, p: dict[str, Any]) -> list[Cause]:
    path = f"{at}.feasibleSpace"
    fs, ptype = p["feasibleSpace"], p["parameterType"]
    causes: list[Cause] = []
    if ptype in ("double", "int"):
        if fs.get("list"):
            causes.append(
                Cause(f"{path}.list", f"a {ptype} parameter takes min and max, not a list")
            )
        parse = (lambda v: int(v)) if ptype == "int" else (lambda v: _float(v))
        bounds = {}
        for key in ("min", "max"):
            raw = fs.get(key)
            if raw is None:
                causes.append(Cause(f"{path}.{key}", "Required value", "FieldValueRequired"))
                continue
            try:
                bounds[key] = parse(raw)
            except ValueError:
                bounds[key] = None
            if bounds[key] is None:
                causes.append(Cause(f"{path}.{key}", f"{raw!r} is not a valid {ptype}"))
        lo, hi = bounds.get("min"), bounds.get("max")
        if lo is not None and hi is not None and lo >= hi:
            causes.append(Cause(f"{path}.min", "must be < max"))
        if fs.get("step") is not None:
            step = _float(fs["step"])
            if step is None or step <= 0:
                causes.append(Cause(f"{path}.step", "must be a number > 0"))
        if fs.get("distribution") in ("logUniform", "logNormal") and lo is not None and lo <= 0:
            causes.append(Cause(f"{path}.min", "must be > 0 for a log distribution"))
    else:
        values = fs.get("list") or []
        if not values:
            causes.append(
                Cause(f"{path}.list", "Required value: a non-empty list", "FieldValueRequired")
            )
        if fs.get("min") is not None or fs.get("max") is not None:
            causes.append(Cause(path, f"a {ptype} parameter takes a list, not min/max"))
        if ptype == "discrete":
            for j, v in enumerate(values):
                if _float(v) is None:
                    causes.append(Cause(f"{path}.list[{j}]", f"{v!r} is not a number"))
        if len(set(values)) != len(values):
            causes.append(Cause(f"{path}.list", "values must be unique"))
    return causes


def _check_template(spec: dict[str, Any], names: set[str]) -> list[Cause]:
    tt = spec.get("trialTemplate")
    if not tt:
        return [Cause("spec.trialTemplate", "Required value", "FieldValueRequired")]
    causes: list[Cause] = []
    has_spec, has_cm = tt.get("trialSpec") is not None, tt.get("configMap") is not None
    algorithm = (spec.get("algorithm") or {}).get("algorithmName")
    outputs = {"darts": nas.DARTS_OUTPUTS, "enas": nas.ENAS_OUTPUTS}
    nas_outputs = outputs.get(algorithm or "", ()) if spec.get("nasConfig") else ()
    if has_spec == has_cm:
        causes.append(
            Cause("spec.trialTemplate", "exactly one of trialSpec or configMap is required")
        )
    for i, tp in enumerate(tt.get("trialParameters") or []):
        ref = tp["reference"]
        if ref not in names and not META_REFERENCE_RE.match(ref) and ref not in nas_outputs:
            causes.append(
                Cause(
                    f"spec.trialTemplate.trialParameters[{i}].reference",
                    f"{ref!r} is neither a parameter name nor a ${{trialSpec.*}} "
                    "metadata reference",
                )
            )
    if has_spec:
        causes += check_trial_spec(tt["trialSpec"], tt, "spec.trialTemplate.trialSpec")
    for field in ("successCondition", "failureCondition"):
        try:
            if tt.get(field):
                conditions.check(tt[field])
        except conditions.ConditionError as exc:
            causes.append(Cause(f"spec.trialTemplate.{field}", f"Invalid value: {exc}"))
    if has_cm and not (
        tt["configMap"].get("configMapName") and tt["configMap"].get("templatePath")
    ):
        causes.append(
            Cause("spec.trialTemplate.configMap", "configMapName and templatePath are required")
        )
    return causes


def check_trial_spec(trial_spec: Any, template: dict[str, Any], path: str) -> list[Cause]:
    """A trial template's Job (inline, or read from a ConfigMap), found at ``path``."""
    if not isinstance(trial_spec, dict):
        return [Cause(path, "must be a Kubernetes object (a batch/v1 Job)")]
    causes = check_trial_kind(trial_spec, path)
    causes += host_path_causes(trial_spec, path)  # whatever the kind, wherever its pods are
    declared = {tp["name"] for tp in template.get("trialParameters") or []}
    used = set(TRIAL_PARAM_RE.findall(json.dumps(trial_spec)))
    for missing in sorted(used - declared):
        causes.append(
            Cause(
                "spec.trialTemplate.trialParameters",
                f"${{trialParameters.{missing}}} is used in the trial template but not "
                "declared in trialParameters",
            )
        )
    return causes


def check_trial_kind(trial_spec: dict[str, Any], path: str) -> list[Cause]:
    """batch/v1 Job and kubeflow.org/v1 PyTorchJob run here; say so for TFJob and others."""
    kind, api = trial_spec.get("kind"), trial_spec.get("apiVersion")
    if kind == "PyTorchJob" and api == "kubeflow.org/v1":
        from services.automl.training.validation import check_trial_job

        return check_trial_job(trial_spec, path)
    if kind == "Job" and api in ("batch/v1", None):
        containers = (((trial_spec.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
            "containers"
        )
        if not containers:
            return [
                Cause(
                    f"{path}.spec.template.spec.containers",
                    "Required value: a Job needs at least one container",
                    "FieldValueRequired",
                )
            ]
        return []
    return [
        Cause(
            f"{path}.kind",
            f"{api}/{kind} is not supported by the local runtime; use a batch/v1 Job or a "
            "kubeflow.org/v1 PyTorchJob",
            "FieldValueNotSupported",
        )
    ]


def validate_experiment(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    if not spec.get("objective"):
        causes.append(Cause("spec.objective", "Required value", "FieldValueRequired"))
    elif not spec["objective"].get("type"):
        causes.append(
            Cause("spec.objective.type", "must be minimize or maximize", "FieldValueRequired")
        )
    params = spec.get("parameters") or []
    causes += _check_search_space(spec)
    seen: set[str] = set()
    for i, p in enumerate(params):
        if p["name"] in seen:
            causes.append(
                Cause(
                    f"spec.parameters[{i}].name",
                    f"duplicate name {p['name']!r}",
                    "FieldValueDuplicate",
                )
            )
        seen.add(p["name"])
        causes += _check_parameter(f"spec.parameters[{i}]", p)
    causes += check_algorithm(spec.get("algorithm"), params)
    parallel, max_trials = spec.get("parallelTrialCount"), spec.get("maxTrialCount")
    max_failed = spec.get("maxFailedTrialCount")
    if parallel is not None and parallel <= 0:
        causes.append(Cause("spec.parallelTrialCount", "must be greater than 0"))
    if max_trials is not None and max_trials <= 0:
        causes.append(Cause("spec.maxTrialCount", "must be greater than 0"))
    if max_failed is not None and max_failed < 0:
        causes.append(Cause("spec.maxFailedTrialCount", "must be greater than or equal to 0"))
    if max_failed is not None and max_trials is not None and max_failed > max_trials:
        causes.append(
            Cause("spec.maxFailedTrialCount", "must be less than or equal to spec.maxTrialCount")
        )
    if parallel is not None and max_trials is not None and parallel > max_trials:
        causes.append(
            Cause("spec.parallelTrialCount", "must be less than or equal to spec.maxTrialCount")
        )
    es = spec.get("earlyStopping")
    if es:
        valid = EARLY_STOPPING_SETTINGS.get(es["algorithmName"])
        if valid is None:
            causes.append(
                Cause(
                    "spec.earlyStopping.algorithmName",
                    f"unknown early stopping algorithm {es['algorithmName']!r}; "
                    f"valid: {', '.join(EARLY_STOPPING_SETTINGS)}",
                    "FieldValueNotSupported",
                )
            )
        else:
            for i, s in enumerate(es.get("algorithmSettings") or []):
                path = f"spec.earlyStopping.algorithmSettings[{i}]"
                if s["name"] not in valid:
                    causes.append(
                        Cause(
                            f"{path}.name",
                            f"unknown setting {s['name']!r}; valid: {', '.join(valid)}",
                            "FieldValueNotSupported",
                        )
                    )
                    continue
                try:
                    ok = int(s.get("value", "")) >= 1
                except ValueError:
                    ok = False
                if not ok:
                    causes.append(Cause(f"{path}.value", f"{s['name']} must be an integer >= 1"))
    kind = ((spec.get("metricsCollectorSpec") or {}).get("collector") or {}).get("kind")
    if kind and kind not in SUPPORTED_COLLECTORS and kind != "PrometheusMetric":
        causes.append(
            Cause(
                "spec.metricsCollectorSpec.collector.kind",
                f"{kind} is not supported by shipyard; use one of "
                f"{', '.join(SUPPORTED_COLLECTORS)}",
                "FieldValueNotSupported",
            )
        )
    causes += metrics_format_causes(spec.get("metricsCollectorSpec"), "spec.metricsCollectorSpec")
    causes += custom_collector_causes(spec.get("metricsCollectorSpec") or {})
    causes += _check_template(spec, seen)
    return causes


def _check_search_space(spec: dict[str, Any]) -> list[Cause]:
    """Katib: exactly one of ``parameters`` and ``nasConfig``; NAS algorithms need the one,
    the others the other."""
    params, nas_config = spec.get("parameters") or [], spec.get("nasConfig")
    algorithm = (spec.get("algorithm") or {}).get("algorithmName")
    if params and nas_config:
        return [Cause("spec", "only one of spec.parameters and spec.nasConfig can be specified")]
    if not params and not nas_config:
        return [
            Cause(
                "spec.parameters",
                "Required value: spec.parameters or spec.nasConfig must be specified",
                "FieldValueRequired",
            )
        ]
    if not nas_config:
        if algorithm in NAS_ALGORITHMS:
            return [
                Cause(
                    "spec.nasConfig",
                    f"Required value: {algorithm} searches an architecture in spec.nasConfig",
                    "FieldValueRequired",
                )
            ]
        return []
    causes = nas.check_nas_config(nas_config, _check_parameter)
    if algorithm == "darts":
        causes += nas.check_darts(spec)
    elif algorithm == "enas":
        causes += nas.check_enas(spec)
    elif algorithm in ALGORITHM_SETTINGS:
        causes.append(
            Cause(
                "spec.algorithm.algorithmName",
                f"{algorithm} searches spec.parameters; for spec.nasConfig use one of "
                f"{', '.join(NAS_ALGORITHMS)}",
                "FieldValueNotSupported",
            )
        )
    return causes


PROMETHEUS_REFUSAL = (
    "PrometheusMetric is not supported by shipyard: it would scrape the trial's own "
    "/metrics port while the trial runs, and a local trial's ports are reachable only as a "
    "server's; write the metrics to stdout or a file (StdOut, File), or report them (Custom, "
    "Push)"
)


def custom_collector_causes(mc: dict[str, Any]) -> list[Cause]:
    """Katib: ``customCollector`` with kind Custom and only then; here it must also name a
    command (the local runtime runs no image entrypoint). PrometheusMetric: refused."""
    collector = mc.get("collector") or {}
    path = "spec.metricsCollectorSpec.collector"
    kind, custom = collector.get("kind"), collector.get("customCollector")
    if kind == "PrometheusMetric":
        return [Cause(f"{path}.kind", PROMETHEUS_REFUSAL, "FieldValueNotSupported")]
    if kind != "Custom":
        if custom is not None:
            return [Cause(f"{path}.customCollector", "only a Custom collector has one")]
        return []
    if not isinstance(custom, dict):
        return [Cause(f"{path}.customCollector", "Required value", "FieldValueRequired")]
    if not custom.get("command") and not custom.get("args"):
        return [
            Cause(
                f"{path}.customCollector.command",
                "Required value: the local runtime does not read the image's entrypoint",
                "FieldValueRequired",
            )
        ]
    return []


def metrics_format_causes(collector_spec: dict[str, Any] | None, path: str) -> list[Cause]:
    """``source.filter.metricsFormat``: tenant regexes, so RE2 must compile each (they are
    matched in linear time, see services/common/tenant_regex.py), with two groups."""
    source = (collector_spec or {}).get("source") or {}
    causes = []
    for i, regex in enumerate((source.get("filter") or {}).get("metricsFormat") or []):
        field = f"{path}.source.filter.metricsFormat[{i}]"
        try:
            if compile_pattern(regex).groups < 2:
                causes.append(Cause(field, "needs two groups: the metric name and its value"))
        except PatternError as exc:
            causes.append(Cause(field, f"invalid regular expression: {exc}"))
    return causes


CONFIG_MAP_MAX_BYTES = 1024 * 1024  # Kubernetes' limit on a ConfigMap's data


def validate_config_map(obj: dict[str, Any]) -> list[Cause]:
    """core/v1 ConfigMap: string ``data``, base64 ``binaryData``, disjoint keys, 1 MiB."""
    causes: list[Cause] = []
    size = 0
    keys: set[str] = set()
    for field in ("data", "binaryData"):
        values = obj.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            causes.append(Cause(field, "must be a map of strings"))
            continue
        for key, value in values.items():
            path = f"{field}[{key}]"
            causes += check_config_key(key, path)
            if key in keys:
                causes.append(Cause(path, "the key is in both data and binaryData"))
            keys.add(key)
            if not isinstance(value, str):
                causes.append(Cause(path, "must be a string"))
                continue
            if field == "binaryData":
                try:
                    size += len(base64.b64decode(value, validate=True))
                except ValueError:
                    causes.append(Cause(path, "must be base64-encoded"))
            else:
                size += len(value.encode())
    if size > CONFIG_MAP_MAX_BYTES:
        causes.append(Cause("data", f"must have at most {CONFIG_MAP_MAX_BYTES} bytes"))
    if not isinstance(obj.get("immutable", False), bool):
        causes.append(Cause("immutable", "must be true or false"))
    return causes


def validate_trial(obj: dict[str, Any]) -> list[Cause]:
    """A Trial created directly: its runSpec mounts no hostPath (``services.common.hostpath``)."""
    spec = obj.get("spec") or {}
    run_spec = spec.get("runSpec")
    causes = host_path_causes(run_spec, "spec.runSpec") if run_spec is not None else []
    return causes + metrics_format_causes(spec.get("metricsCollector"), "spec.metricsCollector")
