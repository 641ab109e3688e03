"""Adaptive batching (``spec.predictor.batcher``): the model server's batcher with a fake model
that records its calls, the app with it in process, and one InferenceService for real."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.common.settings import SINGLE_USER_NAMESPACE as NS
from services.serving.models import batcher_args
from services.serving.modelserver.app import BATCH_HEADER, create_model_app
from services.serving.modelserver.batcher import Batcher, ModelBatcher
from services.serving.modelserver.loaders import Tensors

from .conftest import ISVC_PATH, isvc, ready, wait_isvc


class FakeModel:
    """Doubles each row; records the rows of each call; fails on a row of -1 (ValueError,
    a 400) or -2 (RuntimeError, a 500); ``bad_split`` answers one row too few."""

    name = "m"
    in_thread = False

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.bad_split = False

    def _check(self, rows: list[Any]) -> None:
        self.calls.append(rows)
        if -1 in rows:
            raise ValueError("row -1 is not a number I know")
        if -2 in rows:
            raise RuntimeError("the model broke")

    def predict(self, instances: list[Any]) -> list[Any]:
        self._check(list(instances))
        out = [row * 2 for row in instances]
        return out[:-1] if self.bad_split else out

    def predict_array(self, inputs: np.ndarray) -> np.ndarray:
        return inputs * 2

    def infer(self, inputs: Tensors) -> Tensors:
        self._check(inputs[0][1].reshape(len(inputs[0][1]), -1)[:, 0].tolist())
        return [(f"{name}-doubled", array * 2) for name, array in inputs]

    def metadata(self) -> dict[str, Any]:
        return {"inputs": [], "outputs": []}


def tensor(rows: list[Any], dtype: str = "float64", width: int = 2, name: str = "x") -> Tensors:
    return [(name, np.repeat(np.array(rows, dtype=dtype)[:, None], width, axis=1))]


async def test_v1_concurrent_requests_merged_and_split_in_order() -> None:
    model = FakeModel()
    batcher = ModelBatcher(model, max_batch_size=32, max_latency_ms=50)
    requests = [[i * 10 + j for j in range(i % 3 + 1)] for i in range(6)]
    answers = await asyncio.gather(*(batcher.predict(r) for r in requests))
    assert [a for a, _ in answers] == [[x * 2 for x in r] for r in requests]
    assert [n for _, n in answers] == [6] * 6
    assert model.calls == [[x for r in requests for x in r]]  # one call, in arrival order


async def test_v1_max_batch_size_flushes_without_waiting() -> None:
    model = FakeModel()
    batcher = ModelBatcher(model, max_batch_size=4, max_latency_ms=60_000)
    started = time.monotonic()
    answers = await asyncio.gather(*(batcher.predict([i, i]) for i in range(4)))
    assert time.monotonic() - started < 5  # maxBatchSize, not the minute of maxLatency
    assert [a for a, _ in answers] == [[i * 2, i * 2] for i in range(4)]
    # 2+2 rows fill a batch; never more than 4 rows in a call
    assert model.calls == [[0, 0, 1, 1], [2, 2, 3, 3]]
    assert [n for _, n in answers] == [2, 2, 2, 2]


async def test_v1_request_over_max_batch_size_runs_alone() -> None:
    model = FakeModel()
    batcher = ModelBatcher(model, max_batch_size=3, max_latency_ms=30)
    big, small = [1, 2, 3, 4], [5]
    (a_big, n_big), (a_small, n_small) = await asyncio.gather(
        batcher.predict(big), batcher.predict(small)
    )
    assert (a_big, n_big, a_small, n_small) == ([2, 4, 6, 8], 1, [10], 1)
    assert sorted(model.calls) == [[1, 2, 3, 4], [5]]


async def test_v1_max_latency_honoured() -> None:
    model = FakeModel()
    batcher = ModelBatcher(model, max_batch_size=100, max_latency_ms=300)
    started = time.monotonic()
    first = asyncio.ensure_future(batcher.predict([1]))
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(batcher.predict([2]))
    assert await first == ([2], 2) and await second == ([4], 2)
    elapsed = time.monotonic() - started
    assert 0.28 <= elapsed < 2, elapsed  # from the first request's arrival, not the last's
    later = await batcher.predict([3])  # a new batch after the flush, alone
    assert later == ([6], 1) and model.calls == [[1, 2], [3]]


async def test_v1_failing_batch_fails_each_request_with_the_model_error() -> None:
    model = FakeModel()
    batcher = ModelBatcher(model, max_batch_size=32, max_latency_ms=30)
    results = await asyncio.gather(
        batcher.predict([1]), batcher.predict([-1]), return_exceptions=True
    )
    assert all(isinstance(r, ValueError) and "row -1" in str(r) for r in results), results
    # the next batch is unaffected
    assert await batcher.predict([4]) == ([8], 1)
    model.bad_split = True
    results = await asyncio.gather(
        batcher.predict([1]), batcher.predict([2]), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) and "cannot be split" in str(r) for r in results)


async def test_v2_same_signature_merged_mixed_shapes_run_apart() -> None:
    model = FakeModel()
    batcher = ModelBatcher(model, max_batch_size=32, max_latency_ms=50)
    payloads = [
        tensor([1, 2]),
        tensor([3], width=3),  # another trailing shape
        tensor([4]),
        tensor([5], dtype="int32"),  # another datatype
        tensor([6], name="y"),  # another name
        tensor([7, 8, 9]),
    ]
    answers = await asyncio.gather(*(batcher.infer(p) for p in payloads))
    for payload, (outputs, _) in zip(payloads, answers, strict=True):
        (name, array), ((out_name, out),) = payload[0], outputs
        assert out_name == f"{name}-doubled" and out.dtype == array.dtype
        np.testing.assert_array_equal(out, array * 2)
    assert [n for _, n in answers] == [3, 1, 3, 1, 1, 3]
    assert sorted(model.calls) == sorted([[1, 2, 4, 7, 8, 9], [3], [5], [6]])


async def test_batcher_client_gone_does_not_break_the_batch() -> None:
    calls: list[list[int]] = []

    def run(payloads: list[int]) -> list[int]:
        calls.append(payloads)
        return [p + 1 for p in payloads]

    batcher = Batcher(run, max_batch_size=10, max_latency_ms=100)
    gone = asyncio.ensure_future(batcher.submit("k", 1, 1))
    stays = asyncio.ensure_future(batcher.submit("k", 2, 1))
    await asyncio.sleep(0.01)
    gone.cancel()
    assert await stays == (3, 2) and calls == [[1, 2]]


async def test_app_with_batcher_status_codes_and_header() -> None:
    model = FakeModel()
    app = create_model_app(model, "v2", "", ModelBatcher(model, 32, 50))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ms") as c:
        ok = [c.post("/v1/models/m:predict", json={"instances": [i]}) for i in range(5)]
        answers = await asyncio.gather(*ok)
        assert [r.json() for r in answers] == [{"predictions": [i * 2]} for i in range(5)]
        assert {r.headers[BATCH_HEADER] for r in answers} == {"5"}
        assert len(model.calls) == 1
        bad, broken = await asyncio.gather(
            c.post("/v1/models/m:predict", json={"instances": [-1]}),
            c.post("/v1/models/m:predict", json={"instances": [-2]}),
        )
        assert bad.status_code == broken.status_code == 400, (bad.text, broken.text)
        assert "row -1" in bad.json()["error"] and "row -1" in broken.json()["error"]
        alone = await c.post("/v1/models/m:predict", json={"instances": [-2]})
        assert alone.status_code == 500
        assert alone.json() == {"error": "predict failed: the model broke"}
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 1]}]}
        v2 = await asyncio.gather(*(c.post("/v2/models/m/infer", json=body) for _ in range(3)))
        for r in v2:
            out = r.json()["outputs"][0]
            assert (out["name"], out["data"], out["shape"]) == ("x-doubled", [2, 2], [1, 2])
            assert r.headers[BATCH_HEADER] == "3"


async def test_app_without_batcher_has_no_batch_header() -> None:
    model = FakeModel()
    transport = httpx.ASGITransport(app=create_model_app(model, "v1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://ms") as c:
        r = await c.post("/v1/models/m:predict", json={"instances": [1, 2]})
        assert r.json() == {"predictions": [2, 4]} and BATCH_HEADER not in r.headers


def test_batcher_args_kserve_defaults() -> None:
    assert batcher_args(None) == []
    assert batcher_args({}) == ["--max-batch-size", "32", "--max-latency-ms", "5000"]
    assert batcher_args({"maxBatchSize": 8, "maxLatency": 20}) == [
        "--max-batch-size",
        "8",
        "--max-latency-ms",
        "20",
    ]


# A python-format model that numbers its calls and reports, with each row, the call that
# answered it and the rows that call saw: the model itself shows what was batched.
COUNTING_MODEL = """import itertools

