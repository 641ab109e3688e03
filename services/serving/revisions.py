"""Revisions as Knative names them: what makes a new one, its name and number, and the
workload names of its replicas."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def predictor_hash(predictor: dict[str, Any]) -> str:
    """What makes a new revision: the predictor spec without its traffic split."""
    material = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def revision_name(isvc: str, number: int) -> str:
    """Knative's revision naming, as KServe reports it (``iris-predictor-00001``)."""
    return f"{isvc}-predictor-{number:05d}"


def revision_number(name: str | None) -> int:
    try:
        return int(str(name).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def workload_name(isvc: str, number: int, replica: int = 0) -> str:
    return f"isvc-{isvc}-{number}" + (f"-r{replica}" if replica else "")
