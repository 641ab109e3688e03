"""Fixtures of the serving tests: tiny models written to disk, the platform's API client."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.runtime import LocalRuntime
from services.common.settings import SINGLE_USER_NAMESPACE as NS
from tests import specs

ISVC_PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"
PVC_PATH = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"

# A model in the dependency-free ``python`` format that answers with the revision serving it
# (K_REVISION, as Knative sets it), so a traffic split can be counted.
REVISION_MODEL = """import os

def predict(instances):
    return [os.environ["K_REVISION"] for _ in instances]
"""


def train_sklearn(directory: Path) -> Any:
    """A LogisticRegression on separable iris-like data (4 features, 3 classes), dumped."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    centers = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
    x = np.concatenate([c + rng.normal(scale=0.15, size=(40, 4)) for c in centers])
    y = np.repeat([0, 1, 2], 40)
    model = LogisticRegression(max_iter=500).fit(x, y)
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib")
    return model


@pytest.fixture(scope="module")
def api(platform: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.gateway_url, timeout=30) as client:
        yield client


def create_claim(platform: Any, api: httpx.Client, name: str) -> Path:
    """Create a PVC through the API, wait until it is bound; its data directory on this host."""
    body = specs.claim(name, "1Gi")
    r = api.post(PVC_PATH, json=body)
    assert r.status_code in (201, 409), r.text
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (api.get(f"{PVC_PATH}/{name}").json().get("status") or {}).get("phase") == "Bound":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"claim {name} never bound")
    import asyncio

    return asyncio.run(LocalRuntime(platform.state_dir).resolve_volume(NS, name))


@pytest.fixture(scope="module")
def claim(platform: Any, api: httpx.Client) -> Callable[[str], Path]:
    """Create a PVC through the API and return its data directory on this host."""
    return lambda name: create_claim(platform, api, name)


def wait_isvc(
    api: httpx.Client, name: str, until: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    """Poll the InferenceService until ``until(obj)``; fail with its last status otherwise."""
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = api.get(f"{ISVC_PATH}/{name}")
        # A serving service restarting (the crash tests) answers 502/503 Status for a moment.
        if r.status_code in (502, 503):
            time.sleep(0.1)
            continue
        assert r.status_code == 200, r.text
        obj = r.json()
        if until(obj):
            return obj
        time.sleep(0.1)
    raise AssertionError(f"{name} did not get there in {timeout}s: {obj.get('status')}")


def assert_v2_predicts(api: httpx.Client, name: str, model: Any, samples: list[Any]) -> None:
    """InferenceService ``name``'s V2 infer on ``samples`` (one FP64 tensor) answers what
    ``model`` (the sklearn model it serves) predicts."""
    import numpy as np

    x = np.array(samples, dtype=np.float64)
    tensor = {"name": "input-0", "shape": list(x.shape), "datatype": "FP64"}
    body = {"inputs": [{**tensor, "data": x.ravel().tolist()}]}
    answer = predict(api, f"/serving/{NS}/{name}/v2/models/{name}/infer", body)
    assert answer["outputs"][0]["data"] == model.predict(x).tolist()


def predict(api: httpx.Client, url: str, body: dict[str, Any]) -> Any:
    """POST to the data plane, waiting out the gateway's per-user rate limit (429, 50/s)."""
    for _ in range(100):
        r = api.post(url, json=body)
        if r.status_code != 429:
            assert r.status_code == 200, r.text
            return r.json()
        time.sleep(0.05)
    raise AssertionError(f"{url}: still rate limited")


def ready(obj: dict[str, Any]) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def isvc(name: str, predictor: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": predictor},
    }


def tar_gz(members: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    """A .tar.gz of ``members`` (name -> content), and a ``symlink`` to /etc/passwd if named."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink is not None:
            link = tarfile.TarInfo(symlink)
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            tar.addfile(link)
    return buf.getvalue()


def model_server_main(
    model_dir: Path, *options: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``python -m services.serving.modelserver`` in a process of its own, for model ``m`` in
    ``model_dir`` (format ``python``, port 1), with ``options`` before them; its outcome."""
    argv = [sys.executable, "-m", "services.serving.modelserver", *options]
    argv += ["--model-name", "m", "--model-dir", str(model_dir), "--model-format", "python"]
    return subprocess.run(
        [*argv, "--port", "1"], capture_output=True, text=True, timeout=timeout, check=False
    )
