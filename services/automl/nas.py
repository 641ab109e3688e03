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

Katib's ENAS suggestion (pkg/suggestion/v1beta1/nas/enas/service.py) hands each trial two
assignments, in the same quote format:

- ``architecture``: per layer ``[operation id, skip bit for layer 0, ..., layer - 1]``, e.g.
  ``[[3], [0, 1], [5, 0, 1]]`` (a bit for layer i says the output of layer i, 0 being the
  input, is concatenated into this layer's input beside the previous layer's output);
- ``nn_config``: ``num_layers``, ``input_sizes`` and ``output_sizes`` from the graphConfig and
  ``embedding``: for each operation id used, ``{opt_id, opt_type, opt_params}``. Operation ids
  number the operations expanded into every combination of their parameters' values
  (categorical values as strings, int and double values as numbers).

Kept free of Optuna imports (the CLI imports the kinds, hence the validation).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from services.automl import enas
from services.common.errors import Cause

DARTS_OUTPUTS = ("algorithm-settings", "search-space", "num-layers")
ENAS_OUTPUTS = ("architecture", "nn_config")
# The controller's softmax covers every expanded operation; more would be a typo in a range.
ENAS_MAX_OPERATIONS = 1000

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


def _enas_values(param: dict[str, Any]) -> list[Any]:
    """The values ENAS enumerates for one operation parameter (Katib's SearchSpace):
    categorical lists as strings, int ranges (step 1 when none) and double ranges as
    numbers. Katib leaves discrete parameters out; shipyard lists their values as strings."""
    fs, ptype = param["feasibleSpace"], param["parameterType"]
    if ptype in ("categorical", "discrete"):
        return [str(v) for v in fs.get("list") or []]
    if ptype == "int":
        return list(range(int(fs["min"]), int(fs["max"]) + 1, int(fs.get("step") or 1)))
    low, high, step = float(fs["min"]), float(fs["max"]), float(fs["step"])
    count = int((high - low) / step + 1e-9) + 1
    return [low + k * step for k in range(count)]


def enas_operations(nas: dict[str, Any]) -> list[dict[str, Any]]:
    """Katib's expanded search space: ``{opt_id, opt_type, opt_params}`` per combination."""
    out: list[dict[str, Any]] = []
    for op in nas.get("operations") or []:
        params = op.get("parameters") or []
        names = [p["name"] for p in params]
        for combo in itertools.product(*(_enas_values(p) for p in params)):
            out.append(
                {
                    "opt_id": len(out),
                    "opt_type": op["operationType"],
                    "opt_params": dict(zip(names, combo, strict=True)),
                }
            )
    return out


def _enas_size(nas: dict[str, Any]) -> int:
    total = 0
    for op in nas.get("operations") or []:
        size = 1
        for p in op.get("parameters") or []:
            size *= len(_enas_values(p))
        total += size
    return total


def check_enas(spec: dict[str, Any]) -> list[Cause]:
    """What Katib's ENAS suggestion validates beyond the nasConfig rules, and its settings."""
    nas = spec.get("nasConfig") or {}
    graph = nas.get("graphConfig") or {}
    causes: list[Cause] = []
    for key in ("numLayers", "inputSizes", "outputSizes"):
        if not graph.get(key):
            causes.append(
                Cause(
                    f"spec.nasConfig.graphConfig.{key}",
                    f"Required value: enas needs {key}",
                    "FieldValueRequired",
                )
            )
    for i, op in enumerate(nas.get("operations") or []):
        path = f"spec.nasConfig.operations[{i}]"
        if not op.get("parameters"):
            causes.append(
                Cause(
                    f"{path}.parameters",
                    "Required value: enas needs the operation's parameters",
                    "FieldValueRequired",
                )
            )
        for j, p in enumerate(op.get("parameters") or []):
            if p["parameterType"] == "double" and not p["feasibleSpace"].get("step"):
                causes.append(
                    Cause(
                        f"{path}.parameters[{j}].feasibleSpace.step",
                        "Required value: enas enumerates a double parameter by its step",
                        "FieldValueRequired",
                    )
                )
    if not causes:
        try:
            size = _enas_size(nas)
        except (KeyError, ValueError, ZeroDivisionError):
            size = 0  # the nasConfig rules report the bad feasibleSpace
        if size > ENAS_MAX_OPERATIONS:
            causes.append(
                Cause(
                    "spec.nasConfig.operations",
                    f"expands to {size} operations (every combination of the parameters' "
                    f"values); enas takes at most {ENAS_MAX_OPERATIONS}",
                )
            )
    causes += enas.check_settings((spec.get("algorithm") or {}).get("algorithmSettings") or [])
    return causes


def enas_assignments(nas: dict[str, Any], arc: list[int]) -> list[dict[str, str]]:
    """One ENAS trial's parameterAssignments (``architecture``, ``nn_config``), Katib's way."""
    graph = nas["graphConfig"]
    layers = int(graph["numLayers"])
    operations = enas_operations(nas)
    architecture = enas.organize(arc, layers)
    embedding: dict[int, Any] = {}
    for layer in architecture:
        embedding.setdefault(layer[0], operations[layer[0]])
    nn_config = {
        "num_layers": layers,
        "input_sizes": [int(v) for v in graph["inputSizes"]],
        "output_sizes": [int(v) for v in graph["outputSizes"]],
        "embedding": embedding,
    }
    return [
        {"name": "architecture", "value": _katib_quotes(architecture)},
        {"name": "nn_config", "value": _katib_quotes(nn_config)},
    ]
