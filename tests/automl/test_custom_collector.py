"""Katib's Custom metrics collector: the user's collector container beside the trial.

Real automl service, real sandboxed trial and collector processes (local runtime). The trial
writes its metrics in a format no built-in collector reads to the shared metrics file; the
collector (a second workload mounting the trial's metrics volume) reads the file once the
trial's process has ended and reports each value, with the trial's token, through the door
a local sandbox reaches (the Push route; services/automl/custom_collector.py). The trial's
observation is what the collector reported. Validation: Katib's rules on customCollector,
and PrometheusMetric refused with the reason.
"""

from __future__ import annotations

import sys
from typing import Any

from tests.automl.conftest import API, AutoML, python_experiment, reason_of, unique

PARAM = [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "1", "max": "2"}}]
METRICS_FILE = "/var/log/katib/custom/metrics.txt"
# The trial: "epoch <i> accuracy <value>" lines (no name=value pairs for StdOut or File).
TRIAL = (
    "import os, sys, time\n"
    f"os.makedirs(os.path.dirname({METRICS_FILE!r}), exist_ok=True)\n"
    "x = float(sys.argv[1])\n"
    f"with open({METRICS_FILE!r}, 'w') as f:\n"
    "    for i in range(3):\n"
    "        f.write(f'epoch {i} accuracy {x * (i + 1) / 10:.3f}\\n')\n"
    "        f.flush()\n"
    "        time.sleep(0.2)\n"
    "print('trial done')\n"
)
# The collector: reads the shared file and reports each value in order.
COLLECTOR = (
    "import os\n"
    "from shipyard.metrics import report_metrics\n"
    "lines = open(os.environ['KATIB_METRICS_PATH']).read().split()\n"
    "assert os.environ['KATIB_TRIAL_NAME'] and os.environ['KATIB_DB_MANAGER_ADDRESS']\n"
    "for i in range(0, len(lines), 4):\n"
    "    report_metrics({lines[i + 2]: lines[i + 3]}, step=int(lines[i + 1]))\n"
    "print('reported', len(lines) // 4)\n"
)


def _custom(command: list[str] | None = None, **collector: Any) -> dict[str, Any]:
    custom: dict[str, Any] = {"name": "my-collector", "image": "example.com/collector:1"}
    if command is not None:
        custom["command"] = command
    return {
        "collector": {"kind": "Custom", "customCollector": custom, **collector},
        "source": {"fileSystemPath": {"path": METRICS_FILE, "kind": "File"}},
    }


async def test_custom_collector_reads_the_shared_file_and_reports(automl: AutoML) -> None:
    name = unique("custom")
    await automl.create(
        "experiments",
        python_experiment(
            name,
            TRIAL,
            parameters=PARAM,
            maxTrialCount=1,
            parallelTrialCount=1,
            objective="maximize",
            metric="accuracy",
            metricsCollectorSpec=_custom([sys.executable, "-c", COLLECTOR]),
        ),
    )
    exp = await automl.wait_finished(name, timeout=90)
    assert reason_of(exp) == ("Succeeded", "ExperimentMaxTrialsReached"), exp["status"]
    trial = (await automl.trials(name))[0]
    x = float(trial["spec"]["parameterAssignments"][0]["value"])
    values = [f"{x * (i + 1) / 10:.3f}" for i in range(3)]
    metric = trial["status"]["observation"]["metrics"][0]
    assert metric["name"] == "accuracy"
    assert metric["latest"] == values[-1]
    assert float(metric["max"]) == float(values[-1])
    assert float(metric["min"]) == float(values[0])
    trial_name = trial["metadata"]["name"]
    r = await automl.request("GET", f"{API}/trials/{trial_name}/observationlog")
    entries = r.json()["observationLog"]["metricLogs"]
    assert [(e["step"], e["metric"]["value"]) for e in entries] == list(
        zip(range(3), values, strict=True)
    )
    # The collector's workload is gone once it has reported.
    runtime = automl.app.state.ctx.runtime
    names = {s.name for s in await runtime.list(trial["metadata"]["namespace"])}
    assert f"trial-{trial_name}-collector" not in names


async def test_custom_collector_that_reports_nothing(automl: AutoML) -> None:
    """A collector that fails: the trial has no metrics (MetricsUnavailable, as Katib)."""
    exp = await automl.run_experiment(
        "custom-none",
        TRIAL,
        parameters=PARAM,
        maxTrialCount=1,
        parallelTrialCount=1,
        metric="accuracy",
        metricsCollectorSpec=_custom([sys.executable, "-c", "raise SystemExit(3)"]),
    )
    assert exp["status"]["trialsSucceeded"] == 0, exp["status"]
    trial = (await automl.trials(exp["metadata"]["name"]))[0]
    state = [c for c in trial["status"]["conditions"] if c["status"] == "True"][-1]
    assert state["type"] == "MetricsUnavailable", trial["status"]
    assert "'accuracy' was not found in the Custom output" in state["message"]


async def _refused(automl: AutoML, collector_spec: dict[str, Any]) -> dict[str, Any]:
    body = python_experiment(
        unique("bad"), "print(1)", parameters=PARAM, metricsCollectorSpec=collector_spec
    )
    r = await automl.request("POST", f"{API}/experiments", json=body)
    assert r.status_code == 422, r.text
    status = r.json()
    assert status["kind"] == "Status" and status["reason"] == "Invalid"
    return {c["field"]: c["message"] for c in status["details"]["causes"]}


async def test_custom_collector_validation(automl: AutoML) -> None:
    field = "spec.metricsCollectorSpec.collector"
    causes = await _refused(automl, {"collector": {"kind": "Custom"}})
    assert causes == {f"{field}.customCollector": "Required value"}
    causes = await _refused(automl, _custom())
    assert causes == {
        f"{field}.customCollector.command": "Required value: the local runtime does not "
        "read the image's entrypoint"
    }
    causes = await _refused(
        automl, {"collector": {"kind": "StdOut", "customCollector": {"command": ["x"]}}}
    )
    assert causes == {f"{field}.customCollector": "only a Custom collector has one"}


async def test_prometheus_metric_is_refused_with_the_reason(automl: AutoML) -> None:
    causes = await _refused(
        automl,
        {
            "collector": {"kind": "PrometheusMetric"},
            "source": {"httpGet": {"port": 8080, "path": "/metrics"}},
        },
    )
    message = causes["spec.metricsCollectorSpec.collector.kind"]
    assert message.startswith("PrometheusMetric is not supported by shipyard: it would scrape")
    assert "StdOut, File" in message and len(causes) == 1
