"""The model server's protocol handling, in process (the end-to-end tests run it for real)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.serving.modelserver.app import create_model_app
from services.serving.modelserver.loaders import ModelLoadError, load_model

from .conftest import model_server_main, train_sklearn

ECHO_MODEL = """def predict(instances):
    return [row if not isinstance(row, list) else sum(row) for row in instances]
"""


@pytest.fixture(scope="module")
def echo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("echo")
    (directory / "model.py").write_text(ECHO_MODEL)
    return directory


def client_for(model_dir: Path, fmt: str, prefix: str = "") -> httpx.AsyncClient:
    app = create_model_app(load_model("m", fmt, model_dir), "v2", prefix)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ms")


async def test_infer_v2_datatypes_json(echo_dir: Path) -> None:
    async with client_for(echo_dir, "python") as c:
        cases: list[tuple[str, Any, Any]] = [
            ("INT32", [[1, 2], [3, 4]], [3, 7]),
            ("FP64", [[0.5, 0.25]], [0.75]),
            ("BOOL", [True, False], [True, False]),
            ("BYTES", ["a", "bc"], ["a", "bc"]),
        ]
        for datatype, data, expected in cases:
            shape = list(np.array(data).shape)
            r = await c.post(
                "/v2/models/m/infer",
                json={
                    "id": "r1",
                    "inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}],
                },
            )
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["id"] == "r1" and out["model_name"] == "m"
            assert out["outputs"][0]["data"] == expected, datatype
            assert out["outputs"][0]["shape"] == [len(expected)]


async def test_infer_v2_binary_request_and_response(echo_dir: Path) -> None:
    """The binary tensor extension, both ways, with BYTES' 4-byte length prefixes."""
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 11},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    blob = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 1) + b"!"
    async with client_for(echo_dir, "python") as c:
        r = await c.post(
            "/v2/models/m/infer",
            content=head + blob,
            headers={"Inference-Header-Content-Length": str(len(head))},
        )
    assert r.status_code == 200, r.text
    json_len = int(r.headers["inference-header-content-length"])
    doc = json.loads(r.content[:json_len])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 11}
    assert r.content[json_len:] == blob


async def test_infer_v2_errors_oip_shape(echo_dir: Path) -> None:
    async with client_for(echo_dir, "python") as c:
        bad_type = await c.post(
            "/v2/models/m/infer",
            json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]},
        )
        missing = await c.post("/v2/models/nope/infer", json={"inputs": []})
        no_inputs = await c.post("/v2/models/m/infer", json={"inputs": []})
        short = await c.post(
            "/v2/models/m/infer",
            content=b'{"inputs":[{"name":"x","shape"'
            b':[4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}',
            headers={"Inference-Header-Content-Length": "84"},
        )
    assert bad_type.status_code == 400
    assert bad_type.json() == {"error": "input x: unsupported datatype 'FP8'"}
    assert missing.status_code == 404 and missing.json() == {
        "error": "Model with name nope does not exist."
    }
    assert no_inputs.status_code == 400 and "inputs" in no_inputs.json()["error"]
    assert short.status_code == 400 and "error" in short.json()


async def test_read_v2_health_under_prefix(echo_dir: Path) -> None:
    async with client_for(echo_dir, "python", "/serving/ns/m") as c:
        for base in ("", "/serving/ns/m"):
            assert (await c.get(f"{base}/v2/health/live")).json() == {"live": True}
            assert (await c.get(f"{base}/v2/health/ready")).json() == {"ready": True}
            assert (await c.get(f"{base}/v2/models/m/ready")).status_code == 200
            assert (await c.get(f"{base}/v2")).json()["extensions"] == ["binary_tensor_data"]
        assert (await c.get("/serving/ns/other/v2/health/ready")).status_code == 404


