"""InferenceServices end to end: real platform processes, real model servers, real gateway."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.common.runtime import LocalRuntime, WorkloadNotFound
from services.common.settings import SINGLE_USER_NAMESPACE as NS

from .conftest import ISVC_PATH, REVISION_MODEL, isvc, predict, ready, train_sklearn, wait_isvc

SAMPLES = [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]


@pytest.fixture(scope="module")
def sklearn_isvc(api: httpx.Client, claim: Any) -> dict[str, Any]:
    """An sklearn model on a PVC, served over V2 (both protocols answer)."""
    data = claim("models")
    train_sklearn(data / "iris")
    body = isvc(
        "iris",
        {
            "model": {
                "modelFormat": {"name": "sklearn"},
                "protocolVersion": "v2",
                "storageUri": "pvc://models/iris",
            }
        },
    )
    r = api.post(ISVC_PATH, json=body)
    assert r.status_code == 201, r.text
    return wait_isvc(api, "iris", ready)


def test_create_inferenceservice_status_shape(sklearn_isvc: dict[str, Any], platform: Any) -> None:
    status = sklearn_isvc["status"]
    url = f"{platform.gateway_url}/serving/{NS}/iris"
    assert status["url"] == url and status["address"] == {"url": url}
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "IngressReady": "True",
        "PredictorReady": "True",
        "Ready": "True",
    }
    pred = status["components"]["predictor"]
    assert (
        pred["latestCreatedRevision"]
        == pred["latestReadyRevision"]
        == pred["latestRolledoutRevision"]
        == "iris-predictor-00001"
    )
    assert pred["traffic"] == [
        {"revisionName": "iris-predictor-00001", "percent": 100, "latestRevision": True}
    ]
    assert status["modelStatus"]["transitionStatus"] == "UpToDate"
    assert status["modelStatus"]["states"] == {
        "activeModelState": "Loaded",
        "targetModelState": "Loaded",
    }
    spec = sklearn_isvc["spec"]["predictor"]
    assert spec["minReplicas"] == 1  # KServe's default, applied on create


def test_predict_v1_through_gateway(sklearn_isvc: dict[str, Any], api: httpx.Client) -> None:
    base = f"/serving/{NS}/iris"
    assert api.get(f"{base}/v1/models/iris").json() == {"name": "iris", "ready": True}
    r = api.post(f"{base}/v1/models/iris:predict", json={"instances": SAMPLES})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [0, 2]}
    missing = api.post(f"{base}/v1/models/other:predict", json={"instances": SAMPLES})
    assert missing.status_code == 404 and "error" in missing.json()


def test_infer_v2_tritonclient_through_gateway(sklearn_isvc: dict[str, Any], platform: Any) -> None:
    """tritonclient takes the gateway's path prefix inside ``url`` (host:port/path)."""
    import tritonclient.http as triton

    host = platform.gateway_url.removeprefix("http://")
    client = triton.InferenceServerClient(url=f"{host}/serving/{NS}/iris")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("iris")
        meta = client.get_model_metadata("iris")
        assert meta["name"] == "iris" and meta["inputs"][0]["shape"] == [-1, 4]
        x = np.array(SAMPLES, dtype=np.float32)
        tensor = triton.InferInput("input-0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)  # binary tensor extension, tritonclient's default
        result = client.infer("iris", [tensor], request_id="42")
        assert result.as_numpy("output-0").tolist() == [0, 2]
        assert result.get_response()["id"] == "42"
        as_json = triton.InferInput("input-0", list(x.shape), "FP64")
        as_json.set_data_from_numpy(x.astype(np.float64), binary_data=False)
        out = triton.InferRequestedOutput("output-0", binary_data=False)
        result = client.infer("iris", [as_json], outputs=[out])
        assert result.get_response()["outputs"][0]["data"] == [0, 2]
    finally:
        client.close()


def test_infer_v2_bad_tensor_oip_error(sklearn_isvc: dict[str, Any], api: httpx.Client) -> None:
    r = api.post(
        f"/serving/{NS}/iris/v2/models/iris/infer",
        json={
            "inputs": [
                {"name": "input-0", "shape": [3, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
            ]
        },
    )
    assert r.status_code == 400
    assert r.json() == {"error": "input input-0: 4 elements, shape [3, 4] needs 12"}


def test_replica_counts_over_the_max_scale_limit_422(api: httpx.Client) -> None:
    """Every replica count a tenant gives (predictor, transformer, explainer) is bounded by
    the platform's max-scale-limit (Knative's, 10 by default): above it the create and a
    patch are 422s naming the field, and nothing is stored or started; at it, accepted."""
    limit = "must be at most 10, the platform's max-scale-limit (SHIPYARD_MAX_SCALE_LIMIT on "
    model = {"modelFormat": {"name": "sklearn"}, "storageUri": "pvc://no-such-claim/many"}
    many = isvc("many", {"model": model, "minReplicas": 11, "maxReplicas": 20})
    container = {"name": "kserve-container", "image": "example/t:1"}
    many["spec"]["transformer"] = {"containers": [container], "maxReplicas": 500}
    many["spec"]["explainer"] = {"containers": [container], "minReplicas": 1000}
    r = api.post(ISVC_PATH, json=many)
    assert r.status_code == 422, r.text
    assert {c["field"]: c["message"] for c in r.json()["details"]["causes"]} == {
        "spec.predictor.minReplicas": limit + "the serving service), got 11",
        "spec.predictor.maxReplicas": limit + "the serving service), got 20",
        "spec.transformer.maxReplicas": limit + "the serving service), got 500",
        "spec.explainer.minReplicas": limit + "the serving service), got 1000",
    }
    assert api.get(f"{ISVC_PATH}/many").status_code == 404
    at_limit = isvc("many", {"model": model, "minReplicas": 0, "maxReplicas": 10})
    r = api.post(ISVC_PATH, json=at_limit)
    assert r.status_code == 201, r.text
    r = api.patch(
        f"{ISVC_PATH}/many",
        json={"spec": {"predictor": {"minReplicas": 4000, "maxReplicas": 4000}}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["details"]["causes"] == [
        {
            "field": f"spec.predictor.{field}",
            "message": limit + "the serving service), got 4000",
            "reason": "FieldValueInvalid",
        }
        for field in ("minReplicas", "maxReplicas")
    ]
    stored = api.get(f"{ISVC_PATH}/many").json()["spec"]["predictor"]
    assert (stored["minReplicas"], stored["maxReplicas"]) == (0, 10)
    assert api.delete(f"{ISVC_PATH}/many").status_code == 200


def test_create_inferenceservice_bad_spec_422(api: httpx.Client) -> None:
    bad = isvc(
        "bad",
        {
            "model": {
                "modelFormat": {},
                "storageUri": "file:///m",
                "protocolVersion": "v3",
                "colour": "red",
            },
            "minReplicas": 2,
            "maxReplicas": 1,
            "canaryTrafficPercent": 101,
        },
    )
    # Strict, as kubectl and the shipyard CLI ask: the unknown field is an error too.
    r = api.post(ISVC_PATH, json=bad, params={"fieldValidation": "Strict"})
    assert r.status_code == 422, r.text
    fields = {c["field"] for c in r.json()["details"]["causes"]}
    assert {
        "spec.predictor.model.modelFormat.name",
        "spec.predictor.model.protocolVersion",
        "spec.predictor.model.colour",
        "spec.predictor.canaryTrafficPercent",
    } <= fields, fields
    semantic = isvc(
        "bad",
        {
            "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://bucket/m"},
            "minReplicas": 3,
            "maxReplicas": 2,
        },
    )
    container = {"name": "kserve-container", "image": "example/t:1"}
    semantic["spec"]["transformer"] = {"containers": [container], "minReplicas": 0}
    semantic["spec"]["explainer"] = {"containers": [container], "minReplicas": 3, "maxReplicas": 2}
    causes = api.post(ISVC_PATH, json=semantic).json()["details"]["causes"]
    assert {c["field"]: c["message"] for c in causes} == {
        "spec.predictor.maxReplicas": "must be >= minReplicas (3), got 2",
        "spec.predictor.model.storageUri": next(
            c["message"] for c in causes if c["field"] == "spec.predictor.model.storageUri"
        ),
        "spec.transformer.minReplicas": "a transformer does not scale to zero here (only the "
        "predictor does)",
        "spec.explainer.maxReplicas": "must be >= minReplicas (3), got 2",
    }


def test_create_inferenceservice_file_uri_422(api: httpx.Client, claim: Any) -> None:
    """file:// names a host path, which no model server sees: refused, naming pvc://."""
    data: Path = claim("file-models")
    body = isvc(
        "file-uri",
        {"model": {"modelFormat": {"name": "python"}, "storageUri": f"file://{data / 'm'}"}},
    )
    r = api.post(ISVC_PATH, json=body)
    assert r.status_code == 422, r.text
    causes = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
    assert "pvc://<claim>/<path>" in causes["spec.predictor.model.storageUri"], causes


def test_update_inferenceservice_canary_split_then_promote(
    api: httpx.Client, claim: Any, platform: Any
) -> None:
    """30% canary: both revisions answer ~30/70 through the gateway; removing it promotes."""
    data: Path = claim("canary-models")
    for version in ("a", "b"):
        (data / version).mkdir(parents=True, exist_ok=True)
        (data / version / "model.py").write_text(REVISION_MODEL)
    predictor = {
        "model": {"modelFormat": {"name": "python"}, "storageUri": "pvc://canary-models/a"}
    }
    assert api.post(ISVC_PATH, json=isvc("rev", predictor)).status_code == 201
    wait_isvc(api, "rev", ready)
    url = f"/serving/{NS}/rev/v1/models/rev:predict"
    assert predict(api, url, {"instances": [1]}) == {"predictions": ["rev-predictor-00001"]}

    patch = {
        "spec": {
            "predictor": {
                "canaryTrafficPercent": 30,
                "model": {"storageUri": "pvc://canary-models/b"},
            }
        }
    }
    r = api.patch(
        f"{ISVC_PATH}/rev", json=patch, headers={"content-type": "application/merge-patch+json"}
    )
    assert r.status_code == 200, r.text
    obj = wait_isvc(
        api, "rev", lambda o: len(o["status"]["components"]["predictor"].get("traffic", [])) == 2
    )
    pred = obj["status"]["components"]["predictor"]
    assert pred["latestRolledoutRevision"] == "rev-predictor-00001"
    assert pred["latestCreatedRevision"] == "rev-predictor-00002"
    assert [(t["revisionName"], t["percent"], t["tag"]) for t in pred["traffic"]] == [
        ("rev-predictor-00001", 70, "prev"),
        ("rev-predictor-00002", 30, "latest"),
    ]
    time.sleep(0.3)  # the gateway applies the route event asynchronously
    seen = Counter(predict(api, url, {"instances": [1]})["predictions"][0] for _ in range(200))
    assert set(seen) == {"rev-predictor-00001", "rev-predictor-00002"}, seen
    assert 35 <= seen["rev-predictor-00002"] <= 85, seen  # 30% of 200 = 60, ~5 sigma

    r = api.patch(
        f"{ISVC_PATH}/rev",
        json={"spec": {"predictor": {"canaryTrafficPercent": 0}}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    wait_isvc(
        api,
        "rev",
        lambda o: (
            [t["percent"] for t in o["status"]["components"]["predictor"]["traffic"]] == [100, 0]
        ),
    )
    time.sleep(0.3)
    rolled_back = {predict(api, url, {"instances": [1]})["predictions"][0] for _ in range(20)}
    assert rolled_back == {"rev-predictor-00001"}  # 0 rolls back; the canary keeps running

    r = api.patch(
        f"{ISVC_PATH}/rev",
        json={"spec": {"predictor": {"canaryTrafficPercent": None}}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    obj = wait_isvc(
        api,
        "rev",
        lambda o: (
            o["status"]["components"]["predictor"].get("latestRolledoutRevision")
            == "rev-predictor-00002"
            and ready(o)
        ),
    )
    pred = obj["status"]["components"]["predictor"]
    assert pred["previousRolledoutRevision"] == "rev-predictor-00001"
    assert pred["traffic"] == [
        {"revisionName": "rev-predictor-00002", "percent": 100, "latestRevision": True}
    ]
    runtime = LocalRuntime(platform.state_dir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        import asyncio

        names = [
            w.name
            for w in asyncio.run(
                runtime.list({"serving.kserve.io/inferenceservice": "rev"}, namespace=NS)
            )
        ]
        if names == ["isvc-rev-2"]:
            break
        time.sleep(0.1)
    assert names == ["isvc-rev-2"]
    time.sleep(0.3)
    answers = {predict(api, url, {"instances": [1]})["predictions"][0] for _ in range(20)}
    assert answers == {"rev-predictor-00002"}


def test_delete_inferenceservice_stops_workloads(
    api: httpx.Client, claim: Any, platform: Any
) -> None:
    import asyncio

    data: Path = claim("gone-models")
    (data / "m").mkdir(exist_ok=True)
    (data / "m" / "model.py").write_text(REVISION_MODEL)
    body = isvc(
        "gone", {"model": {"modelFormat": {"name": "python"}, "storageUri": "pvc://gone-models/m"}}
    )
    assert api.post(ISVC_PATH, json=body).status_code == 201
    wait_isvc(api, "gone", ready)
    runtime = LocalRuntime(platform.state_dir)
    selector = {"serving.kserve.io/inferenceservice": "gone"}
    assert len(asyncio.run(runtime.list(selector, namespace=NS))) == 1
    assert api.delete(f"{ISVC_PATH}/gone").status_code == 200
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and api.get(f"{ISVC_PATH}/gone").status_code != 404:
        time.sleep(0.1)
    assert api.get(f"{ISVC_PATH}/gone").status_code == 404
    assert asyncio.run(runtime.list(selector, namespace=NS)) == []
    r = api.post(f"/serving/{NS}/gone/v1/models/gone:predict", json={"instances": [1]})
    assert r.status_code in (404, 503)


def test_create_inferenceservice_model_missing_reports_failure(
    api: httpx.Client, claim: Any
) -> None:
    """A model that cannot load shows in KServe's status fields, not only in logs."""
    claim("empty-models")
    body = isvc(
        "broken",
        {
            "model": {
                "modelFormat": {"name": "sklearn"},
                "storageUri": "pvc://empty-models/nothing-here",
            }
        },
    )
    assert api.post(ISVC_PATH, json=body).status_code == 201
    obj = wait_isvc(
        api,
        "broken",
        lambda o: (
            (o.get("status") or {}).get("modelStatus", {}).get("transitionStatus")
            == "BlockedByFailedLoad"
        ),
        timeout=20,
    )
    status = obj["status"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["PredictorReady"]["status"] == "False"
    assert "does not exist" in conds["PredictorReady"]["message"]
    failure = status["modelStatus"]["lastFailureInfo"]
    assert failure["reason"] == "ModelLoadFailed"
    assert failure["modelRevisionName"] == "broken-predictor-00001"
    assert status["modelStatus"]["states"]["targetModelState"] == "FailedToLoad"
    assert "url" not in status
    assert api.delete(f"{ISVC_PATH}/broken").status_code == 200


def test_create_inferenceservice_custom_container(api: httpx.Client, claim: Any) -> None:
    """A custom predictor runs its own command on $PORT and gets the gateway's path prefix."""
    data: Path = claim("custom-models")
    (data / "m").mkdir(exist_ok=True)
    (data / "m" / "model.py").write_text(REVISION_MODEL)
    container = {
        "name": "kserve-container",
        "image": "example/custom:1",
        "command": ["python", "-m", "services.serving.modelserver"],
        "args": [
            "--model-name",
            "custom",
            "--model-dir",
            "/mnt/models/m",
            "--model-format",
            "python",
            "--port",
            "$(PORT)",
        ],
        "volumeMounts": [{"name": "models", "mountPath": "/mnt/models", "readOnly": True}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready"}},
    }
    predictor = {
        "containers": [container],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "custom-models"}}],
    }
    assert api.post(ISVC_PATH, json=isvc("custom", predictor)).status_code == 201
    wait_isvc(api, "custom", ready)
    answer = predict(api, f"/serving/{NS}/custom/v1/models/custom:predict", {"instances": [0, 0]})
    assert answer == {"predictions": ["custom-predictor-00001"] * 2}
    assert api.delete(f"{ISVC_PATH}/custom").status_code == 200


def test_create_inferenceservice_legacy_sklearn_block(
    sklearn_isvc: dict[str, Any], api: httpx.Client
) -> None:
    """The pre-``model`` spelling (``predictor.sklearn``) serves the same model over V1."""
    body = isvc("legacy", {"sklearn": {"storageUri": "pvc://models/iris/model.joblib"}})
    assert api.post(ISVC_PATH, json=body).status_code == 201
    wait_isvc(api, "legacy", ready)
    answer = predict(api, f"/serving/{NS}/legacy/v1/models/legacy:predict", {"instances": SAMPLES})
    assert answer == {"predictions": [0, 2]}
    assert api.delete(f"{ISVC_PATH}/legacy").status_code == 200


def test_reconcile_inferenceservice_restarts_stopped_server(
    sklearn_isvc: dict[str, Any], api: httpx.Client, platform: Any
) -> None:
    """An orderly stop (as on service shutdown) ends the server; the resync starts it again."""
    import asyncio

    runtime = LocalRuntime(platform.state_dir)
    stopped = asyncio.run(runtime.stop_all({"serving.kserve.io/inferenceservice": "iris"}))
    assert [w.name for w in stopped] == ["isvc-iris-1"]

    def serving_again(o: dict[str, Any]) -> bool:
        try:
            server = asyncio.run(runtime.status(NS, "isvc-iris-1"))
        except WorkloadNotFound:
            return False  # between the stopped server's removal and its new start
        return (
            ready(o)
            and server.ready
            and server.endpoint == o["status"]["components"]["predictor"].get("endpoint")
        )

    obj = wait_isvc(api, "iris", serving_again, timeout=20)
    assert (
        obj["status"]["components"]["predictor"]["latestRolledoutRevision"]
        == "iris-predictor-00001"
    )
    time.sleep(0.3)
    answer = predict(api, f"/serving/{NS}/iris/v1/models/iris:predict", {"instances": SAMPLES})
    assert answer == {"predictions": [0, 2]}
