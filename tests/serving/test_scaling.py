"""Scale to zero, activation and concurrency autoscaling: a platform with short timings.

The platform's processes are real (gateway, serving service, model servers); only the
timings are short: 2 s of idleness scales a ``minReplicas: 0`` service to zero, the gateway
reports activity every 0.5 s and holds a request at most 10 s for activation, and replicas
follow the concurrency of the last 3 s.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.runtime import LocalRuntime, WorkloadStatus
from services.common.settings import SINGLE_USER_NAMESPACE as NS
from services.serving.components import COMPONENT_LABEL
from tests.conftest import (
    RunningSeaweedFS,
    crash_service,
    fresh_database,
    running_platform,
    start_service_again,
)

from .conftest import ISVC_PATH, create_claim, isvc, ready, train_sklearn, wait_isvc

GRACE_SECONDS = 2.0
WINDOW_SECONDS = 3.0
# The gateway holds a request this long for a model to start. Starting one here takes 1-3 s;
# a restarted serving service (the crash tests) adds its own start, several seconds on a slow
# machine: 20 s leaves room for both.
ACTIVATION_TIMEOUT = 20.0
SAMPLES = [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]
# A python-format model whose import (the load, before the server listens, so before its
# readiness probe can pass) takes as many seconds as its ``delay`` file says.
SLOW_MODEL = """import pathlib, time

time.sleep(float((pathlib.Path(__file__).parent / "delay").read_text()))


def predict(instances):
    return [sum(row) for row in instances]
"""
# Busy for 0.2 s per request (the server answers one at a time), answering with the host
# name of the replica that served it (each replica's sandbox is named for its workload).
BUSY_MODEL = """import socket, time


def predict(instances):
    time.sleep(0.2)
    return [socket.gethostname() for _ in instances]
"""


@pytest.fixture(scope="module")
def platform(
    nats_url: str, seaweedfs: RunningSeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """This module's own platform (its own database), started with short scaling timings."""
    with fresh_database() as database_url:
        with running_platform(
            tmp_path_factory.mktemp("zero-platform"),
            database_url=database_url,
            nats_url=nats_url,
            s3=seaweedfs.config,
            env={
                "SHIPYARD_SCALE_TO_ZERO_SECONDS": str(GRACE_SECONDS),
                "SHIPYARD_ACTIVITY_REPORT_SECONDS": "0.5",
                "SHIPYARD_ACTIVATION_TIMEOUT_SECONDS": str(ACTIVATION_TIMEOUT),
                "SHIPYARD_AUTOSCALE_WINDOW_SECONDS": str(WINDOW_SECONDS),
            },
        ) as running:
            yield running


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
    # Not held for an activation (20 s): only the gateway's route grace (2 s) applies.
    assert time.monotonic() - started < ACTIVATION_TIMEOUT / 2
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


def busy_predictor(metric: str) -> dict[str, Any]:
    """The busy model, one to three replicas, scaleTarget 1 on ``metric``."""
    model = {"modelFormat": {"name": "python"}, "storageUri": "pvc://zero-models/busy"}
    return {
        "model": model,
        "minReplicas": 1,
        "maxReplicas": 3,
        "scaleMetric": metric,
        "scaleTarget": 1,
    }


def four_clients_until_three(
    url: str, entry: Callable[[], dict[str, Any]], each: Callable[[], None] = lambda: None
) -> tuple[dict[str, Any], list[Any]]:
    """Four clients at once send ``url`` requests until ``entry()`` (a status entry) lists
    three ready endpoints, and 3 s more (``each()`` runs between looks): that entry, and the
    answers' first predictions of those 3 s. Fails unless three are reached within 40 s."""
    answers: list[Any] = []
    stop_at = time.monotonic() + 40

    def client() -> None:
        with httpx.Client(timeout=30) as c:
            while time.monotonic() < stop_at:
                r = c.post(url, json={"instances": [[1]]})
                assert r.status_code == 200, r.text
                answers.append(r.json()["predictions"][0])

    found: dict[str, Any] = {}
    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(client) for _ in range(4)]
        scaled = False
        while time.monotonic() < stop_at:
            each()
            found = entry()
            if not scaled and len(found.get("endpoints") or []) == 3:
                scaled, answers[:] = True, []  # count the spread from here on
                stop_at = time.monotonic() + 3
            time.sleep(0.2)
        for future in running:
            future.result()
    assert scaled, f"never reached 3 ready replicas: {found}"
    return found, answers


