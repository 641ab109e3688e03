"""The MLOps example (examples/mlops) end to end against the real platform.

``examples/mlops/pipeline.py`` runs as a user runs it (a process, ``--host`` the gateway, no
token in single-user mode) three times: a first model creates ``mlops-model``; a better
one is rolled out as a canary, checked through the gateway and promoted; a worse one is
rolled out as a canary and rolled back, so the previous model serves again. What serves is
checked from outside, by the predictions the gateway returns for the held-out set.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.settings import SINGLE_USER_NAMESPACE as NS
from tests import specs
from tests.jupyter import execute, open_kernel

EXAMPLES = Path(__file__).parents[1] / "examples" / "mlops"
NAME = "mlops-model"
ISVC = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/{NAME}"
PREDICT = f"/serving/{NS}/{NAME}/v1/models/{NAME}:predict"
SEED = 1  # the example's default split: depth 1 scores 0.667, depth 2 0.956, depth 3 0.978


def held_out_set() -> tuple[list[list[float]], list[int]]:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.3, random_state=SEED, stratify=y
    )
    return x_val.tolist(), y_val.tolist()


def expected_predictions(max_depth: int) -> list[int]:
    """What the example's model of ``max_depth`` answers for the held-out set."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    x_train, x_val, y_train, _ = train_test_split(
        x, y, test_size=0.3, random_state=SEED, stratify=y
    )
    model = DecisionTreeClassifier(max_depth=max_depth, random_state=0).fit(x_train, y_train)
    return [int(p) for p in model.predict(x_val)]


@pytest.fixture(scope="module")
def api(platform: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.gateway_url, timeout=30) as client:
        client.delete(ISVC)  # a clean start, whatever an earlier session left
        deadline = time.monotonic() + 30
        while client.get(ISVC).status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield client
        client.delete(ISVC)


def run_example(platform: Any, home: Path, *args: str) -> str:
    """``pipeline.py --host <gateway> ARGS`` as a user runs it; its run id. It must exit 0
    (its own check: mlops-model Ready and answering a prediction)."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "pipeline.py"), "--host", platform.gateway_url, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=example_env(home),
    )
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs
    assert f"{NAME} Ready, serving s3://" in logs, logs
    found = re.search(r"run_id=(\S+) SUCCEEDED", logs)
    assert found, logs
    return found.group(1)


def release_output(api: httpx.Client, run_id: str) -> str:
    """The ``release`` step's answer (what it did), from the run's Workflow."""
    wf = api.get(f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows/kfp-{run_id}").json()
    for node in wf["status"]["nodes"].values():
        if node["displayName"] == "release" and node["type"] == "Pod":
            params = (node.get("outputs") or {}).get("parameters") or []
            return next(str(p["value"]) for p in params if p["name"] == "Output")
    raise AssertionError(f"no release step in {wf['status']}")


def served(api: httpx.Client, times: int = 10) -> list[list[int]]:
    """The held-out set's predictions from the service, ``times`` requests."""
    x, _ = held_out_set()
    answers = []
    for _ in range(times):
        r = api.post(PREDICT, json={"instances": x})
        assert r.status_code == 200, r.text
        answers.append(r.json()["predictions"])
    return answers


def release(platform: Any, api: httpx.Client, home: Path, *, max_depth: int) -> str:
    """Run the example with ``--max-depth max_depth``; what its ``release`` step did."""
    return release_output(api, run_example(platform, home, "--max-depth", str(max_depth)))


def assert_all_traffic_to(status: dict[str, Any], revision: int) -> None:
    """The predictor's traffic: all of it to its revision number ``revision``, the latest."""
    assert status["traffic"] == [
        {"revisionName": f"{NAME}-predictor-{revision:05d}", "percent": 100, "latestRevision": True}
    ]


def predictor_of(api: httpx.Client) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    obj = api.get(ISVC).json()
    return obj["metadata"], obj["spec"]["predictor"], obj["status"]["components"]["predictor"]


@pytest.fixture(scope="module")
def runs() -> dict[str, str]:
    """storageUris seen by the tests so far, in order (the tests build on each other)."""
    return {}


