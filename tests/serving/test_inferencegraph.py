"""InferenceGraphs (serving.kserve.io/v1alpha1): validation, the router's semantics, and
graphs end to end.

The router's logic (Switch, Ensemble, Sequence, Splitter, Soft/Hard dependencies, timeouts,
the token it sends) runs against a real HTTP server of this test standing in for the
gateway's data plane: its answers are scripted per path. End to end, real platform
processes run real model servers (two sklearn models and a ``python`` one) and a graph's
router workload, all reached through the gateway.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.settings import SINGLE_USER_NAMESPACE as NS
from services.serving.router.engine import GraphRouter
from services.serving.router.upstream import GatewayUpstream

from .conftest import ISVC_PATH, isvc, predict, ready, train_sklearn, wait_isvc

IG_PATH = f"/apis/serving.kserve.io/v1alpha1/namespaces/{NS}/inferencegraphs"
SAMPLES = [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]


# ---------------------------------------------------------------- a stand-in data plane
class StubPlane:
    """A real HTTP server answering the router's posts by path; it records what came."""

    def __init__(self, keep_alive: bool = False) -> None:
        self.seen: list[tuple[str, str, Any]] = []  # (path, authorization, body)
        self.clients: list[int] = []  # the client port of each request
        plane = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps connections open; http.server's default, 1.0, closes each.
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["content-length"])) or b"{}")
                plane.seen.append((self.path, self.headers.get("authorization", ""), body))
                plane.clients.append(self.client_address[1])
                status, answer = plane.answer(self.path, body)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except BrokenPipeError:  # the router gave up on a slow answer (timeout tests)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def answer(path: str, body: Any) -> tuple[int, Any]:
        if path.startswith("/fail"):
            return 404, {"error": "Intentional 404 code"}
        if path.startswith("/slow"):
            time.sleep(1.5)
        if path.startswith("/double"):  # predictions: every instance doubled
            return 200, {"predictions": [[2 * v for v in row] for row in body["instances"]]}
        return 200, {"predictions": [path.strip("/")], "got": body}


@pytest.fixture(scope="module")
def plane() -> Iterator[StubPlane]:
    stub = StubPlane()
    yield stub
    stub.server.shutdown()


def graph(nodes: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"nodes": nodes, **spec}


def step(path: str, **fields: Any) -> dict[str, Any]:
    return {"path": path, "serviceName": path.strip("/"), **fields}


async def route(plane: StubPlane, spec: dict[str, Any], body: Any, tmp_path: Path) -> Any:
    """Run ``body`` through ``spec`` against the stub plane: (status, answer)."""
    token = tmp_path / "token"
    token.write_text("t1")
    upstream = GatewayUpstream(plane.url, str(token))
    try:
        reply = await GraphRouter(spec, upstream).route(json.dumps(body).encode())
    finally:
        await upstream.aclose()
    return reply.status, json.loads(reply.body)


# ---------------------------------------------------------------- router semantics
async def test_route_switch_first_condition_holds(plane: StubPlane, tmp_path: Path) -> None:
    spec = graph(
        {
            "root": {
                "routerType": "Switch",
                "steps": [
                    step("/a", condition="[@this].#(decision_picker==ERROR)"),
                    step("/b", condition="instances.#(intval>10)"),
                    step("/c", condition='instances.#(strval%"*red-server*")'),
                ],
            }
        }
    )
    status, answer = await route(plane, spec, {"instances": [{"intval": 11}]}, tmp_path)
    assert (status, answer["predictions"]) == (200, ["b"])
    body = {"instances": [{"intval": 1, "strval": "a-red-server-9"}]}
    status, answer = await route(plane, spec, body, tmp_path)
    assert (status, answer) == (200, {"predictions": ["c"], "got": body})
    status, answer = await route(plane, spec, {"decision_picker": "ERROR"}, tmp_path)
    assert (status, answer["predictions"]) == (200, ["a"])
    status, answer = await route(plane, spec, {"instances": [{"intval": 1}]}, tmp_path)
    assert (status, answer) == (
        404,
        {
            "error": "Failed to process request",
            "cause": "None of the routes matched with the switch condition",
            "node": "root",
        },
    )


