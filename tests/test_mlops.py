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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.settings import SINGLE_USER_NAMESPACE as NS

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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPYARD_", "KUBERNETES_"))}
    env["HOME"] = str(home)  # no kfp context or shipyard login from this machine
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "pipeline.py"), "--host", platform.gateway_url, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
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
    run_id = run_example(platform, tmp_path, "--max-depth", "1")
    assert release_output(api, run_id).startswith("created: serving s3://")
    meta, spec, status = predictor_of(api)
    uri = spec["model"]["storageUri"]
    assert uri.startswith(f"s3://{seaweedfs.config.bucket}/v2/artifacts/{NS}/"), uri
    assert spec["model"]["modelFormat"] == {"name": "sklearn"}
    assert "canaryTrafficPercent" not in spec
    assert status["traffic"] == [
        {"revisionName": f"{NAME}-predictor-00001", "percent": 100, "latestRevision": True}
    ]
    assert served(api, 3) == [expected_predictions(1)] * 3
    runs["first"] = uri


def test_run_with_better_model_promotes_canary(
    platform: Any, api: httpx.Client, runs: dict[str, str], tmp_path: Path
) -> None:
    assert "first" in runs, "needs test_run_creates_mlops_model"
    run_id = run_example(platform, tmp_path, "--max-depth", "3")
    outcome = release_output(api, run_id)
    assert outcome.startswith("promoted s3://"), outcome
    assert "accuracy 0.978 (was 0.667)" in outcome, outcome
    meta, spec, status = predictor_of(api)
    uri = spec["model"]["storageUri"]
    assert uri != runs["first"] and uri in outcome
    assert "canaryTrafficPercent" not in spec  # promoted: the split is gone
    assert "mlops.shipyard.io/stable-storage-uri" not in (meta.get("annotations") or {})
    assert status["traffic"] == [
        {"revisionName": f"{NAME}-predictor-00002", "percent": 100, "latestRevision": True}
    ]
    assert status["latestRolledoutRevision"] == f"{NAME}-predictor-00002"
    assert status["previousRolledoutRevision"] == f"{NAME}-predictor-00001"
    assert served(api) == [expected_predictions(3)] * 10  # every answer: the new model
    runs["second"] = uri


def test_run_with_worse_model_rolls_back(
    platform: Any, api: httpx.Client, runs: dict[str, str], tmp_path: Path
) -> None:
    assert "second" in runs, "needs test_run_with_better_model_promotes_canary"
    run_id = run_example(platform, tmp_path, "--max-depth", "2")
    outcome = release_output(api, run_id)
    assert outcome.startswith(f"rolled back to {runs['second']}: "), outcome
    assert "canary accuracy 0.956 < current 0.978" in outcome, outcome
    meta, spec, status = predictor_of(api)
    assert spec["model"]["storageUri"] == runs["second"]  # the previous model, restored
    assert "canaryTrafficPercent" not in spec
    # The revision that served before takes all traffic again; the canary's is gone.
    assert status["traffic"] == [
        {"revisionName": f"{NAME}-predictor-00002", "percent": 100, "latestRevision": True}
    ]
    assert status["latestRolledoutRevision"] == f"{NAME}-predictor-00002"
    assert served(api) == [expected_predictions(3)] * 10
