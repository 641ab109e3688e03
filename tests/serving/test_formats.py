"""Model formats beyond sklearn, end to end: xgboost, lightgbm, onnx and pytorch (TorchScript)
models built here, served by real InferenceServices on the shared platform (from a PVC, and
one from the platform's S3 bucket), answering V1 and V2 with the libraries' own predictions;
KServe's legacy ``predictor.xgboost`` block; a format whose library cannot be imported; and
the formats and predictor shapes admission refuses.

Every service is created at once by one module fixture and their model servers start side
by side, so the file costs about one server start.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.common.objectstore import ObjectStore
from services.common.settings import SINGLE_USER_NAMESPACE as NS

from .conftest import ISVC_PATH, isvc, predict, ready, wait_isvc

SAMPLES = [[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]]
#: A stand-in for lightgbm that cannot be imported, put first on the server's PYTHONPATH.
BROKEN_LIGHTGBM = (
    'raise ImportError("lightgbm is broken on purpose (tests/serving/test_formats)")\n'
)


def iris_like() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    centers = np.array(SAMPLES)
    x = np.concatenate([c + rng.normal(scale=0.15, size=(30, 4)) for c in centers])
    return x, np.repeat([0, 1, 2], 30)


def build_models(root: Path) -> dict[str, Any]:
    """Tiny models of each format in ``root/<format>``; the in-memory models, to compare."""
    import lightgbm
    import torch
    import xgboost
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = iris_like()
    for sub in ("xgboost", "lightgbm", "onnx", "pytorch", "broken", "broken/lightgbm"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "nthread": 1}
    booster = xgboost.train(params, xgboost.DMatrix(x, label=y), num_boost_round=4)
    booster.save_model(str(root / "xgboost" / "model.json"))
    lgb_params = {"objective": "multiclass", "num_class": 3, "num_leaves": 4, "verbose": -1}
    lgb_params |= {"num_threads": 1, "min_data_in_leaf": 5}
    lgb = lightgbm.train(lgb_params, lightgbm.Dataset(x, y), num_boost_round=4)
    lgb.save_model(str(root / "lightgbm" / "model.bst"))
    (root / "broken" / "model.bst").write_bytes((root / "lightgbm" / "model.bst").read_bytes())
    (root / "broken" / "lightgbm" / "__init__.py").write_text(BROKEN_LIGHTGBM)
    logistic = LogisticRegression(max_iter=500).fit(x, y)
    onx = to_onnx(logistic, x[:1].astype(np.float32), options={"zipmap": False})
    (root / "onnx" / "model.onnx").write_bytes(onx.SerializeToString())
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
    script = torch.jit.script(net)
    torch.jit.save(script, str(root / "pytorch" / "model.pt"))
    return {
        "xgboost": booster,
        "lightgbm": lgb,
        "onnx": logistic,
        "onnx_file": root / "onnx" / "model.onnx",
        "pytorch": script,
    }


def model(fmt: str, uri: str, **extra: Any) -> dict[str, Any]:
    return {"model": {"modelFormat": {"name": fmt}, "storageUri": uri, **extra}}


def failed(obj: dict[str, Any]) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c.get("reason") == "RevisionFailed" for c in conds)


@pytest.fixture(scope="module")
def served(
    api: httpx.Client, claim: Any, seaweedfs: Any, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """The models, and their InferenceServices created together and waited for."""
    data: Path = claim("formats")
    models = build_models(data)
    # The onnx model comes from the platform's bucket, as KServe users keep theirs in S3.
    key = f"models/{NS}/formats-{os.urandom(4).hex()}/model.onnx"

    async def upload() -> None:
        async with ObjectStore(seaweedfs.config) as store:
            body = (data / "onnx" / "model.onnx").read_bytes()

            async def chunks() -> Any:
                yield body

            await store.put_stream(key, chunks())

    asyncio.run(upload())
    services = {
        "fmt-xgb": model("xgboost", "pvc://formats/xgboost", protocolVersion="v2"),
        "fmt-lgb": model("lightgbm", "pvc://formats/lightgbm"),
        "fmt-onnx": model("onnx", f"s3://{seaweedfs.config.bucket}/{key}", protocolVersion="v2"),
        "fmt-pt": model("pytorch", "pvc://formats/pytorch"),
        # KServe v1beta1's legacy framework block, with its other fields.
        "fmt-legacy": {
            "xgboost": {
                "storageUri": "pvc://formats/xgboost",
                "runtimeVersion": "v0.14.0",
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
            }
        },
        # The server's lightgbm import fails: the shadow package comes first on its path.
        "fmt-nolib": model(
            "lightgbm",
            "pvc://formats/broken",
            env=[{"name": "PYTHONPATH", "value": "/mnt/models/broken"}],
        ),
    }
    for name, predictor in services.items():
        r = api.post(ISVC_PATH, json=isvc(name, predictor))
        assert r.status_code == 201, r.text
    objects = {
        name: wait_isvc(api, name, failed if name == "fmt-nolib" else ready, timeout=90)
        for name in services
    }
    yield models, objects
    for name in services:
        api.delete(f"{ISVC_PATH}/{name}")


def v2_infer(api: httpx.Client, name: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    body = {"inputs": inputs}
    answer = predict(api, f"/serving/{NS}/{name}/v2/models/{name}/infer", body)
    assert answer["model_name"] == name
    return {o["name"]: o for o in answer["outputs"]}


def fp64_input(name: str = "input-0") -> dict[str, Any]:
    return {"name": name, "datatype": "FP64", "shape": [3, 4], "data": sum(SAMPLES, [])}


def v1_predict(api: httpx.Client, name: str) -> list[Any]:
    url = f"/serving/{NS}/{name}/v1/models/{name}:predict"
    answer = predict(api, url, {"instances": SAMPLES})
    return answer["predictions"]  # type: ignore[no-any-return]


def test_xgboost_v1_v2_answer_the_boosters_predictions(served: Any, api: httpx.Client) -> None:
    import xgboost

    models, _ = served
    expected = models["xgboost"].predict(xgboost.DMatrix(np.array(SAMPLES)))
    assert expected.dtype == np.float32 and expected.shape == (3, 3)
    np.testing.assert_allclose(v1_predict(api, "fmt-xgb"), expected, rtol=1e-6)
    out = v2_infer(api, "fmt-xgb", [fp64_input()])["output-0"]
    assert out["datatype"] == "FP32" and out["shape"] == [3, 3]  # as KServe's xgbserver
    np.testing.assert_allclose(out["data"], expected.ravel(), rtol=1e-6)
    assert np.argmax(expected, axis=1).tolist() == [0, 1, 2]
    meta = api.get(f"/serving/{NS}/fmt-xgb/v2/models/fmt-xgb").json()
    assert meta["platform"] == "xgboost_shipyard"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]


def test_lightgbm_v1_v2_answer_the_boosters_predictions(served: Any, api: httpx.Client) -> None:
    models, _ = served
    expected = models["lightgbm"].predict(np.array(SAMPLES))
    assert expected.dtype == np.float64
    np.testing.assert_allclose(v1_predict(api, "fmt-lgb"), expected, rtol=1e-12)
    out = v2_infer(api, "fmt-lgb", [fp64_input()])["output-0"]
    assert out["datatype"] == "FP64" and out["shape"] == [3, 3]  # as KServe's lgbserver
    np.testing.assert_allclose(out["data"], expected.ravel(), rtol=1e-12)
    # Instances keyed by feature name, as lgbserver takes them (lightgbm names Column_i).
    names = models["lightgbm"].feature_name()
    keyed = [dict(zip(names, row, strict=True)) for row in SAMPLES]
    url = f"/serving/{NS}/fmt-lgb/v1/models/fmt-lgb:predict"
    np.testing.assert_allclose(
        predict(api, url, {"instances": keyed})["predictions"], expected, rtol=1e-12
    )


def test_onnx_from_s3_v2_by_input_name_tritonclient(served: Any, platform: Any) -> None:
    """Inputs by the graph's names, every tensor output by its name and dtype (binary)."""
    import onnxruntime
    import tritonclient.http as triton

    models, _ = served
    x = np.array(SAMPLES, dtype=np.float32)
    session = onnxruntime.InferenceSession(
        str(models["onnx_file"]), providers=["CPUExecutionProvider"]
    )
    label, probabilities = session.run(None, {"X": x})
    assert label.tolist() == models["onnx"].predict(x).tolist() == [0, 1, 2]
    host = platform.gateway_url.removeprefix("http://")
    client = triton.InferenceServerClient(url=f"{host}/serving/{NS}/fmt-onnx")
    try:
        meta = client.get_model_metadata("fmt-onnx")
        assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
        assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
            ("label", "INT64"),
            ("probabilities", "FP32"),
        ]
        tensor = triton.InferInput("X", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)  # binary tensor data
        result = client.infer("fmt-onnx", [tensor])
        assert result.as_numpy("label").tolist() == label.tolist()
        np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
    finally:
        client.close()