async def test_inference_paths_answered_before_routing(echo_dir: Path) -> None:
    """The fast path (modelserver.fastpath): infer and predict at the root, under the prefix
    and with a version; gzip bodies; another method a 405; an unknown model a 404."""
    import gzip

    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}]}
    async with client_for(echo_dir, "python", "/serving/ns/m") as c:
        for path in (
            "/v2/models/m/infer",
            "/serving/ns/m/v2/models/m/infer",
            "/serving/ns/m/v2/models/m/versions/1/infer",
        ):
            r = await c.post(path, json=body)
            assert r.status_code == 200, (path, r.text)
            assert r.json()["outputs"][0]["data"] == [3], path
        zipped = await c.post(
            "/serving/ns/m/v1/models/m:predict",
            content=gzip.compress(json.dumps({"instances": [[1, 2], [3, 4]]}).encode()),
            headers={"content-encoding": "gzip"},
        )
        wrong_method = await c.get("/v2/models/m/infer")
        not_json = await c.post("/v1/models/m:predict", content=b"{")
        unknown = await c.post("/serving/ns/m/v1/models/other:predict", json={"instances": []})
    assert zipped.json() == {"predictions": [3, 7]}
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"error": "method GET not allowed on /v2/models/m/infer"}
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Model with name other does not exist."}


async def test_predict_v1_sklearn_pickle(tmp_path: Path) -> None:
    import joblib

    model = train_sklearn(tmp_path / "sk")
    import pickle

    pkl, joblib_pkl = tmp_path / "pkl", tmp_path / "joblib-pkl"
    pkl.mkdir()
    joblib_pkl.mkdir()
    (pkl / "model.pkl").write_bytes(pickle.dumps(model))
    joblib.dump(model, joblib_pkl / "model.pkl")  # not a plain pickle, often named .pkl
    async with (
        client_for(tmp_path / "sk", "sklearn") as joblib_c,
        client_for(pkl, "sklearn") as pickle_c,
        client_for(joblib_pkl, "sklearn") as joblib_pkl_c,
    ):
        for c in (joblib_c, pickle_c, joblib_pkl_c):
            r = await c.post(
                "/v1/models/m:predict",
                json={"instances": [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]},
            )
            assert r.json() == {"predictions": [0, 2]}
            bad = await c.post("/v1/models/m:predict", json={"instances": [[1, 2]]})
            assert bad.status_code == 400 and "features" in bad.json()["error"]
            assert (await c.get("/v1/models/m")).json() == {"name": "m", "ready": True}


def test_load_model_missing_file_says_what(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no model.joblib or model.pkl"):
        load_model("m", "sklearn", tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("m", "python", tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="no model.onnx in"):
        load_model("m", "onnx", tmp_path)
    with pytest.raises(ModelLoadError, match="unknown model format 'tensorflow'"):
        load_model("m", "tensorflow", tmp_path)


def test_modelserver_main_exits_on_bad_model(tmp_path: Path) -> None:
    done = model_server_main(tmp_path)
    assert done.returncode == 1
    assert "cannot load model m" in done.stderr


class SlowModel:
    """A model whose calls take long (as a text generation does): ``in_thread``."""

    name = "m"
    in_thread = True

    def predict(self, instances: list[Any]) -> list[Any]:
        import time

        time.sleep(1.0)
        return instances

    def predict_array(self, inputs: np.ndarray) -> np.ndarray:
        return inputs

    def infer(self, inputs: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
        return inputs

    def metadata(self) -> dict[str, Any]:
        return {"inputs": [], "outputs": []}


async def test_slow_model_leaves_the_server_answering() -> None:
    """While a slow model's call runs in a worker thread, the readiness probe is answered."""
    import asyncio
    import time

    app = create_model_app(SlowModel(), "v2")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ms") as c:
        predict = asyncio.create_task(c.post("/v1/models/m:predict", json={"instances": [7]}))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        ready = await c.get("/v2/health/ready")
        waited = time.monotonic() - started
        assert ready.json() == {"ready": True}
        assert not predict.done() and waited < 0.5, waited
        assert (await predict).json() == {"predictions": [7]}


def test_tensor_shapes_and_dtypes_at_the_edges() -> None:
    """A shape whose product does not fit int64 is a 400's TensorError (not a wrapped count
    that numpy would reshape into a 500); a big-endian array has its OIP datatype."""
    from services.serving.modelserver.tensors import TensorError, datatype_of, decode_request

    huge = {"name": "x", "shape": [2**40, 2**40], "datatype": "FP32", "data": [1.0]}
    with pytest.raises(TensorError, match=r"1 elements, shape \[1099511627776, 1099511627776\]"):
        decode_request(json.dumps({"inputs": [huge]}).encode(), None)
    assert datatype_of(np.zeros(2, dtype=">f4")) == "FP32"
    assert datatype_of(np.zeros(2, dtype=np.uint8)) == "UINT8"
    with pytest.raises(TensorError, match="complex64"):
        datatype_of(np.zeros(2, dtype=np.complex64))