CALLS = itertools.count(1)

def predict(instances):
    call = next(CALLS)
    return [[row * 2, call, len(instances)] for row in instances]
"""


@pytest.fixture(scope="module")
def batched_isvc(api: httpx.Client, claim: Any) -> str:
    data: Path = claim("batch-models")
    (data / "m").mkdir(parents=True, exist_ok=True)
    (data / "m" / "model.py").write_text(COUNTING_MODEL)
    predictor = {
        "batcher": {"maxBatchSize": 64, "maxLatency": 400},
        "model": {"modelFormat": {"name": "python"}, "storageUri": "pvc://batch-models/m"},
    }
    r = api.post(ISVC_PATH, json=isvc("batched", predictor))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["predictor"]["batcher"] == {"maxBatchSize": 64, "maxLatency": 400}
    wait_isvc(api, "batched", ready, timeout=60)
    return "batched"


def test_inferenceservice_batcher_merges_concurrent_clients(
    batched_isvc: str, platform: Any
) -> None:
    """N concurrent clients through the gateway: fewer model calls than requests, and each
    client gets its own rows back."""
    url = f"/serving/{NS}/{batched_isvc}/v1/models/{batched_isvc}:predict"
    clients = 8

    async def one(c: httpx.AsyncClient, i: int) -> tuple[list[Any], str]:
        rows = [i * 100 + j for j in range(i % 3 + 1)]
        for _ in range(50):
            r = await c.post(url, json={"instances": rows})
            if r.status_code != 429:  # the gateway's per-user rate limit
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 200, r.text
        predictions = r.json()["predictions"]
        assert [p[0] for p in predictions] == [x * 2 for x in rows]  # its own rows, in order
        return predictions, r.headers[BATCH_HEADER]

    async def run() -> list[tuple[list[Any], str]]:
        async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as c:
            return await asyncio.gather(*(one(c, i) for i in range(clients)))

    answers = asyncio.run(run())
    calls = {p[1] for predictions, _ in answers for p in predictions}
    assert len(calls) < clients, answers  # the model was called fewer times than asked
    rows_per_call: dict[int, int] = {}
    for predictions, _ in answers:
        for _, call, seen in predictions:
            assert rows_per_call.setdefault(call, seen) == seen
    assert sum(rows_per_call.values()) == sum(i % 3 + 1 for i in range(clients))
    assert max(int(size) for _, size in answers) > 1


def test_inferenceservice_batcher_refused_with_containers(api: httpx.Client) -> None:
    body = isvc(
        "batch-custom",
        {
            "batcher": {"maxBatchSize": 0},
            "containers": [{"name": "c", "image": "x", "command": ["true"]}],
        },
    )
    r = api.post(ISVC_PATH, json=body)
    assert r.status_code == 422, r.text
    causes = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
    assert "spec.predictor.batcher.maxBatchSize" in causes, causes
    body["spec"]["predictor"]["batcher"] = {"maxLatency": 10}
    r = api.post(ISVC_PATH, json=body)
    assert r.status_code == 422, r.text
    causes = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
    assert "needs a model" in causes["spec.predictor.batcher"], causes
