"""How many replicas a revision runs: concurrency-based, between minReplicas and maxReplicas.

``replicas = clamp(ceil(observed concurrency / target), min, max)``, as Knative's KPA does
for the concurrency metric. The observed concurrency is the highest number of requests the
gateway had in flight at once for the InferenceService within the stable window
(``SHIPYARD_AUTOSCALE_WINDOW_SECONDS``, Knative's ``stable-window``, 60 s by default): it
scales up on the first report that needs more replicas and back down once a whole window
has passed without that load.
"""

from __future__ import annotations

import math
from typing import Any

#: Knative's ``container-concurrency-target-default``: requests in flight per replica when
#: neither ``scaleTarget`` (with the concurrency metric) nor ``containerConcurrency`` says.
DEFAULT_CONCURRENCY_TARGET = 100


def concurrency_target(predictor: dict[str, Any]) -> int:
    """Requests in flight one replica should carry.

    ``scaleTarget`` when ``scaleMetric`` is ``concurrency`` or unset; otherwise (``cpu``,
    ``memory`` and ``rps`` are not measured locally) ``containerConcurrency``; else the default.
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


def desired_replicas(predictor: dict[str, Any], concurrency: float) -> int:
    low, high = replica_bounds(predictor)
    wanted = math.ceil(concurrency / concurrency_target(predictor))
    return max(low, min(high, wanted))