async def test_route_ensemble_merges_by_step_name(plane: StubPlane, tmp_path: Path) -> None:
    spec = graph(
        {
            "root": {
                "routerType": "Ensemble",
                "steps": [step("/a", name="first"), step("/b"), step("/fail", name="soft")],
            }
        }
    )
    status, answer = await route(plane, spec, {"instances": [1]}, tmp_path)
    # The failed Soft step is left out; an unnamed step is keyed by its index.
    assert status == 200
    assert answer == {
        "first": {"predictions": ["a"], "got": {"instances": [1]}},
        "1": {"predictions": ["b"], "got": {"instances": [1]}},
    }
    spec["nodes"]["root"]["steps"][2]["dependency"] = "Hard"
    status, answer = await route(plane, spec, {"instances": [1]}, tmp_path)
    assert status == 404
    assert answer["cause"].startswith(
        "step 'soft' of node 'root' (InferenceService 'fail') failed with 404"
    )
    assert (answer["node"], answer["step"], answer["status"]) == ("root", "soft", 404)
    assert answer["response"] == {"error": "Intentional 404 code"}


async def test_route_sequence_response_feeds_next(plane: StubPlane, tmp_path: Path) -> None:
    spec = graph(
        {
            "root": {
                "routerType": "Sequence",
                "steps": [
                    step("/double"),
                    step("/double", data="$response", mapPredictionsToInstances=True),
                    step("/fail"),  # Soft: skipped, the last answer stands
                    step("/b", data="$request", condition="predictions.#(0>100)"),
                ],
            }
        }
    )
    status, answer = await route(plane, spec, {"instances": [[1, 2]]}, tmp_path)
    # 1,2 doubled twice is 4,8: the condition on that answer stops the sequence there.
    assert (status, answer) == (200, {"predictions": [[4, 8]]})
    status, answer = await route(plane, spec, {"instances": [[30, 1]]}, tmp_path)
    assert (status, answer) == (200, {"predictions": ["b"], "got": {"instances": [[30, 1]]}})
    spec["nodes"]["root"]["steps"][2]["dependency"] = "Hard"
    status, answer = await route(plane, spec, {"instances": [[1, 2]]}, tmp_path)
    assert status == 404 and answer["step"] == 2
    assert "step [2] of node 'root'" in answer["cause"]


async def test_route_splitter_and_nested_nodes(plane: StubPlane, tmp_path: Path) -> None:
    spec = graph(
        {
            "root": {
                "routerType": "Splitter",
                "steps": [{"nodeName": "pair", "weight": 70}, step("/c", weight=30)],
            },
            "pair": {"routerType": "Ensemble", "steps": [step("/a", name="a")]},
        }
    )
    seen: Counter[str] = Counter()
    for _ in range(40):
        status, answer = await route(plane, spec, {"instances": [1]}, tmp_path)
        assert status == 200
        seen["pair" if "a" in answer else answer["predictions"][0]] += 1
    assert seen["pair"] > 0 and seen["c"] > 0 and seen["pair"] + seen["c"] == 40


async def test_route_step_timeout_and_unreachable(plane: StubPlane, tmp_path: Path) -> None:
    spec = graph(
        {"root": {"routerType": "Sequence", "steps": [step("/slow", dependency="Hard")]}},
        routerTimeouts={"serviceClient": 1},
    )
    status, answer = await route(plane, spec, {}, tmp_path)
    assert status == 504 and answer["step"] == 0
    assert answer["response"] == {"error": "/slow did not answer within 1 s"}
    spec = graph({"root": {"routerType": "Sequence", "steps": [step("/slow")]}}, timeout=1)
    status, answer = await route(plane, spec, {}, tmp_path)
    assert (status, answer["cause"]) == (504, "the graph did not answer within 1 s")
    gone = GatewayUpstream("http://127.0.0.1:1", None)
    try:
        reply = await gone.post("/a", b"{}", 2)
    finally:
        await gone.aclose()
    assert reply.status == 502 and "could not be reached" in json.loads(reply.body)["error"]


