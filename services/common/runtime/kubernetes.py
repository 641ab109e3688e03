"""KubernetesRuntime: Jobs/Pods, StatefulSets/Deployments + Services and PVCs (not written yet).

It must pass the same contract suite as LocalRuntime (tests/common/runtime/contract.py).
"""

from __future__ import annotations

from typing import Any


class KubernetesRuntime:
    name = "kubernetes"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "SHIPYARD_RUNTIME=kubernetes is not implemented yet; use SHIPYARD_RUNTIME=local"
        )