def test_run_creates_mlops_model(
    platform: Any, api: httpx.Client, runs: dict[str, str], seaweedfs: Any, tmp_path: Path
) -> None:
    assert release(platform, api, tmp_path, max_depth=1).startswith("created: serving s3://")
    meta, spec, status = predictor_of(api)
    uri = spec["model"]["storageUri"]
    assert uri.startswith(f"s3://{seaweedfs.config.bucket}/v2/artifacts/{NS}/"), uri
    assert spec["model"]["modelFormat"] == {"name": "sklearn"}
    assert "canaryTrafficPercent" not in spec
    assert_all_traffic_to(status, 1)
    assert served(api, 3) == [expected_predictions(1)] * 3
    runs["first"] = uri


def test_run_with_better_model_promotes_canary(
    platform: Any, api: httpx.Client, runs: dict[str, str], tmp_path: Path
) -> None:
    assert "first" in runs, "needs test_run_creates_mlops_model"
    outcome = release(platform, api, tmp_path, max_depth=3)
    assert outcome.startswith("promoted s3://"), outcome
    assert "accuracy 0.978 (was 0.667)" in outcome, outcome
    meta, spec, status = predictor_of(api)
    uri = spec["model"]["storageUri"]
    assert uri != runs["first"] and uri in outcome
    assert "canaryTrafficPercent" not in spec  # promoted: the split is gone
    assert "mlops.shipyard.io/stable-storage-uri" not in (meta.get("annotations") or {})
    assert_all_traffic_to(status, 2)
    assert status["latestRolledoutRevision"] == f"{NAME}-predictor-00002"
    assert status["previousRolledoutRevision"] == f"{NAME}-predictor-00001"
    assert served(api) == [expected_predictions(3)] * 10  # every answer: the new model
    runs["second"] = uri


def test_run_with_worse_model_rolls_back(
    platform: Any, api: httpx.Client, runs: dict[str, str], tmp_path: Path
) -> None:
    assert "second" in runs, "needs test_run_with_better_model_promotes_canary"
    outcome = release(platform, api, tmp_path, max_depth=2)
    assert outcome.startswith(f"rolled back to {runs['second']}: "), outcome
    assert "canary accuracy 0.956 < current 0.978" in outcome, outcome
    meta, spec, status = predictor_of(api)
    assert spec["model"]["storageUri"] == runs["second"]  # the previous model, restored
    assert "canaryTrafficPercent" not in spec
    # The revision that served before takes all traffic again; the canary's is gone.
    assert_all_traffic_to(status, 2)
    assert status["latestRolledoutRevision"] == f"{NAME}-predictor-00002"
    assert served(api) == [expected_predictions(3)] * 10


def example_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPYARD_", "KUBERNETES_"))}
    env["HOME"] = str(home)  # no kfp context or shipyard login from this machine
    return env


