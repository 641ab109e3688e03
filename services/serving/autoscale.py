"""How many replicas a revision runs: between minReplicas and maxReplicas, by the load the
gateway reports.

``replicas = clamp(ceil(observed / target), min, max)``, as Knative's KPA does, for the
metric ``scaleMetric`` names:

- ``concurrency`` (the default): the highest number of requests the gateway had in flight at
  once for the InferenceService within the stable window; the target is ``scaleTarget``,
  else ``containerConcurrency``, else 100 (Knative's default);
- ``rps``: the highest request rate the gateway saw in one report's span within the window;
  the target is ``scaleTarget`` requests per second per replica (Knative's default, 200,
  when unset).

The window is ``SHIPYARD_AUTOSCALE_WINDOW_SECONDS`` (Knative's ``stable-window``, 60 s by
default): it scales up on the first report that needs more replicas and back down once a
whole window has passed without that load. ``cpu`` and ``memory`` are not measured here:
with them, the concurrency metric and ``containerConcurrency`` (or 100) apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from services.common.errors import Cause

#: Knative's ``container-concurrency-target-default``: requests in flight per replica when
#: neither ``scaleTarget`` (with the concurrency metric) nor ``containerConcurrency`` says.
DEFAULT_CONCURRENCY_TARGET = 100
#: Knative's ``requests-per-second-target-default``.
DEFAULT_RPS_TARGET = 200


@dataclass(frozen=True)
class Load:
    """What the gateway saw of an InferenceService within the window: the most requests in
    flight at once, and the highest request rate (per second) over one report's span."""

    concurrency: int = 0
    rps: float = 0.0


def concurrency_target(predictor: dict[str, Any]) -> int:
    """Requests in flight one replica should carry.

    ``scaleTarget`` when ``scaleMetric`` is ``concurrency`` or unset; otherwise
    ``containerConcurrency``; else the default.
    """
    target = predictor.get("scaleTarget")
    if target and predictor.get("scaleMetric") in (None, "concurrency"):
        return int(target)
    if predictor.get("containerConcurrency"):
        return int(predictor["containerConcurrency"])
    return DEFAULT_CONCURRENCY_TARGET


def replica_bounds(predictor: dict[str, Any]) -> tuple[int, int]:
    """(low, high) while active. ``maxReplicas`` unset or 0 means no limit in Knative; on one
    machine it means no autoscaling above ``minReplicas`` instead (a runaway is worse)."""
    low = max(1, int(predictor.get("minReplicas", 1)))
    return low, max(low, int(predictor.get("maxReplicas") or 0))


def desired_replicas(predictor: dict[str, Any], load: Load) -> int:
    low, high = replica_bounds(predictor)
    if predictor.get("scaleMetric") == "rps":
        wanted = math.ceil(load.rps / float(predictor.get("scaleTarget") or DEFAULT_RPS_TARGET))
    else:
        wanted = math.ceil(load.concurrency / concurrency_target(predictor))
    return max(low, min(high, wanted))


#: The parts of an InferenceService's spec that run replicas.
SCALED_PARTS = ("predictor", "transformer", "explainer")


def scale_limit_causes(spec: dict[str, Any], prefix: str, limit: int) -> list[Cause]:
    """Knative's ``max-scale-limit`` on one replica-bearing spec (the fields at ``prefix``):
    ``minReplicas`` and ``maxReplicas`` at most ``limit`` (0: no limit)."""
    if limit <= 0:
        return []
    return [
        Cause(
            f"{prefix}.{field}",
            f"must be at most {limit}, the platform's max-scale-limit "
            f"(SHIPYARD_MAX_SCALE_LIMIT on the serving service), got {spec[field]}",
        )
        for field in ("minReplicas", "maxReplicas")
        if isinstance(spec.get(field), int) and spec[field] > limit
    ]


def inference_service_limit_causes(obj: dict[str, Any], limit: int) -> list[Cause]:
    """``scale_limit_causes`` for every part of an InferenceService that runs replicas."""
    spec = obj.get("spec") or {}
    return [
        cause
        for part in SCALED_PARTS
        for cause in scale_limit_causes(spec.get(part) or {}, f"spec.{part}", limit)
    ]
