"""Metrics collectors: StdOut (default and metricsFormat), File TEXT/JSON, Push; MetricsUnavailable.

Real automl service and trial processes. Push goes from the trial process straight to the
service with its trial token (shipyard.metrics.report_metrics), as in production.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.automl.conftest import API, AutoML, python_experiment, reason_of, unique

PARAM = [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "1", "max": "2"}}]


async def _run(automl: AutoML, code: str, **spec: Any) -> tuple[dict, list[dict]]:
    name = unique("col")
    await automl.create(
        "experiments",
        python_experiment(
            name, code, parameters=PARAM, maxTrialCount=1, parallelTrialCount=1, **spec
        ),
    )
    exp = await automl.wait_finished(name, timeout=60)
    return exp, await automl.trials(name)


def _metric(trial: dict, name: str = "loss") -> dict:
    return next(m for m in trial["status"]["observation"]["metrics"] if m["name"] == name)


async def test_collect_stdout_metrics_format(automl: AutoML) -> None:
    code = "print('loss: 0.5'); print('noise=3'); print('loss: 0.25')"
    exp, trials = await _run(
        automl,
        code,
        metricsCollectorSpec={
            "source": {"filter": {"metricsFormat": [r"(\w+):\s*([+-]?\d*(\.\d+)?)"]}}
        },
    )
    assert reason_of(exp)[0] == "Succeeded"
    assert _metric(trials[0]) == {"name": "loss", "min": "0.25", "max": "0.5", "latest": "0.25"}


async def test_collect_file_text_and_json(automl: AutoML) -> None:
    text_code = (
        "import os; os.makedirs('/var/log/katib', exist_ok=True); "
        "open('/var/log/katib/metrics.log','w').write('loss=0.7\\nloss=0.3\\n')"
    )
    json_code = (
        "import json; f=open('/tmp/out/m.json','w'); "
        "[f.write(json.dumps({'loss': v, 'step': i, "
        "'timestamp': '2024-01-01T00:00:0%dZ' % i})+'\\n') "
        "for i, v in enumerate([0.9, 0.4])]"
    )
    (exp_t, trials_t), (exp_j, trials_j) = await asyncio.gather(
        _run(automl, text_code, metricsCollectorSpec={"collector": {"kind": "File"}}),
        _run(
            automl,
            json_code,
            metricsCollectorSpec={
                "collector": {"kind": "File"},
                "source": {
                    "fileSystemPath": {"path": "/tmp/out/m.json", "kind": "File", "format": "JSON"}
                },
            },
        ),
    )
    assert reason_of(exp_t)[0] == "Succeeded", exp_t["status"]
    assert _metric(trials_t[0])["min"] == "0.3"
    assert reason_of(exp_j)[0] == "Succeeded", exp_j["status"]
    assert _metric(trials_j[0]) == {"name": "loss", "min": "0.4", "max": "0.9", "latest": "0.4"}
    name = trials_j[0]["metadata"]["name"]
    logs = (await automl.request("GET", f"{API}/trials/{name}/observationlog")).json()
    entries = logs["observationLog"]["metricLogs"]
    assert [(e["step"], e["timeStamp"][:19]) for e in entries] == [
        (0, "2024-01-01T00:00:00"),
        (1, "2024-01-01T00:00:01"),
    ]


async def test_collect_push_metrics(automl: AutoML) -> None:
    code = (
        "from shipyard.metrics import report_metrics\n"
        "report_metrics({'loss': 0.8}, step=0)\n"
        "report_metrics({'loss': 0.2, 'other': 5}, step=1)\n"
    )
    exp, trials = await _run(automl, code, metricsCollectorSpec={"collector": {"kind": "Push"}})
    assert reason_of(exp)[0] == "Succeeded", trials[0]["status"]
    assert _metric(trials[0]) == {"name": "loss", "min": "0.2", "max": "0.8", "latest": "0.2"}
    name = trials[0]["metadata"]["name"]
    r = await automl.client.post(
        f"{API}/trials/{name}/metrics",
        headers={"X-Shipyard-Trial-Token": "forged"},
        json={"metrics": [{"name": "loss", "value": "0"}]},
    )
    assert r.status_code == 401


async def test_collect_metrics_unavailable(automl: AutoML) -> None:
    code = "print('training done'); print('accuracy=0.9')"
    exp, trials = await _run(automl, code)
    assert reason_of(exp) == ("Succeeded", "ExperimentMaxTrialsReached")
    assert exp["status"]["trialMetricsUnavailable"] == 1
    condition = trials[0]["status"]["conditions"][-1]
    assert condition["type"] == "MetricsUnavailable"
    assert "'loss'" in condition["message"] and "accuracy=0.9" in condition["message"]