def test_trigger_starts_run_when_data_workflow_succeeds(
    platform: Any, api: httpx.Client, runs: dict[str, str], tmp_path: Path
) -> None:
    """trigger.py watches Workflows: an unlabelled one finishing starts nothing, a labelled
    one starts one delivery run whose data_version is that workflow's name."""
    assert "second" in runs, "needs the promotion test"
    trigger = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "trigger.py"), "--host", platform.gateway_url]
        + ["--once", "--wait", "--timeout", "240"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=example_env(tmp_path),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(trigger.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("watching Workflows" in line for line in lines):
            assert trigger.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        workflows = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows"
        names = []
        for labels in ({}, {"mlops.shipyard.io/data": "true"}):
            r = api.post(workflows, json=data_workflow(labels))
            assert r.status_code == 201, r.text
            names.append(r.json()["metadata"]["name"])
        assert trigger.wait(timeout=300) == 0, "".join(lines)
    finally:
        if trigger.poll() is None:
            trigger.kill()
    reader.join(5)
    logs = "".join(lines)
    started = re.findall(r"data workflow (\S+) Succeeded: run_id=(\S+) started", logs)
    assert [name for name, _ in started] == [names[1]], logs
    run_id = started[0][1]
    assert f"run_id={run_id} ended SUCCEEDED" in logs, logs
    run = api.get(f"/apis/v2beta1/runs/{run_id}").json()
    assert run["runtime_config"]["parameters"]["data_version"] == names[1]
    # Same depth as the serving model: same predictions, so the canary is promoted.
    outcome = release_output(api, run_id)
    assert outcome.startswith("promoted s3://"), outcome
    assert served(api, 3) == [expected_predictions(3)] * 3


def data_workflow(labels: dict[str, str]) -> dict[str, Any]:
    """A stand-in data pipeline: one step that 'writes' new data."""
    step = {"image": "python:3.11", "command": ["python", "-c", "print('new rows landed')"]}
    return specs.workflow(
        "fresh-data-", [{"name": "main", "container": step}], generate_name=True, labels=labels
    )


def test_schedule_creates_recurring_run(platform: Any, api: httpx.Client, tmp_path: Path) -> None:
    """``--every`` makes the delivery a KFP recurring run (one at a time, no catch-up)."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "pipeline.py"), "--host", platform.gateway_url]
        + ["--every", "3600", "--max-depth", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        env=example_env(tmp_path),
    )
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs
    found = re.search(r"recurring_run_id=(\S+) scheduled", logs)
    assert found, logs
    path = f"/apis/v2beta1/recurringruns/{found.group(1)}"
    try:
        job = api.get(path).json()
        assert job["status"] == "ENABLED", job
        assert int(job["trigger"]["periodic_schedule"]["interval_second"]) == 3600, job
        assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True, job
        assert job["runtime_config"]["parameters"]["max_depth"] == 3, job
        assert job["pipeline_spec"]["pipelineInfo"]["name"] == "mlops-golden-path"
    finally:
        assert api.delete(path).status_code == 200


async def test_notebook_runs_the_flow_in_cluster(platform: Any, runs: dict[str, str]) -> None:
    """notebook.ipynb, cell by cell, in a real notebook server's kernel: kfp.Client() and
    in-cluster config with no host or token, a delivery run, the data plane, a KFServing
    InferenceService, and a recurring run."""
    import nbformat

    assert "second" in runs, "needs the promotion test"
    cells = [
        c.source
        for c in nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4).cells
        if c.cell_type == "code"
    ]
    gw = platform.gateway_url
    route = f"{gw}/notebook/{NS}/mlops-lab"
    notebooks = f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks"
    server = specs.notebook(
        "mlops-lab", "kubeflownotebookswg/jupyter-scipy:v1.8.0", container_name="lab"
    )
    async with httpx.AsyncClient(base_url=gw, timeout=30) as http:
        r = await http.post(notebooks, json=server)
        assert r.status_code == 201, r.text
        try:
            ws = await open_kernel(http, route)
            upload = {"type": "file", "format": "text"}
            upload["content"] = (EXAMPLES / "pipeline.py").read_text()
            r = await http.put(f"{route}/api/contents/pipeline.py", json=upload)
            assert r.status_code in (200, 201), r.text
            outputs = [
                await execute(ws, cell, timeout=300, store_history=True, stdout_only=True)
                for cell in cells
            ]
            job_id = outputs[-1].strip()
            job = await http.get(f"/apis/v2beta1/recurringruns/{job_id}")
            assert job.status_code == 200 and job.json()["status"] == "ENABLED", job.text
            assert (await http.delete(f"/apis/v2beta1/recurringruns/{job_id}")).is_success
        finally:
            await http.delete(f"{notebooks}/mlops-lab")
        isvc = (await http.get(ISVC)).json()
    assert outputs[0].strip() == NS
    assert outputs[1].strip().endswith(" SUCCEEDED"), outputs[1]
    uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert outputs[2].splitlines()[0] == uri and uri != runs["second"]  # a new model, promoted
    assert "'percent': 100" in outputs[2] and "'tag'" not in outputs[2], outputs[2]
    assert outputs[3].strip() == "{'predictions': [1, 0]}"
    assert outputs[4].strip() == "serving.kubeflow.org/v1beta1 mlops-kfserving"
    assert outputs[5].strip() == f"{gw}/serving/{NS}/mlops-kfserving"
