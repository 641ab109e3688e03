"""Katib's SDK ``KatibClient.tune`` and ``get_trial_metrics`` against shipyard.

A whole platform (every service and the gateway real processes, single-user mode) with the
gateway's Katib DB manager listener (gateway/katib_grpc.py) on a free port. kubeflow-katib
0.19 (the release with ``tune`` and a working ``get_trial_metrics``) pins protobuf<5, which
the project's pins exclude, so ``make install`` keeps it in .venv/katib-sdk and the SDK
runs in a child process with that directory first on its PYTHONPATH; the child is a file
(``tune`` reads the objective function's source). It tunes a Python function (the trial
Job runs ``bash -c`` with the function's source and ``python -u``; the local runtime runs
it with the platform's Python), waits with ``wait_for_experiment_condition``, reads
``get_optimal_hyperparameters`` and the best trial's metrics over gRPC from
``db_manager_address=127.0.0.1:<port>``. The function imports numpy, which the platform's
Python has. Then the DB manager calls with shipyard's own copy
of Katib's messages (from a child process too: tests/automl/grpc_calls.py says why).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import specs
from tests.automl.grpc_calls import call_all
from tests.automl.test_katib_sdk import NAMESPACE, _kubeconfig
from tests.conftest import free_port, fresh_database, running_platform

ROOT = Path(__file__).resolve().parents[2]
KATIB_SDK = ROOT / ".venv" / "katib-sdk"
API = f"/apis/kubeflow.org/v1beta1/namespaces/{NAMESPACE}"

SDK_SCRIPT = """
import json, sys
import kubeflow.katib as katib

kubeconfig, name, namespace, address = sys.argv[1:5]
client = katib.KatibClient(config_file=kubeconfig, namespace=namespace)


def objective(parameters):
    import numpy as np  # the platform's Python runs the trial: what it has, the trial has

    x = float(parameters["x"])
    print(f"loss={float(np.square(x - 0.3)) + abs(parameters['shift']):.6f}")


