"""Katib parameters as Optuna distributions, and Optuna values back as Katib strings.

``double`` -> FloatDistribution (``step`` kept, ``logUniform``/``logNormal`` -> log scale),
``int`` -> IntDistribution, ``discrete``/``categorical`` -> CategoricalDistribution over the
list (as Katib's Optuna service does). Optuna has no normal prior: ``normal`` and
``logNormal`` sample the [min, max] range uniformly (on a log scale for ``logNormal``).
"""

from __future__ import annotations

import math
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def distribution(param: dict[str, Any]) -> BaseDistribution:
    fs, ptype = param["feasibleSpace"], param["parameterType"]
    log = fs.get("distribution") in ("logUniform", "logNormal")
    if ptype == "double":
        step = float(fs["step"]) if fs.get("step") and not log else None
        lo, hi = float(fs["min"]), float(fs["max"])
        if step is not None:  # Optuna wants max on the step grid
            hi = lo + math.floor((hi - lo) / step + 1e-9) * step
        return FloatDistribution(lo, hi, log=log, step=step)
    if ptype == "int":
        step = 1 if log else int(float(fs.get("step") or 1))
        lo, hi = int(fs["min"]), int(fs["max"])
        hi = lo + ((hi - lo) // step) * step
        return IntDistribution(lo, hi, log=log, step=step)
    return CategoricalDistribution(list(fs["list"]))


def distributions(params: list[dict[str, Any]]) -> dict[str, BaseDistribution]:
    return {p["name"]: distribution(p) for p in params}


def grid_values(param: dict[str, Any]) -> list[Any]:
    """Every value grid search visits for one parameter (Katib: min..max by step, or list)."""
    fs, ptype = param["feasibleSpace"], param["parameterType"]
    if ptype == "double":
        lo, hi, step = float(fs["min"]), float(fs["max"]), float(fs["step"])
        count = math.floor((hi - lo) / step + 1e-9) + 1
        return [round(lo + i * step, 12) for i in range(count)]
    if ptype == "int":
        return list(range(int(fs["min"]), int(fs["max"]) + 1, int(float(fs.get("step") or 1))))
    return list(fs["list"])


def format_value(param: dict[str, Any], value: Any) -> str:
    """The string Katib puts in parameterAssignments."""
    ptype = param["parameterType"]
    if ptype == "int":
        return str(int(round(float(value))))
    if ptype == "double":
        return repr(float(value))
    return str(value)
