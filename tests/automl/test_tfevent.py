"""The TensorFlowEvent collector: trials write scalars with torch.utils.tensorboard's
SummaryWriter under source.fileSystemPath; the trial's observation and observation log hold
them, matched to the metric names as Katib's tfevent collector matches tags (real automl
service, real sandboxed trial processes, TensorBoard's event file loader)."""

from __future__ import annotations

from typing import Any

from tests.automl.conftest import API, AutoML, python_experiment, reason_of, unique

PARAM = [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "1", "max": "2"}}]
# The loss falls by x per step; accuracy is written under test/, as Katib's
# tf-mnist-with-summaries example does (metric "test/accuracy").
TRIAL = """
import sys
from torch.utils.tensorboard import SummaryWriter
x = float(sys.argv[1])
root = '/var/log/katib/tfevent'
train, test = SummaryWriter(root), SummaryWriter(root + '/test')
for step in range(3):
    train.add_scalar('loss', 10 - x * step, step)
    train.add_scalar('other', 99.0, step)
test.add_scalar('accuracy', 0.25 * x, 2)
train.close(); test.close()
"""


def _metrics(trial: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {m["name"]: m for m in trial["status"]["observation"]["metrics"]}


async def test_collect_tensorflow_event_scalars(automl: AutoML) -> None:
    name = unique("tfe")
    obj = python_experiment(
        name,
        TRIAL,
        parameters=PARAM,
        maxTrialCount=2,
        parallelTrialCount=2,
        metricsCollectorSpec={"collector": {"kind": "TensorFlowEvent"}},
    )
    obj["spec"]["objective"]["additionalMetricNames"] = ["test/accuracy"]
    created = await automl.create("experiments", obj)
    assert created["spec"]["metricsCollectorSpec"]["source"] == {
        "fileSystemPath": {"path": "/var/log/katib/tfevent/", "kind": "Directory"}
    }
    exp = await automl.wait_finished(name, timeout=120)
    assert reason_of(exp) == ("Succeeded", "ExperimentMaxTrialsReached"), exp["status"]
    trials = await automl.trials(name)
    assert len(trials) == 2
    for trial in trials:
        x = float(trial["spec"]["parameterAssignments"][0]["value"])
        metrics = _metrics(trial)
        loss = metrics["loss"]
        assert float(loss["max"]) == 10.0, metrics
        assert abs(float(loss["latest"]) - (10 - 2 * x)) < 1e-4, metrics
        assert float(loss["min"]) == float(loss["latest"])
        accuracy = metrics["test/accuracy"]
        assert abs(float(accuracy["latest"]) - 0.25 * x) < 1e-4, metrics
        r = await automl.request("GET", f"{API}/trials/{trial['metadata']['name']}/observationlog")
        assert r.status_code == 200, r.text
        logs = r.json()["observationLog"]["metricLogs"]
        assert [m["step"] for m in logs if m["metric"]["name"] == "loss"] == [0, 1, 2]
        assert "other" not in {m["metric"]["name"] for m in logs}
    best = min(trials, key=lambda t: float(_metrics(t)["loss"]["min"]))
    assert exp["status"]["currentOptimalTrial"]["bestTrialName"] == best["metadata"]["name"]