def test_autoscale_concurrency_up_to_max_replicas_and_back(
    platform: Any, api: httpx.Client, models: Path
) -> None:
    """Four clients at once with scaleTarget 1: three replicas (maxReplicas), requests spread
    over them; when the load stops, back to minReplicas after the window."""
    create(api, "busy", busy_predictor("concurrency"))
    url = f"{platform.gateway_url}/serving/{NS}/busy/v1/models/busy:predict"
    counts: list[int] = []

    def predictor() -> dict[str, Any]:
        found: dict[str, Any] = api.get(f"{ISVC_PATH}/busy").json()["status"]["components"]
        return found["predictor"]  # type: ignore[no-any-return]

    pred, ports = four_clients_until_three(
        url, predictor, lambda: counts.append(len(servers(platform, "busy")))
    )
    assert max(counts) == 3 and pred["desiredReplicas"] == 3 and pred["actualReplicas"] == 3
    assert len(set(ports)) == 3, sorted(set(ports))

    deadline = time.monotonic() + WINDOW_SECONDS + 15
    while time.monotonic() < deadline and len(servers(platform, "busy")) > 1:
        time.sleep(0.2)
    assert [w.name for w in servers(platform, "busy")] == ["isvc-busy-1"]
    # The status follows the workloads: poll until it reports the one replica left.
    pred = wait_isvc(
        api,
        "busy",
        lambda o: (
            o["status"]["components"]["predictor"]["desiredReplicas"] == 1
            and o["status"]["components"]["predictor"]["actualReplicas"] == 1
        ),
    )["status"]["components"]["predictor"]
    assert len(pred["endpoints"]) == 1, pred
    assert api.delete(f"{ISVC_PATH}/busy").status_code == 200


def test_autoscale_requests_per_second(platform: Any, api: httpx.Client, models: Path) -> None:
    """scaleMetric rps, scaleTarget 1: one client at a time (concurrency 1, which alone asks
    for one replica) sending about 4-5 requests a second asks for more than the three
    maxReplicas allows; three run. When it stops, back to one after the window."""
    create(api, "rated", busy_predictor("rps"))
    url = f"{platform.gateway_url}/serving/{NS}/rated/v1/models/rated:predict"
    pred: dict[str, Any] = {}
    deadline = time.monotonic() + 40
    with httpx.Client(timeout=30) as c:
        while time.monotonic() < deadline:
            r = c.post(url, json={"instances": [[1]]})
            assert r.status_code == 200, r.text
            pred = api.get(f"{ISVC_PATH}/rated").json()["status"]["components"]["predictor"]
            if len(pred.get("endpoints") or []) == 3:
                break
    assert len(pred.get("endpoints") or []) == 3, f"never reached 3 ready replicas: {pred}"
    assert pred["desiredReplicas"] == 3 and len(servers(platform, "rated")) == 3
    deadline = time.monotonic() + WINDOW_SECONDS + 15
    while time.monotonic() < deadline and len(servers(platform, "rated")) > 1:
        time.sleep(0.2)
    assert [w.name for w in servers(platform, "rated")] == ["isvc-rated-1"]
    assert api.delete(f"{ISVC_PATH}/rated").status_code == 200


# A KServe-style transformer (it takes --http_port and the other arguments a transformer
# gets) that does not call its predictor: busy for 0.2 s per request, several at a time,
# answering with its replica's host name.
BUSY_TRANSFORMER = r"""
import argparse, json, socket, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
parser = argparse.ArgumentParser()
parser.add_argument("--http_port", type=int)
args, _ = parser.parse_known_args()
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        time.sleep(0.2)
        body = json.dumps({"predictions": [socket.gethostname()]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("0.0.0.0", args.http_port), Handler).serve_forever()
"""


def transformers(platform: Any, name: str) -> list[str]:
    """The names of the InferenceService's running transformer replicas."""
    found = servers(platform, name)
    return sorted(w.name for w in found if w.labels.get(COMPONENT_LABEL) == "transformer")