client.tune(
    name=name,
    objective=objective,
    parameters={"x": katib.search.double(min=0.0, max=1.0), "shift": 0.0},
    objective_metric_name="loss",
    objective_type="minimize",
    max_trial_count=3,
    parallel_trial_count=2,
    max_failed_trial_count=1,
)
# polling_interval: the SDK's default looks every 15 s
client.wait_for_experiment_condition(
    name=name, namespace=namespace, timeout=150, polling_interval=1
)
optimal = client.get_optimal_hyperparameters(name, namespace)
best = optimal.best_trial_name
logs = client.get_trial_metrics(best, namespace, db_manager_address=address)
print(json.dumps({
    "best": best,
    "assignments": [(p.name, p.value) for p in optimal.parameter_assignments],
    "observation": [(m.name, m.latest) for m in optimal.observation.metrics],
    "metrics": [(m.metric.name, m.metric.value, m.time_stamp) for m in logs],
    "succeeded": client.is_experiment_succeeded(name, namespace),
}))
"""


@pytest.fixture(scope="module")
def katib_platform(nats_url: str, seaweedfs: Any, tmp_path_factory: pytest.TempPathFactory):
    """A platform of this module's own (its own database: the automl services of two
    platforms on one database would be replicas of one deployment), with the gateway's DB
    manager port (Katib's 6789 by default) a free one."""
    port = free_port()
    env = {"SHIPYARD_KATIB_DB_MANAGER_PORT": str(port)}
    with (
        fresh_database("shipyard_katib_tune") as url,
        running_platform(
            tmp_path_factory.mktemp("katib-tune"),
            database_url=url,
            nats_url=nats_url,
            s3=seaweedfs.config,
            env=env,
        ) as platform,
    ):
        _wait_listening(port)
        yield platform, f"127.0.0.1:{port}"


def _wait_listening(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the gateway's Katib DB manager port {port} never opened")


def test_tune_wait_optimal_and_trial_metrics(katib_platform: Any, tmp_path: Path) -> None:
    platform, address = katib_platform
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", platform.gateway_url)
    script = tmp_path / "tune.py"
    script.write_text(SDK_SCRIPT)
    name = f"tune-{os.urandom(3).hex()}"
    env = {**os.environ, "PYTHONPATH": str(KATIB_SDK)}
    done = subprocess.run(
        [sys.executable, str(script), str(kubeconfig), name, NAMESPACE, address],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["succeeded"] is True
    assignments = dict(out["assignments"])
    assert set(assignments) == {"x"} and 0.0 <= float(assignments["x"]) <= 1.0
    expected = (float(assignments["x"]) - 0.3) ** 2
    [(metric, latest)] = out["observation"]
    assert metric == "loss" and abs(float(latest) - expected) < 1e-5
    # get_trial_metrics: the best trial's observation log, as Katib's MetricLog messages.
    assert [(n, v) for n, v, _ in out["metrics"]] == [("loss", latest)]
    assert out["metrics"][0][2].endswith("Z") and "T" in out["metrics"][0][2]
    with httpx.Client(base_url=platform.gateway_url, timeout=30) as api:
        exp = api.get(f"{API}/experiments/{name}").json()
        assert exp["status"]["trialsSucceeded"] == 3
        assert exp["status"]["currentOptimalTrial"]["bestTrialName"] == out["best"]
        trial = api.get(f"{API}/trials/{out['best']}").json()
        job = trial["spec"]["runSpec"]["spec"]["template"]["spec"]["containers"][0]
        assert job["command"] == ["bash", "-c"] and "python -u" in job["args"][0]


def _experiment_with_a_trial(api: httpx.Client) -> str:
    name = f"dbm-{os.urandom(3).hex()}"
    body = specs.python_experiment(name, "print('loss=0.5')", maxTrialCount=1, parallelTrialCount=1)
    r = api.post(f"{API}/experiments", json=body)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        exp = api.get(f"{API}/experiments/{name}").json()
        if exp.get("status", {}).get("trialsSucceeded") == 1:
            trials = api.get(f"{API}/trials", params={"labelSelector": f"experiment={name}"})
            return str(trials.json()["items"][0]["metadata"]["name"])
        time.sleep(0.3)
    raise AssertionError(f"experiment {name} did not finish: {exp.get('status')}")


def _logs(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    entries = result["reply"]["observation_log"]["metric_logs"]
    return [(e["metric"]["name"], e["metric"]["value"], e["time_stamp"]) for e in entries]


def test_db_manager_report_get_delete_through_the_gateway(katib_platform: Any) -> None:
    platform, address = katib_platform
    with httpx.Client(base_url=platform.gateway_url, timeout=30) as api:
        trial = _experiment_with_a_trial(api)
    metric = {"name": "accuracy"}
    reported = [  # out of time order: answers come by time, as Katib's
        {"time_stamp": "2030-01-02T00:00:00Z", "metric": {**metric, "value": "0.95"}},
        {"time_stamp": "2030-01-01T00:00:00.123456789Z", "metric": {**metric, "value": "0.9"}},
    ]
    window = {"start_time": "2030-01-01T12:00:00Z", "end_time": "2030-01-03T00:00:00Z"}
    bad = [{"metric": {**metric, "value": "high"}}]
    results = call_all(
        address,
        [
            {"method": "GetObservationLog", "request": {"trial_name": trial}},
            {
                "method": "ReportObservationLog",
                "request": {"trial_name": trial, "observation_log": {"metric_logs": reported}},
            },
            {
                "method": "GetObservationLog",
                "request": {"trial_name": trial, "metric_name": "accuracy"},
            },
            {
                "method": "GetObservationLog",
                "request": {"trial_name": trial, "metric_name": "accuracy", **window},
            },
            {
                "method": "ReportObservationLog",
                "request": {"trial_name": trial, "observation_log": {"metric_logs": bad}},
            },
            {"method": "DeleteObservationLog", "request": {"trial_name": trial}},
            {"method": "GetObservationLog", "request": {"trial_name": trial}},
            {"method": "GetObservationLog", "request": {"trial_name": "no-such"}},
        ],
    )
    first, report, accuracy, windowed, refused, deleted, after, missing = results
    assert [(n, v) for n, v, _ in _logs(first)] == [("loss", "0.5")]
    assert report == {"reply": {}} and deleted == {"reply": {}}
    assert _logs(accuracy) == [
        ("accuracy", "0.9", "2030-01-01T00:00:00.123456Z"),
        ("accuracy", "0.95", "2030-01-02T00:00:00Z"),
    ]
    assert _logs(windowed) == [("accuracy", "0.95", "2030-01-02T00:00:00Z")]
    assert refused == {
        "code": "INVALID_ARGUMENT",
        "details": "observation_log.metric_logs[0].metric.value: 'high' is not a number",
    }
    assert _logs(after) == []
    assert missing["code"] == "NOT_FOUND"
    assert missing["details"].startswith('trial "no-such" not found in a namespace you may use')