def test_onnx_v1_and_json_v2_cast_and_wrong_inputs(served: Any, api: httpx.Client) -> None:
    models, _ = served
    assert v1_predict(api, "fmt-onnx") == models["onnx"].predict(np.array(SAMPLES)).tolist()
    # FP64 JSON data for an FP32 input is cast; one tensor fits a one-input graph by any name.
    outputs = v2_infer(api, "fmt-onnx", [fp64_input("anything")])
    assert outputs["label"] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [3],
        "data": [0, 1, 2],
    }
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(3, 3)
    expected = models["onnx"].predict_proba(np.array(SAMPLES))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    url = f"/serving/{NS}/fmt-onnx/v2/models/fmt-onnx/infer"
    bad = {"inputs": [fp64_input("X"), fp64_input("Y")]}
    r = api.post(url, json=bad)
    assert r.status_code == 400 and "the model's inputs are ['X']" in r.json()["error"], r.text
    short = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    r = api.post(url, json=short)
    assert r.status_code == 400 and "invalid input" in r.json()["error"], r.text


def test_pytorch_torchscript_v1_v2(served: Any, api: httpx.Client) -> None:
    import torch

    models, _ = served
    with torch.inference_mode():
        expected = models["pytorch"](torch.tensor(SAMPLES, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(v1_predict(api, "fmt-pt"), expected, rtol=1e-6)
    out = v2_infer(api, "fmt-pt", [fp64_input()])["output-0"]
    assert out["datatype"] == "FP32" and out["shape"] == [3, 3]
    np.testing.assert_allclose(out["data"], expected.ravel(), rtol=1e-6)
    r = api.post(f"/serving/{NS}/fmt-pt/v1/models/fmt-pt:predict", json={"instances": [[1.0]]})
    assert r.status_code == 400 and "cannot be multiplied" in r.json()["error"], r.text


def test_legacy_xgboost_block_served_as_model(served: Any, api: httpx.Client) -> None:
    import xgboost

    models, objects = served
    spec = objects["fmt-legacy"]["spec"]["predictor"]
    assert "model" not in spec and spec["xgboost"]["runtimeVersion"] == "v0.14.0"
    expected = models["xgboost"].predict(xgboost.DMatrix(np.array(SAMPLES)))
    np.testing.assert_allclose(v1_predict(api, "fmt-legacy"), expected, rtol=1e-6)


def test_missing_library_is_a_condition_not_a_crash_loop(served: Any, api: httpx.Client) -> None:
    _, objects = served
    status = objects["fmt-nolib"]["status"]
    conds = {c["type"]: c for c in status["conditions"]}
    message = conds["Ready"]["message"]
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "RevisionFailed"
    assert "needs the Python package 'lightgbm'" in message, message
    assert "broken on purpose" in message and "serving-formats" in message, message
    failure = status["modelStatus"]["lastFailureInfo"]
    assert failure["reason"] == "ModelLoadFailed" and "lightgbm" in failure["message"]
    assert status["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"


def causes_of(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    return {c["field"]: c["message"] for c in body["details"]["causes"]}


@pytest.mark.parametrize(
    ("fmt", "why"),
    [("tensorflow", "TensorFlow Serving"), ("pmml", "Java PMML"), ("paddle", "paddlepaddle")],
)
def test_create_inferenceservice_unsupported_format_422(
    api: httpx.Client, fmt: str, why: str
) -> None:
    body = isvc("no-runtime", model(fmt, "pvc://formats/x"))
    found = causes_of(api.post(ISVC_PATH, json=body))
    message = found["spec.predictor.model.modelFormat.name"]
    assert f"model format {fmt!r} is not supported" in message and why in message, message
    assert "xgboost, lightgbm, onnx, pytorch" in message
    legacy = causes_of(
        api.post(ISVC_PATH, json=isvc("no-runtime", {fmt: {"storageUri": "pvc://x/y"}}))
    )
    assert why in legacy[f"spec.predictor.{fmt}"]


def test_create_inferenceservice_two_implementations_422(api: httpx.Client) -> None:
    both = {"sklearn": {"storageUri": "pvc://x/a"}, "onnx": {"storageUri": "pvc://x/b"}}
    found = causes_of(api.post(ISVC_PATH, json=isvc("two", both)))
    assert "exactly one of [model, sklearn, xgboost" in found["spec.predictor"]
    assert "(got sklearn, onnx)" in found["spec.predictor"]
    with_model = {**model("xgboost", "pvc://x/a"), "lightgbm": {"storageUri": "pvc://x/b"}}
    found = causes_of(api.post(ISVC_PATH, json=isvc("two", with_model)))
    assert "(got model, lightgbm)" in found["spec.predictor"]
    assert api.get(f"{ISVC_PATH}/two").status_code == 404