async def test_route_sends_workload_token_read_again(plane: StubPlane, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    upstream = GatewayUpstream(plane.url, str(token))
    try:
        await upstream.post("/a", b"{}", 5)
        await asyncio.sleep(0.01)
        token.write_text("second")  # the runtime rewrites it in place before it expires
        await upstream.post("/a", b"{}", 5)
    finally:
        await upstream.aclose()
    assert [auth for path, auth, _ in plane.seen[-2:]] == ["Bearer first", "Bearer second"]


def test_router_refuses_step_outside_its_namespace() -> None:
    nodes = {"root": {"routerType": "Sequence", "steps": [step("/serving/other/m/v1")]}}
    upstream = GatewayUpstream("http://gateway", None)
    with pytest.raises(ValueError, match="outside /serving/team/"):
        GraphRouter({"namespace": "team", "nodes": nodes}, upstream)
    nodes["root"]["steps"] = [step("/serving/team/../other/m")]
    with pytest.raises(ValueError, match="outside"):
        GraphRouter({"namespace": "team", "nodes": nodes}, upstream)


async def test_upstream_keeps_connections_alive(tmp_path: Path) -> None:
    """Requests reuse a connection (each sent in one write: client.py says why)."""
    stub = StubPlane(keep_alive=True)
    upstream = GatewayUpstream(stub.url, None)
    try:
        for n in range(3):
            reply = await upstream.post("/a", json.dumps({"n": n}).encode(), 5)
            assert (reply.status, json.loads(reply.body)["got"]) == (200, {"n": n})
    finally:
        await upstream.aclose()
        stub.server.shutdown()
    assert len(stub.clients) == 3 and len(set(stub.clients)) == 1
    assert [auth for _, auth, _ in stub.seen] == ["", "", ""]  # no token file: none sent


# ---------------------------------------------------------------- validation through the API
def ig(name: str, nodes: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": name},
        "spec": {"nodes": nodes, **spec},
    }


def causes(api: httpx.Client, body: dict[str, Any]) -> dict[str, str]:
    r = api.post(IG_PATH, json=body)
    assert r.status_code == 422, r.text
    status = r.json()
    assert status["kind"] == "Status" and status["reason"] == "Invalid"
    return {c["field"]: c["message"] for c in status["details"]["causes"]}


def test_create_inferencegraph_invalid_422(api: httpx.Client) -> None:
    found = causes(api, ig("no-root", {"other": {"routerType": "Sequence", "steps": []}}))
    assert found["spec.nodes"].startswith("root node not found")
    assert found["spec.nodes.other.steps"] == "a node needs at least one step"

    found = causes(
        api,
        ig(
            "bad",
            {
                "root": {
                    "routerType": "Splitter",
                    "steps": [
                        {"serviceName": "a", "weight": 60},
                        {"serviceName": "b", "weight": 30, "nodeName": "loop"},
                    ],
                },
                "loop": {
                    "routerType": "Switch",
                    "steps": [
                        {"nodeName": "back", "condition": "a|@reverse"},
                        {"nodeName": "nowhere", "name": "x"},
                        {"serviceUrl": "http://m.other-team.example.com/v1", "name": "x"},
                        {"serviceUrl": "http://model-server/v1/models/m:predict", "data": "$body"},
                    ],
                },
                "back": {"routerType": "Sequence", "steps": [{"nodeName": "loop"}]},
            },
        ),
    )
    assert found["spec.nodes.root.steps"] == (
        "the weights of a Splitter's steps must sum to 100, got 90"
    )
    assert found["spec.nodes.root.steps[1]"].startswith(
        "exactly one of nodeName, serviceName or serviceUrl"
    )
    assert found["spec.nodes.loop.steps[0].condition"].startswith("not a supported GJSON path")
    assert found["spec.nodes.loop.steps[1].nodeName"] == "no node named 'nowhere'"
    assert found["spec.nodes.loop.steps[2].name"] == "duplicate step name 'x'"
    assert found["spec.nodes.loop.steps[2].serviceUrl"].startswith(
        "names namespace 'other-team': a graph calls only the InferenceServices of its own"
    )
    assert found["spec.nodes.loop.steps[3].serviceUrl"].startswith("must name an InferenceService")
    assert found["spec.nodes.loop.steps[3].data"] == "must be $request or $response"
    assert found["spec.nodes.back.steps[0].nodeName"] == "nodes form a cycle: loop -> back -> loop"

    found = causes(api, ig("shape", {"root": {"routerType": "Fanout", "steps": [{"weight": 101}]}}))
    assert {"spec.nodes.root.routerType", "spec.nodes.root.steps[0].weight"} <= set(found)


ONE_STEP = {"root": {"routerType": "Sequence", "steps": [{"serviceName": "m"}]}}


def test_inferencegraph_scaling_fields(api: httpx.Client) -> None:
    """A graph's routers do not scale to zero: refused with its field path, as a ceiling
    below the floor is; the autoscaling hints, timeout and resources are taken."""
    r = api.post(IG_PATH, json=ig("to-zero", ONE_STEP, minReplicas=0))
    assert r.status_code == 422, r.text
    (cause,) = r.json()["details"]["causes"]
    assert (cause["field"], cause["reason"]) == ("spec.minReplicas", "FieldValueNotSupported")
    assert cause["message"].startswith("an InferenceGraph's router does not scale to zero here")
    found = causes(api, ig("three", ONE_STEP, minReplicas=3, maxReplicas=2))
    assert found == {"spec.maxReplicas": "must be >= minReplicas (3), got 2"}
    found = causes(api, ig("shapes", ONE_STEP, maxReplicas=-1, scaleTarget=0, timeout=0))
    assert {"spec.maxReplicas", "spec.scaleTarget", "spec.timeout"} <= set(found)
    found = causes(api, ig("metric", ONE_STEP, scaleMetric="gpu"))
    assert set(found) == {"spec.scaleMetric"}
    # A tenant's replica counts are bounded by the platform's max-scale-limit (10).
    found = causes(api, ig("many", ONE_STEP, minReplicas=11, maxReplicas=1000))
    limit = "must be at most 10, the platform's max-scale-limit (SHIPYARD_MAX_SCALE_LIMIT on "
    assert found == {
        "spec.minReplicas": limit + "the serving service), got 11",
        "spec.maxReplicas": limit + "the serving service), got 1000",
    }
    taken = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "scaleTarget": 10,
        "scaleMetric": "concurrency",
        "timeout": 30,
        "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
    }
    r = api.post(IG_PATH, params={"dryRun": "All"}, json=ig("taken", ONE_STEP, **taken))
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert {k: spec[k] for k in taken if k != "resources"} == {
        k: v for k, v in taken.items() if k != "resources"
    }
    assert spec["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert api.get(f"{IG_PATH}/taken").status_code == 404  # a dry run stores nothing


# ---------------------------------------------------------------- end to end
# A model in the ``python`` format: instances measured in millimetres, answered in
# centimetres, so its output is what the iris models take.
MM_TO_CM = """def predict(instances):
    return [[v / 10 for v in row] for row in instances]
"""
# A model that takes its time: two seconds, then its instances back.
SLEEPY = """import time

def predict(instances):
    time.sleep(2)
    return instances
"""


def train_shifted(directory: Path) -> Any:
    """Like train_sklearn, with every class label moved up by one (so 0 -> 1, 2 -> 0)."""
    import joblib

    model = train_sklearn(directory)
    model.classes_ = (model.classes_ + 1) % 3
    joblib.dump(model, directory / "model.joblib")
    return model


@pytest.fixture(scope="module")
def models(api: httpx.Client, claim: Any) -> Iterator[dict[str, Any]]:
    """Four InferenceServices over V1: iris-a and iris-b (sklearn; b answers a's classes
    moved up by one), mm-to-cm and sleepy (python). Afterwards this module's graphs and
    InferenceServices are deleted: the platform is the session's, shared with others."""
    data = claim("graph-models")
    train_sklearn(data / "a")
    train_shifted(data / "b")
    (data / "mm").mkdir(exist_ok=True)
    (data / "mm" / "model.py").write_text(MM_TO_CM)
    (data / "sleepy").mkdir(exist_ok=True)
    (data / "sleepy" / "model.py").write_text(SLEEPY)
    services = {
        "iris-a": {"modelFormat": {"name": "sklearn"}, "storageUri": "pvc://graph-models/a"},
        "iris-b": {"modelFormat": {"name": "sklearn"}, "storageUri": "pvc://graph-models/b"},
        "mm-to-cm": {"modelFormat": {"name": "python"}, "storageUri": "pvc://graph-models/mm"},
        "sleepy": {"modelFormat": {"name": "python"}, "storageUri": "pvc://graph-models/sleepy"},
    }
    for name, model in services.items():
        r = api.post(ISVC_PATH, json=isvc(name, {"model": model}))
        assert r.status_code == 201, r.text
    yield {name: wait_isvc(api, name, ready, timeout=60) for name in services}
    for graph_name in ("chain", "split", "strict", "early", "patient"):
        assert api.delete(f"{IG_PATH}/{graph_name}").status_code in (200, 404)
    for name in (*services, "late"):
        assert api.delete(f"{ISVC_PATH}/{name}").status_code in (200, 404)


def wait_graph(
    api: httpx.Client,
    name: str,
    timeout: float = 60,
    until: Callable[[dict[str, Any]], bool] = ready,
) -> dict[str, Any]:
    """The graph once ``until`` holds of it (by default: Ready)."""
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = api.get(f"{IG_PATH}/{name}")
        assert r.status_code == 200, r.text
        obj = r.json()
        if until(obj):
            return obj
        time.sleep(0.2)
    raise AssertionError(f"graph {name} not so in {timeout}s: {obj.get('status')}")


def test_sequence_graph_through_gateway(
    models: dict[str, Any], api: httpx.Client, platform: Any
) -> None:
    body = ig(
        "chain",
        {
            "root": {
                "routerType": "Sequence",
                "steps": [
                    {"serviceName": "mm-to-cm", "name": "convert"},
                    {
                        "serviceName": "iris-a",
                        "data": "$response",
                        "mapPredictionsToInstances": True,
                        "dependency": "Hard",
                    },
                ],
            }
        },
    )
    r = api.post(IG_PATH, json=body)
    assert r.status_code == 201, r.text
    graph_obj = wait_graph(api, "chain")
    url = f"{platform.gateway_url}/graphs/{NS}/chain"
    assert graph_obj["status"]["url"] == url
    assert [c["type"] for c in graph_obj["status"]["conditions"]] == ["Ready"]
    millimetres = [[10 * v for v in row] for row in SAMPLES]
    # mm-to-cm's centimetres feed iris-a, which tells the classes apart (0 and 2).
    answer = predict(api, f"/graphs/{NS}/chain", {"instances": millimetres})
    assert answer == {"predictions": [0, 2]}
    # Straight to iris-a, the millimetres are out of its range: the chain did the work.
    direct = predict(
        api, f"/serving/{NS}/iris-a/v1/models/iris-a:predict", {"instances": millimetres}
    )
    assert direct != answer
    # kubectl's view: the URL and READY columns.
    table = api.get(IG_PATH, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert table.status_code == 200, table.text
    row = next(r for r in table.json()["rows"] if r["cells"][0] == "chain")
    assert row["cells"][1:3] == [url, "True"]


def test_splitter_graph_reaches_both_through_gateway(
    models: dict[str, Any], api: httpx.Client, platform: Any
) -> None:
    """Created with the ``kubernetes`` client's CustomObjectsApi, as KServe's SDK does
    (``KServeClient.create_inference_graph``)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    custom = client.CustomObjectsApi(
        client.ApiClient(client.Configuration(host=platform.gateway_url))
    )
    group = ("serving.kserve.io", "v1alpha1", NS, "inferencegraphs")
    body = ig(
        "split",
        {
            "root": {
                "routerType": "Splitter",
                "steps": [
                    {"serviceName": "iris-a", "weight": 50},
                    {
                        "serviceUrl": f"http://iris-b.{NS}.example.com/v1/models/iris-b:predict",
                        "weight": 50,
                    },
                ],
            }
        },
    )
    bad = {**body, "metadata": {"name": "split-bad"}}
    bad["spec"] = {"nodes": {"root": {**body["spec"]["nodes"]["root"], "routerType": "Splitter"}}}
    bad["spec"]["nodes"]["root"]["steps"] = [{"serviceName": "iris-a", "weight": 99}]
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(*group, bad)
    assert refused.value.status == 422
    cause = json.loads(refused.value.body)["details"]["causes"][0]
    assert cause["field"] == "spec.nodes.root.steps"
    created = custom.create_namespaced_custom_object(*group, body)
    assert created["metadata"]["name"] == "split" and created["kind"] == "InferenceGraph"
    wait_graph(api, "split")
    assert ready(custom.get_namespaced_custom_object(*group, "split"))
    answers = Counter(
        tuple(predict(api, f"/graphs/{NS}/split", {"instances": SAMPLES})["predictions"])
        for _ in range(40)
    )
    # iris-a answers [0, 2]; iris-b, its classes moved up by one, [1, 0]: both were reached.
    assert set(answers) == {(0, 2), (1, 0)}, answers
    assert answers[(0, 2)] + answers[(1, 0)] == 40


def test_graph_step_failure_names_step_and_delete(
    models: dict[str, Any], api: httpx.Client, platform: Any
) -> None:
    body = ig(
        "strict",
        {
            "root": {
                "routerType": "Ensemble",
                "steps": [
                    {"serviceName": "iris-a", "name": "a"},
                    {"serviceName": "iris-b", "name": "b", "dependency": "Hard"},
                ],
            }
        },
    )
    r = api.post(IG_PATH, json=body)
    assert r.status_code == 201, r.text
    wait_graph(api, "strict")
    answer = predict(api, f"/graphs/{NS}/strict", {"instances": SAMPLES})
    assert answer == {"a": {"predictions": [0, 2]}, "b": {"predictions": [1, 0]}}
    r = api.post(f"/graphs/{NS}/strict", json={"instances": [[1, 2]]})  # 2 features, not 4
    assert r.status_code == 400, r.text
    assert r.json()["cause"].startswith("step 'b' of node 'root' (InferenceService 'iris-b')")
    assert r.json()["step"] == "b"
    r = api.delete(f"{IG_PATH}/strict")
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 20
    while api.get(f"{IG_PATH}/strict").status_code != 404:
        assert time.monotonic() < deadline, "the graph was never removed"
        time.sleep(0.2)
    gone = api.post(f"/graphs/{NS}/strict", json={"instances": SAMPLES})
    assert gone.status_code in (404, 503), gone.text


def routers(platform: Any, name: str) -> list[Any]:
    from services.common.runtime import LocalRuntime
    from services.serving.graph_controller import GRAPH_LABEL

    found = asyncio.run(LocalRuntime(platform.state_dir).list({GRAPH_LABEL: name}, namespace=NS))
    return sorted((w for w in found if not w.finished), key=lambda w: w.name)


def wait_routers(api: httpx.Client, platform: Any, name: str, count: int) -> dict[str, Any]:
    """The graph once it is Ready with ``count`` routers running and in its status."""

    def serving(obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        served = status.get("endpoints") or [status.get("endpoint")]
        return ready(obj) and len(served) == count and len(routers(platform, name)) == count

    return wait_graph(api, name, until=serving)


def test_graph_min_replicas_runs_that_many_routers(
    models: dict[str, Any], api: httpx.Client, platform: Any
) -> None:
    """minReplicas: 2 runs two router workloads, both in the status the gateway routes by;
    down to 1, the second stops and the first (same configuration) keeps serving."""
    nodes = {"root": {"routerType": "Sequence", "steps": [{"serviceName": "iris-a"}]}}
    r = api.post(IG_PATH, json=ig("pair", nodes, minReplicas=2, maxReplicas=4))
    assert r.status_code == 201, r.text
    obj = wait_routers(api, platform, "pair", 2)
    first, second = routers(platform, "pair")
    assert second.name == f"{first.name}-1"
    assert obj["status"]["endpoints"] == [first.endpoint, second.endpoint]
    assert obj["status"]["endpoint"] == first.endpoint and first.endpoint != second.endpoint
    for _ in range(10):
        answer = predict(api, f"/graphs/{NS}/pair", {"instances": SAMPLES})
        assert answer == {"predictions": [0, 2]}
    r = api.patch(
        f"{IG_PATH}/pair",
        json={"spec": {"minReplicas": 1}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    obj = wait_routers(api, platform, "pair", 1)
    assert [w.name for w in routers(platform, "pair")] == [first.name]
    assert obj["status"]["endpoint"] == first.endpoint and "endpoints" not in obj["status"]
    assert predict(api, f"/graphs/{NS}/pair", {"instances": SAMPLES}) == {"predictions": [0, 2]}
    assert api.delete(f"{IG_PATH}/pair").status_code == 200


def test_graph_timeout_and_resources_through_gateway(
    models: dict[str, Any], api: httpx.Client
) -> None:
    """spec.timeout bounds a request in the router (504 naming it), under the resources the
    spec gives the router; a longer timeout starts a new router that waits the model out."""
    nodes = {"root": {"routerType": "Sequence", "steps": [{"serviceName": "sleepy"}]}}
    resources = {"limits": {"cpu": "1", "memory": "512Mi"}}
    r = api.post(IG_PATH, json=ig("patient", nodes, timeout=1, resources=resources))
    assert r.status_code == 201, r.text
    wait_graph(api, "patient")
    r = api.post(f"/graphs/{NS}/patient", json={"instances": [[1, 2]]})
    assert r.status_code == 504, r.text
    assert r.json()["cause"] == "the graph did not answer within 1 s"
    r = api.patch(
        f"{IG_PATH}/patient",
        json={"spec": {"timeout": 10}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    generation = r.json()["metadata"]["generation"]
    deadline = time.monotonic() + 60
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = api.get(f"{IG_PATH}/patient").json()
        if ready(obj) and obj["status"].get("observedGeneration") == generation:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the patched graph never became ready: {obj.get('status')}")
    answer = predict(api, f"/graphs/{NS}/patient", {"instances": [[1, 2]]})
    assert answer == {"predictions": [[1, 2]]}


def test_graph_waits_for_missing_inferenceservice(
    models: dict[str, Any], api: httpx.Client, claim: Any
) -> None:
    """A graph naming an InferenceService that does not exist yet is not Ready, and says
    which; creating the InferenceService wakes it."""
    body = ig("early", {"root": {"routerType": "Sequence", "steps": [{"serviceName": "late"}]}})
    r = api.post(IG_PATH, json=body)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 20
    cond: dict[str, Any] = {}
    while time.monotonic() < deadline:
        conds = (api.get(f"{IG_PATH}/early").json().get("status") or {}).get("conditions") or []
        cond = next((c for c in conds if c["type"] == "Ready"), {})
        if cond:
            break
        time.sleep(0.2)
    assert (cond.get("status"), cond.get("reason")) == ("False", "InferenceServiceNotFound")
    assert cond["message"] == f"InferenceService late not found in namespace {NS}"
    model = {"modelFormat": {"name": "python"}, "storageUri": "pvc://graph-models/mm"}
    r = api.post(ISVC_PATH, json=isvc("late", {"model": model}))
    assert r.status_code == 201, r.text
    wait_isvc(api, "late", ready, timeout=60)
    wait_graph(api, "early")
    answer = predict(api, f"/graphs/{NS}/early", {"instances": [[10, 20]]})
    assert answer == {"predictions": [[1.0, 2.0]]}


# A model that answers with the namespace its server runs in (the runtime names it there).
NAMESPACE_MODEL = """import os

def predict(instances):
    return [os.environ["SHIPYARD_NAMESPACE"] for _ in instances]
"""


def test_graph_router_token_checked_by_gateway(trusted_header_platform: Any) -> None:
    """With tokens really checked (trusted-header mode), the router reaches its namespace's
    InferenceService with its own service-account token, and a person without a role in the
    namespace cannot call the graph."""
    from services.common.runtime import LocalRuntime
    from tests import specs
    from tests.conftest import ADMIN_USER, create_profile, start_service_again

    team = "graph-team"
    headers = {"kubeflow-userid": ADMIN_USER}
    base = trusted_header_platform.gateway_url
    with httpx.Client(base_url=base, headers=headers, timeout=30) as admin:
        create_profile(admin, team)
        pvcs = f"/api/v1/namespaces/{team}/persistentvolumeclaims"
        r = admin.post(pvcs, json=specs.claim("models", "16Mi"))
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 20
        while (admin.get(f"{pvcs}/models").json().get("status") or {}).get("phase") != "Bound":
            assert time.monotonic() < deadline, "the claim never bound"
            time.sleep(0.1)
        data = asyncio.run(
            LocalRuntime(trusted_header_platform.state_dir).resolve_volume(team, "models")
        )
        (data / "ns").mkdir(parents=True, exist_ok=True)
        (data / "ns" / "model.py").write_text(NAMESPACE_MODEL)
        model = {"modelFormat": {"name": "python"}, "storageUri": "pvc://models/ns"}
        isvcs = f"/apis/serving.kserve.io/v1beta1/namespaces/{team}/inferenceservices"
        r = admin.post(isvcs, json=isvc("where", {"model": model}))
        assert r.status_code == 201, r.text
        graphs = f"/apis/serving.kserve.io/v1alpha1/namespaces/{team}/inferencegraphs"
        nodes = {"root": {"routerType": "Sequence", "steps": [{"serviceName": "where"}]}}
        r = admin.post(graphs, json=ig("ask", nodes))
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 60
        # A graph is Ready with its router, as KServe's: its models have their own Ready.
        for path in (f"{graphs}/ask", f"{isvcs}/where"):
            while True:
                r = admin.get(path)
                # 429: the per-user limit of the API, which this polling may meet
                if r.status_code != 429 and ready(r.json()):
                    break
                assert r.status_code in (200, 429), r.text
                assert time.monotonic() < deadline, r.text
                time.sleep(0.2)
        r = admin.post(f"/graphs/{team}/ask", json={"instances": [1, 2]})
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [team, team]}
    stranger = {"kubeflow-userid": "stranger@example.com"}
    r = httpx.post(f"{base}/graphs/{team}/ask", json={"instances": [1]}, headers=stranger)
    assert r.status_code == 403, r.text
    assert r.json()["kind"] == "Status" and team in r.json()["message"]

    # An orderly stop of the serving service ends its workloads, the router too; started
    # again, it starts the router again and the graph answers.
    child = next(c for c in trusted_header_platform.children if c.name == "serving")
    child.signal_group(signal.SIGTERM)
    child.proc.wait(timeout=60)
    start_service_again(child)
    deadline = time.monotonic() + 60
    while True:
        r = httpx.post(f"{base}/graphs/{team}/ask", json={"instances": [1]}, headers=headers)
        if r.status_code == 200:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    assert r.json() == {"predictions": [team]}


# ---------------------------------------------------------------- the router on the seam
class _NoStore:
    """What the graph controller's workload_for needs of a store: nothing but a listener
    registration (the spec is built from the graph alone)."""

    def add_listener(self, listener: Any) -> None:
        pass


def test_router_workload_on_runtime_seam(tmp_path: Path) -> None:
    """The router runs as the model server does: the runtime's interpreter and platform
    image, the graph as a read-only workload file, no host path or loopback address."""
    from typing import cast

    from services.common.resources import ResourceStore
    from services.common.runtime import LocalRuntime
    from services.serving.graph_controller import (
        GRAPH_FILE,
        GRAPH_LABEL,
        ROUTER,
        InferenceGraphController,
        predict_path,
    )

    runtime = LocalRuntime(tmp_path / "runtime")
    runtime.python = "python3"  # what the Kubernetes runtime says
    runtime.platform_image = "registry.example/shipyard:1.2.3"
    ctl = InferenceGraphController(cast(ResourceStore, _NoStore()), runtime, "http://gateway")
    graph_obj = ig("g", {"root": {"routerType": "Sequence", "steps": [{"serviceName": "m"}]}})
    graph_obj["metadata"] |= {"namespace": NS, "uid": "u-1"}
    graph_obj["spec"]["resources"] = {"limits": {"memory": "256Mi"}}
    config = json.dumps({"nodes": graph_obj["spec"]["nodes"]})
    spec = ctl.workload_for(graph_obj, config, "0123456789")
    assert (spec.kind, spec.namespace, spec.name) == ("server", NS, "ig-g-01234567")
    assert spec.command == ["python3", "-m", ROUTER]
    assert spec.args == ["--graph", GRAPH_FILE, "--port", "$(PORT)"]
    assert spec.image == "registry.example/shipyard:1.2.3"
    assert spec.files == {GRAPH_FILE: config}
    assert spec.volumes == [] and spec.volume_mounts == []
    assert spec.readiness_probe is not None
    assert spec.readiness_probe.http_get is not None
    assert spec.readiness_probe.http_get.path == "/readyz"
    assert spec.resources.limits == {"memory": "256Mi"}
    assert spec.labels[GRAPH_LABEL] == "g"
    # A step's InferenceService is called at its predict endpoint, by its protocol.
    v1 = isvc("m", {"sklearn": {"storageUri": "pvc://c/m"}})
    v2 = isvc("n", {"model": {"modelFormat": {"name": "onnx"}, "protocolVersion": "v2"}})
    for obj in (v1, v2):
        obj["metadata"]["namespace"] = NS
    assert predict_path(v1) == f"/serving/{NS}/m/v1/models/m:predict"
    assert predict_path(v2) == f"/serving/{NS}/n/v2/models/n/infer"


class _OneService(_NoStore):
    """A store holding one InferenceService ``m`` (V1) of the namespace."""

    async def find(self, kind: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        if name != "m":
            return None
        obj = isvc("m", {"sklearn": {"storageUri": "pvc://c/m"}})
        obj["metadata"]["namespace"] = namespace
        return obj


async def test_router_config_and_workload_follow_the_spec(tmp_path: Path) -> None:
    """spec.timeout and routerTimeouts reach the router's configuration; resources and
    placement its workload. A change to any of them names a new router workload (a new
    one starts beside the old), and a graph setting none keeps the hash it always had."""
    import hashlib
    from typing import cast

    from services.common.resources import ResourceStore
    from services.common.runtime import LocalRuntime
    from services.serving.graph_controller import InferenceGraphController, router_digest

    ctl = InferenceGraphController(
        cast(ResourceStore, _OneService()), LocalRuntime(tmp_path / "runtime"), "http://gateway"
    )
    graph_obj = ig("g", ONE_STEP, timeout=7, routerTimeouts={"serviceClient": 3}, minReplicas=1)
    graph_obj["metadata"] |= {"namespace": NS, "uid": "u-1"}
    config, missing = await ctl._resolve(graph_obj)
    assert missing == []
    assert config["timeout"] == 7 and config["routerTimeouts"] == {"serviceClient": 3}
    assert config["nodes"]["root"]["steps"][0]["path"] == f"/serving/{NS}/m/v1/models/m:predict"
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    spec = graph_obj["spec"]
    plain = router_digest(spec, text)
    assert plain == hashlib.sha256(text.encode()).hexdigest()[:10]
    longer = json.dumps({**config, "timeout": 8}, sort_keys=True, separators=(",", ":"))
    assert router_digest(spec, longer) != plain
    limited = {**spec, "resources": {"limits": {"memory": "256Mi"}, "requests": None}}
    placed = {**spec, "nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "gpu"}]}
    digests = {plain, router_digest(limited, text), router_digest(placed, text)}
    assert len(digests) == 3
    # The scaling fields change nothing of the one router.
    assert router_digest({**spec, "maxReplicas": 4, "scaleTarget": 5}, text) == plain
    workload = ctl.workload_for({**graph_obj, "spec": placed}, text, router_digest(placed, text))
    assert workload.node_selector == {"disk": "ssd"}
    assert [t.get("key") for t in workload.tolerations] == ["gpu"]
    workload = ctl.workload_for({**graph_obj, "spec": limited}, text, "0123456789")
    assert workload.resources.limits == {"memory": "256Mi"}
