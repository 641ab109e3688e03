"""Scale to zero, activation and concurrency autoscaling: a platform with short timings.

The platform's processes are real (gateway, serving service, model servers); only the
timings are short: 2 s of idleness scales a ``minReplicas: 0`` service to zero, the gateway
reports activity every 0.5 s and holds a request at most 10 s for activation, and replicas
follow the concurrency of the last 3 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.runtime import LocalRuntime, WorkloadStatus
from services.common.settings import SINGLE_USER_NAMESPACE as NS
from tests.conftest import fresh_database

from .conftest import ISVC_PATH, create_claim, isvc, ready, train_sklearn, wait_isvc

GRACE_SECONDS = 2.0
WINDOW_SECONDS = 3.0
ACTIVATION_TIMEOUT = 10.0
SAMPLES = [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]
# A python-format model whose import (the load, before the server listens, so before its
# readiness probe can pass) takes as many seconds as its ``delay`` file says.
SLOW_MODEL = """import pathlib, time

time.sleep(float((pathlib.Path(__file__).parent / "delay").read_text()))


def predict(instances):
    return [sum(row) for row in instances]
"""
# Busy for 0.2 s per request (the server answers one at a time), answering with the port of
# the replica that served it.
BUSY_MODEL = """import os, time


def predict(instances):
    time.sleep(0.2)
    return [int(os.environ["PORT"]) for _ in instances]
"""


@pytest.fixture(scope="module")
def platform(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """This module's own platform (its own database), started with short scaling timings."""
    from shipyard.up import Platform

    with fresh_database() as database_url:
        running = Platform(
            tmp_path_factory.mktemp("zero-platform"),
            database_url=database_url,
            nats_url=nats_url,
            ports=Platform.free_ports(),
            auth_mode="single-user",
        )
        running.start(
            env={
                "SHIPYARD_SCALE_TO_ZERO_SECONDS": str(GRACE_SECONDS),
                "SHIPYARD_ACTIVITY_REPORT_SECONDS": "0.5",
                "SHIPYARD_ACTIVATION_TIMEOUT_SECONDS": str(ACTIVATION_TIMEOUT),
                "SHIPYARD_AUTOSCALE_WINDOW_SECONDS": str(WINDOW_SECONDS),
            }
        )
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="module")
def models(platform: Any, api: httpx.Client) -> Path:
    """The claim ``zero-models``: ``iris`` (sklearn), ``slow`` (python, delayed load) and
    ``busy`` (python, 0.2 s a request)."""
    data = create_claim(platform, api, "zero-models")
    train_sklearn(data / "iris")
    (data / "slow").mkdir(parents=True, exist_ok=True)
    (data / "slow" / "model.py").write_text(SLOW_MODEL)
    (data / "busy").mkdir(parents=True, exist_ok=True)
    (data / "busy" / "model.py").write_text(BUSY_MODEL)
    return data


def servers(platform: Any, name: str) -> list[WorkloadStatus]:
    runtime = LocalRuntime(platform.state_dir)
    selector = {"serving.kserve.io/inferenceservice": name}
    return asyncio.run(runtime.list(selector, namespace=NS))


def wait_scaled_to_zero(api: httpx.Client, platform: Any, name: str) -> dict[str, Any]:
    """Wait (well past the grace period) until the server is gone; the object after that."""
    deadline = time.monotonic() + GRACE_SECONDS + 15
    while time.monotonic() < deadline and servers(platform, name):
        time.sleep(0.1)
    assert servers(platform, name) == [], f"{name} was not scaled to zero"
    return wait_isvc(
        api, name, lambda o: o["status"]["components"]["predictor"]["actualReplicas"] == 0
    )


def infer_v2(url: str, name: str, timeout: float = 30) -> httpx.Response:
    body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": SAMPLES}]}
    return httpx.post(
        f"{url}/serving/{NS}/{name}/v2/models/{name}/infer", json=body, timeout=timeout
    )


def create(api: httpx.Client, name: str, predictor: dict[str, Any]) -> dict[str, Any]:
    r = api.post(ISVC_PATH, json=isvc(name, predictor))
    assert r.status_code == 201, r.text
    return wait_isvc(api, name, ready, timeout=60)


