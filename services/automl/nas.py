"""Neural architecture search: Katib's ``spec.nasConfig`` and its single-trial DARTS.

Katib's DARTS suggestion (pkg/suggestion/v1beta1/nas/darts/service.py) runs the whole
search inside one trial: it hands that trial three assignments, and Katib's DARTS trial
program (``run_trial.py``) parses them:

- ``algorithm-settings``: the settings dict (Katib's defaults, overridden by
  ``spec.algorithm.algorithmSettings`` whose values stay strings, ``"None"`` becoming null)
  as JSON with every double quote turned into a single quote;
- ``search-space``: the operation names, ``skip_connection`` as is and every other
  operation once per value of its first parameter's list (``separable_convolution_3x3``),
  in the same quote format;
- ``num-layers``: ``nasConfig.graphConfig.numLayers`` as a decimal string.

Kept free of Optuna imports (the CLI imports the kinds, hence the validation).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from services.common.errors import Cause

DARTS_OUTPUTS = ("algorithm-settings", "search-space", "num-layers")

# Katib's defaults, in Katib's order (the order shows in the JSON the trial gets).
DARTS_DEFAULTS: dict[str, Any] = {
    "num_epochs": 50,
    "w_lr": 0.025,
    "w_lr_min": 0.001,
    "w_momentum": 0.9,
    "w_weight_decay": 3e-4,
    "w_grad_clip": 5.0,
    "alpha_lr": 3e-4,
    "alpha_weight_decay": 1e-3,
    "batch_size": 128,
    "num_workers": 4,
    "init_channels": 16,
    "print_step": 50,
    "num_nodes": 4,
    "stem_multiplier": 3,
}

_FLOAT_AT_LEAST_ZERO = (
    "w_lr",
    "w_lr_min",
    "alpha_lr",
    "w_weight_decay",
    "alpha_weight_decay",
    "w_momentum",
    "w_grad_clip",
)
_AT_LEAST_ZERO = "should be greater than or equal to zero"
_INT_AT_LEAST_ONE = ("init_channels", "print_step", "num_nodes", "stem_multiplier")


def _darts_setting_problem(name: str, value: str) -> str | None:
    """Katib's darts ``validate_algorithm_settings`` rule for one setting, as a message."""
    checks: dict[str, tuple[Callable[[str], float], float, str]] = {
        "num_epochs": (int, 1, "should be greater than zero"),
        "num_workers": (int, 0, _AT_LEAST_ZERO),
        **{k: (float, 0.0, _AT_LEAST_ZERO) for k in _FLOAT_AT_LEAST_ZERO},
        **{k: (int, 1, "should be greater than or equal to one") for k in _INT_AT_LEAST_ONE},
    }
    if name == "batch_size":
        if value == "None":
            return None
        checks[name] = (int, 1, "should be greater than or equal to one")
    if name not in checks:
        return f"unknown setting {name!r} for algorithm darts; valid: {', '.join(DARTS_DEFAULTS)}"
    parse, least, message = checks[name]
    try:
        ok = parse(value) >= least
    except ValueError:
        return f"{name} must be {'an integer' if parse is int else 'a number'}, not {value!r}"
    return None if ok else f"{name} {message}"


def check_darts_settings(settings: list[dict[str, Any]]) -> list[Cause]:
    causes = []
    for i, s in enumerate(settings):
        problem = _darts_setting_problem(s["name"], str(s.get("value", "")))
        if problem:
            field = "name" if problem.startswith("unknown setting") else "value"
            causes.append(Cause(f"spec.algorithm.algorithmSettings[{i}].{field}", problem))
    return causes


def check_nas_config(
    nas: dict[str, Any], check_parameter: Callable[[str, dict[str, Any]], list[Cause]]
) -> list[Cause]:
    """``spec.nasConfig``: graphConfig sizes and operations whose parameters follow the
    rules of ``spec.parameters`` (``check_parameter(path, parameter)``)."""
    causes: list[Cause] = []
    graph = nas.get("graphConfig") or {}
    layers = graph.get("numLayers")
    if layers is not None and layers < 1:
        causes.append(Cause("spec.nasConfig.graphConfig.numLayers", "must be greater than 0"))
    for key in ("inputSizes", "outputSizes"):
        for j, size in enumerate(graph.get(key) or []):
            if size < 1:
                causes.append(
                    Cause(f"spec.nasConfig.graphConfig.{key}[{j}]", "must be greater than 0")
                )
    operations = nas.get("operations") or []
    if not operations:
        causes.append(
            Cause(
                "spec.nasConfig.operations",
                "Required value: at least one operation",
                "FieldValueRequired",
            )
        )
    for i, op in enumerate(operations):
        path = f"spec.nasConfig.operations[{i}]"
        if not op.get("operationType"):
            causes.append(Cause(f"{path}.operationType", "Required value", "FieldValueRequired"))
        seen: set[str] = set()
        for j, p in enumerate(op.get("parameters") or []):
            if p["name"] in seen:
                causes.append(
                    Cause(
                        f"{path}.parameters[{j}].name",
                        f"duplicate name {p['name']!r}",
                        "FieldValueDuplicate",
                    )
                )
            seen.add(p["name"])
            causes += check_parameter(f"{path}.parameters[{j}]", p)
    return causes


def check_darts(spec: dict[str, Any]) -> list[Cause]:
    """What Katib's DARTS suggestion needs beyond the nasConfig rules."""
    nas = spec.get("nasConfig") or {}
    causes: list[Cause] = []
    if not (nas.get("graphConfig") or {}).get("numLayers"):
        causes.append(
            Cause(
                "spec.nasConfig.graphConfig.numLayers",
                "Required value: darts needs the number of layers",
                "FieldValueRequired",
            )
        )
    for i, op in enumerate(nas.get("operations") or []):
        if op.get("operationType") == "skip_connection":
            continue
        params = op.get("parameters") or []
        if not params or params[0]["parameterType"] not in ("categorical", "discrete"):
            causes.append(
                Cause(
                    f"spec.nasConfig.operations[{i}].parameters",
                    "darts needs a first parameter with a list of filter sizes "
                    "(categorical or discrete)",
                )
            )
    causes += check_darts_settings((spec.get("algorithm") or {}).get("algorithmSettings") or [])
    return causes


def _katib_quotes(value: Any) -> str:
    return json.dumps(value).replace('"', "'")


def darts_search_space(nas: dict[str, Any]) -> list[str]:
    space = []
    for op in nas.get("operations") or []:
        kind = op["operationType"]
        if kind == "skip_connection":
            space.append(kind)
            continue
        for size in op["parameters"][0]["feasibleSpace"]["list"]:
            space.append(f"{kind}_{size}x{size}")
    return space


def darts_settings(settings: list[dict[str, Any]] | None) -> dict[str, Any]:
    out = dict(DARTS_DEFAULTS)
    for s in settings or []:
        value = str(s.get("value", ""))
        out[s["name"]] = None if value == "None" else value
    return out


def darts_assignments(spec: dict[str, Any]) -> list[dict[str, str]]:
    """The one DARTS trial's parameterAssignments, in Katib's order and formats."""
    nas = spec["nasConfig"]
    settings = darts_settings((spec.get("algorithm") or {}).get("algorithmSettings"))
    return [
        {"name": "algorithm-settings", "value": _katib_quotes(settings)},
        {"name": "search-space", "value": _katib_quotes(darts_search_space(nas))},
        {"name": "num-layers", "value": str(nas["graphConfig"]["numLayers"])},
    ]