def test_transformer_autoscales_on_the_load(platform: Any, api: httpx.Client, models: Path) -> None:
    """A transformer carries every request of its InferenceService, so it scales on the
    gateway's load as a predictor does: with maxReplicas 3 and scaleTarget 1, four clients at
    once run three transformer replicas (the predictor, without maxReplicas, stays at one),
    the status lists them and the requests spread over them; when the load stops, back to
    one after the window (a surplus replica leaves the status, then stops)."""
    body = isvc("tbusy", sklearn_predictor())
    container = {"name": "kserve-container", "command": ["python", "-c", BUSY_TRANSFORMER]}
    body["spec"]["transformer"] = {
        "containers": [container],
        "minReplicas": 1,
        "maxReplicas": 3,
        "scaleTarget": 1,
    }
    assert api.post(ISVC_PATH, json=body).status_code == 201
    status = wait_isvc(api, "tbusy", ready, timeout=60)["status"]
    url = f"{platform.gateway_url}/serving/{NS}/tbusy/v1/models/tbusy:predict"
    first = httpx.post(url, json={"instances": [[1]]}, timeout=30)
    assert first.json() == {"predictions": ["isvc-tbusy-transformer"]}, (first.text, status)

    def transformer() -> dict[str, Any]:
        found: dict[str, Any] = api.get(f"{ISVC_PATH}/tbusy").json()["status"]["components"]
        return found["transformer"]  # type: ignore[no-any-return]

    _, hosts = four_clients_until_three(url, transformer)
    names = ["isvc-tbusy-transformer", "isvc-tbusy-transformer-1", "isvc-tbusy-transformer-2"]
    assert transformers(platform, "tbusy") == names
    assert set(hosts) == set(names), sorted(set(hosts))
    predictor = [w for w in servers(platform, "tbusy") if not w.labels.get(COMPONENT_LABEL)]
    assert len(predictor) == 1, predictor

    def one(o: dict[str, Any]) -> bool:
        return "endpoints" not in o["status"]["components"]["transformer"]

    wait_isvc(api, "tbusy", one, timeout=WINDOW_SECONDS + 15)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(transformers(platform, "tbusy")) > 1:
        time.sleep(0.2)
    assert transformers(platform, "tbusy") == names[:1]
    assert api.delete(f"{ISVC_PATH}/tbusy").status_code == 200


# ------------------------------------------------------------------ serving service crashes
def python_model(models: Path, name: str, **extra: Any) -> dict[str, Any]:
    """A predictor for a copy of the slow python model of its own (``delay`` 0 for now)."""
    (models / name).mkdir(parents=True, exist_ok=True)
    (models / name / "model.py").write_text(SLOW_MODEL)
    (models / name / "delay").write_text("0")
    predictor = slow_predictor()
    predictor["model"]["storageUri"] = f"pvc://zero-models/{name}"
    return {**predictor, **extra}


def server_process(platform: Any, name: str) -> tuple[int, float]:
    """(pid, start time) of a model server workload's process, from its supervisor's state."""
    state_file = LocalRuntime(platform.state_dir).workloads_root / NS / name / "state.json"
    state = json.loads(state_file.read_text())
    return int(state["pid"]), float(state["startTime"])


def test_serving_restart_keeps_scaled_to_zero_then_activates(
    platform: Any, api: httpx.Client, models: Path
) -> None:
    """Scaled to zero, the serving service crashes and restarts: the restart alone starts
    nothing (still Ready, no replicas), and the next request activates it as before."""
    create(api, "zr", python_model(models, "zr"))
    assert infer_v2(platform.gateway_url, "zr").status_code == 200
    before = wait_scaled_to_zero(api, platform, "zr")["status"]

    start_service_again(crash_service(platform, "serving"))
    # The new process's first reconcile (at its start) and a grace period more.
    deadline = time.monotonic() + GRACE_SECONDS + 0.5
    while time.monotonic() < deadline:
        assert servers(platform, "zr") == [], "the restart alone started a model server"
        time.sleep(0.2)
    obj = api.get(f"{ISVC_PATH}/zr").json()
    assert ready(obj), obj["status"]
    pred = obj["status"]["components"]["predictor"]
    assert pred["desiredReplicas"] == 0 and pred["actualReplicas"] == 0, pred
    assert "endpoint" not in pred
    assert pred["traffic"] == before["components"]["predictor"]["traffic"]

    started = time.monotonic()
    r = infer_v2(platform.gateway_url, "zr")
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [sum(SAMPLES[0]), sum(SAMPLES[1])]
    assert time.monotonic() - started < ACTIVATION_TIMEOUT
    assert [w.name for w in servers(platform, "zr")] == ["isvc-zr-1"]
    assert api.delete(f"{ISVC_PATH}/zr").status_code == 200