def sklearn_predictor(**extra: Any) -> dict[str, Any]:
    model = {
        "modelFormat": {"name": "sklearn"},
        "protocolVersion": "v2",
        "storageUri": "pvc://zero-models/iris",
    }
    return {"model": model, **extra}


def slow_predictor() -> dict[str, Any]:
    """The python model of ``zero-models/slow``, scaled to zero when idle."""
    model = {
        "modelFormat": {"name": "python"},
        "protocolVersion": "v2",
        "storageUri": "pvc://zero-models/slow",
    }
    return {"model": model, "minReplicas": 0}


def test_scale_to_zero_after_grace_then_activate_on_request(
    platform: Any, api: httpx.Client, models: Path
) -> None:
    """Idle past the grace period: no server, still Ready; concurrent first requests all
    succeed without retrying, on one new server of the same revision."""
    created = create(api, "iris0", sklearn_predictor(minReplicas=0))
    before = created["status"]["components"]["predictor"]
    r = infer_v2(platform.gateway_url, "iris0")
    assert r.status_code == 200, r.text

    obj = wait_scaled_to_zero(api, platform, "iris0")
    status = obj["status"]
    assert ready(obj), status["conditions"]
    pred = status["components"]["predictor"]
    assert pred["desiredReplicas"] == 0 and "endpoint" not in pred
    assert pred["traffic"] == before["traffic"]
    assert pred["latestRolledoutRevision"] == before["latestRolledoutRevision"]
    assert status["url"] == created["status"]["url"]

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: infer_v2(platform.gateway_url, "iris0"), range(4)))
    cold = time.monotonic() - started
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [0, 2]
    assert [w.name for w in servers(platform, "iris0")] == ["isvc-iris0-1"]
    assert cold < ACTIVATION_TIMEOUT
    after = wait_isvc(api, "iris0", lambda o: "endpoint" in o["status"]["components"]["predictor"])
    assert after["status"]["components"]["predictor"]["actualReplicas"] == 1
    assert api.delete(f"{ISVC_PATH}/iris0").status_code == 200


def test_scale_to_zero_slow_model_not_killed_and_held_request_succeeds(
    platform: Any, api: httpx.Client, models: Path
) -> None:
    """A model that needs 4 s to load (twice the grace period) is left to load, and the
    request held for it is answered."""
    delay = 4.0
    (models / "slow" / "delay").write_text(str(delay))
    create(api, "slow", slow_predictor())
    wait_scaled_to_zero(api, platform, "slow")

    started = time.monotonic()
    r = infer_v2(platform.gateway_url, "slow")
    waited = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [sum(SAMPLES[0]), sum(SAMPLES[1])]
    assert waited >= delay
    [server] = servers(platform, "slow")
    assert server.restart_count == 0 and server.ready
    assert api.delete(f"{ISVC_PATH}/slow").status_code == 200


def test_activation_timeout_503_v2_error_and_unknown_unchanged(
    platform: Any, api: httpx.Client, models: Path
) -> None:
    """A model that cannot be ready within the activation timeout: 503 with the V2 error
    shape after the timeout; a service that does not exist is refused at once, as before."""
    (models / "slow" / "delay").write_text("0")
    create(api, "stuck", slow_predictor())
    wait_scaled_to_zero(api, platform, "stuck")
    (models / "slow" / "delay").write_text("600")  # the next load never finishes in time

    started = time.monotonic()
    r = infer_v2(platform.gateway_url, "stuck")
    waited = time.monotonic() - started
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert "stuck" in error and "did not become ready" in error and r.json().keys() == {"error"}
    assert ACTIVATION_TIMEOUT <= waited < ACTIVATION_TIMEOUT + 5

    started = time.monotonic()
    unknown = infer_v2(platform.gateway_url, "nope")
    assert unknown.status_code == 503 and unknown.json()["kind"] == "Status"
    assert time.monotonic() - started < 2
    assert api.delete(f"{ISVC_PATH}/stuck").status_code == 200


