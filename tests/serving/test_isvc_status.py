"""An InferenceService's status from its revisions (services/serving/isvc_status.py), for the
cases an end-to-end run cannot hold still long enough to read."""

from __future__ import annotations

from services.common.runtime import Phase, WorkloadStatus
from services.serving.isvc_status import build_status

NS = "team-q"
QUOTA_MESSAGE = (
    "exceeded quota: kf-resource-quota, requested: limits.memory=2147483648, "
    "used: limits.memory=1073741824, limited: limits.memory=2147483648"
)


def _isvc() -> dict[str, object]:
    return {"metadata": {"namespace": NS, "name": "iris", "generation": 1}, "spec": {}}


def _ready(status: dict[str, object]) -> dict[str, object]:
    conditions = status["conditions"]
    assert isinstance(conditions, list)
    (ready,) = [c for c in conditions if c["type"] == "Ready"]
    return dict(ready)


def test_a_server_waiting_for_quota_room_says_so() -> None:
    """Its first revision waits for room in the namespace's quota: not Ready, with the
    runtime's words and reason ExceededQuota, not "the model server is starting"."""
    waiting = WorkloadStatus(
        namespace=NS,
        name="iris-predictor-1",
        phase=Phase.PENDING,
        reason="ExceededQuota",
        message=QUOTA_MESSAGE,
    )
    status = build_status("http://gw", _isvc(), {}, 1, None, None, {1: waiting}, None, None)
    ready = _ready(status)
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "ExceededQuota",
        QUOTA_MESSAGE,
    )
    starting = WorkloadStatus(namespace=NS, name="iris-predictor-1", phase=Phase.PENDING)
    status = build_status("http://gw", _isvc(), {}, 1, None, None, {1: starting}, None, None)
    ready = _ready(status)
    assert ready["message"] == "the model server is starting"
    assert ready["reason"] != "ExceededQuota"