@pytest.mark.parametrize("when", ["while-down", "before-launch", "while-starting"])
def test_serving_crash_during_activation_held_request_succeeds(
    platform: Any, api: httpx.Client, models: Path, when: str
) -> None:
    """A request held for activation survives a crash of the serving service.

    ``while-down``: the request is sent while the serving service is dead (nobody hears its
    report) and it is restarted after. ``before-launch``: the service died after writing the
    model server's workload spec and before launching its supervisor (the spec on disk,
    nothing running). ``while-starting``: the serving service is killed right after it
    started the model server for the held request, before that server is ready. Each time
    the held request is answered within the activation timeout, by exactly one model server
    (in the last case the one started before the crash, adopted).
    """
    name = f"held-{when}"
    create(api, name, python_model(models, name))
    workload_dir = LocalRuntime(platform.state_dir).workloads_root / NS / f"isvc-{name}-1"
    spec = (workload_dir / "spec.json").read_text()  # activation writes the same again
    wait_scaled_to_zero(api, platform, name)
    # Loading takes a while now, so the server cannot be ready when the crash happens.
    (models / name / "delay").write_text("1")

    with ThreadPoolExecutor(1) as pool:
        if when in ("while-down", "before-launch"):
            child = crash_service(platform, "serving")
            if when == "before-launch":
                workload_dir.mkdir(parents=True)
                (workload_dir / "spec.json").write_text(spec)
            started = time.monotonic()
            held = pool.submit(infer_v2, platform.gateway_url, name)
            time.sleep(0.5)  # held (and reported to nobody) while the service is down
            assert not held.done()
            left = [w.ready for w in servers(platform, name)]
            assert left == ([] if when == "while-down" else [False]), left
        else:
            started = time.monotonic()
            held = pool.submit(infer_v2, platform.gateway_url, name)
            deadline = time.monotonic() + 5  # until the model server's process runs
            while time.monotonic() < deadline:
                if any(w.start_time for w in servers(platform, name)):
                    break
                time.sleep(0.01)
            child = crash_service(platform, "serving")
            [starting] = servers(platform, name)
            assert not starting.ready and not held.done()
        start_service_again(child)
        r = held.result(timeout=ACTIVATION_TIMEOUT + 5)
    waited = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [sum(SAMPLES[0]), sum(SAMPLES[1])]
    assert waited < ACTIVATION_TIMEOUT
    [server] = servers(platform, name)
    assert server.name == f"isvc-{name}-1" and server.ready and server.restart_count == 0
    if when == "while-starting":
        assert server.start_time == starting.start_time  # adopted, not started again
    obj = wait_isvc(api, name, lambda o: "endpoint" in o["status"]["components"]["predictor"])
    assert ready(obj) and obj["status"]["components"]["predictor"]["actualReplicas"] == 1
    assert api.delete(f"{ISVC_PATH}/{name}").status_code == 200


def test_serving_restart_adopts_running_server(
    platform: Any, api: httpx.Client, models: Path
) -> None:
    """``minReplicas: 1``: a crash of the serving service leaves the model server running,
    and the restarted service adopts it (same process, same endpoint) instead of replacing it."""
    obj = create(api, "adopt", python_model(models, "adopt", minReplicas=1))
    endpoint = obj["status"]["components"]["predictor"]["endpoint"]
    process = server_process(platform, "isvc-adopt-1")
    # The gateway learns the route from the serving service's status event: wait until it
    # serves, so that the crash below cannot land between the Ready write and its event.
    first = infer_v2(platform.gateway_url, "adopt")
    assert first.status_code == 200, first.text

    child = crash_service(platform, "serving")
    down = infer_v2(platform.gateway_url, "adopt")
    assert down.status_code == 200, down.text  # served while it is down
    start_service_again(child)
    assert infer_v2(platform.gateway_url, "adopt").status_code == 200
    time.sleep(GRACE_SECONDS + 0.5)  # the new process's first reconcile, and a grace period
    [server] = servers(platform, "adopt")
    assert server.ready and server.endpoint == endpoint and server.restart_count == 0
    assert server_process(platform, "isvc-adopt-1") == process
    obj = api.get(f"{ISVC_PATH}/adopt").json()
    assert ready(obj), obj["status"]
    pred = obj["status"]["components"]["predictor"]
    assert pred["endpoint"] == endpoint and pred["endpoints"] == [endpoint]
    assert pred["desiredReplicas"] == 1 and pred["actualReplicas"] == 1
    assert infer_v2(platform.gateway_url, "adopt").status_code == 200
    assert api.delete(f"{ISVC_PATH}/adopt").status_code == 200