def test_activation_of_broken_model_503_with_its_error(
    platform: Any, api: httpx.Client, models: Path
) -> None:
    """A model that no longer loads: the held request gets its load error, not a timeout."""
    (models / "broken").mkdir(parents=True, exist_ok=True)
    (models / "broken" / "model.py").write_text(SLOW_MODEL)
    (models / "broken" / "delay").write_text("0")
    predictor = slow_predictor()
    predictor["model"]["storageUri"] = "pvc://zero-models/broken"
    create(api, "broken", predictor)
    wait_scaled_to_zero(api, platform, "broken")
    (models / "broken" / "model.py").write_text("raise RuntimeError('weights are corrupt')\n")

    started = time.monotonic()
    r = infer_v2(platform.gateway_url, "broken")
    assert r.status_code == 503, r.text
    assert "failed to start again" in r.json()["error"], r.text
    assert "weights are corrupt" in r.json()["error"], r.text
    assert time.monotonic() - started < ACTIVATION_TIMEOUT
    assert api.delete(f"{ISVC_PATH}/broken").status_code == 200


def test_min_replicas_default_never_scales_to_zero(
    platform: Any, api: httpx.Client, models: Path
) -> None:
    obj = create(api, "warm", sklearn_predictor())
    endpoint = obj["status"]["components"]["predictor"]["endpoint"]
    time.sleep(GRACE_SECONDS * 3)
    [server] = servers(platform, "warm")
    assert server.ready and server.endpoint == endpoint
    pred = api.get(f"{ISVC_PATH}/warm").json()["status"]["components"]["predictor"]
    assert pred["desiredReplicas"] == 1 and pred["endpoint"] == endpoint
    assert infer_v2(platform.gateway_url, "warm").status_code == 200
    assert api.delete(f"{ISVC_PATH}/warm").status_code == 200


def test_autoscale_concurrency_up_to_max_replicas_and_back(
    platform: Any, api: httpx.Client, models: Path
) -> None:
    """Four clients at once with scaleTarget 1: three replicas (maxReplicas), requests spread
    over them; when the load stops, back to minReplicas after the window."""
    model = {"modelFormat": {"name": "python"}, "storageUri": "pvc://zero-models/busy"}
    predictor = {
        "model": model,
        "minReplicas": 1,
        "maxReplicas": 3,
        "scaleMetric": "concurrency",
        "scaleTarget": 1,
    }
    create(api, "busy", predictor)
    url = f"{platform.gateway_url}/serving/{NS}/busy/v1/models/busy:predict"
    ports: list[int] = []
    most = 0
    stop_at = time.monotonic() + 40

    def client() -> None:
        with httpx.Client(timeout=30) as c:
            while time.monotonic() < stop_at:
                r = c.post(url, json={"instances": [[1]]})
                assert r.status_code == 200, r.text
                ports.append(r.json()["predictions"][0])

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(client) for _ in range(4)]
        scaled = False
        while time.monotonic() < stop_at:
            count = len(servers(platform, "busy"))
            most = max(most, count)
            pred = api.get(f"{ISVC_PATH}/busy").json()["status"]["components"]["predictor"]
            if not scaled and len(pred.get("endpoints") or []) == 3:
                scaled, ports[:] = True, []  # count the spread from here on
                stop_at = time.monotonic() + 3
            time.sleep(0.2)
        for future in running:
            future.result()
    assert scaled, f"never reached 3 ready replicas: {pred}"
    assert most == 3 and pred["desiredReplicas"] == 3 and pred["actualReplicas"] == 3
    assert len(set(ports)) == 3, sorted(set(ports))

    deadline = time.monotonic() + WINDOW_SECONDS + 15
    while time.monotonic() < deadline and len(servers(platform, "busy")) > 1:
        time.sleep(0.2)
    assert [w.name for w in servers(platform, "busy")] == ["isvc-busy-1"]
    pred = wait_isvc(
        api, "busy", lambda o: o["status"]["components"]["predictor"]["desiredReplicas"] == 1
    )["status"]["components"]["predictor"]
    assert pred["actualReplicas"] == 1 and len(pred["endpoints"]) == 1
    assert api.delete(f"{ISVC_PATH}/busy").status_code == 200
