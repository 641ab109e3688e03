"""A transformer in front of a predictor, end to end through the gateway, with KServe's
contract: the transformer's container gets ``--model_name``, ``--predictor_host`` (and
``PREDICTOR_HOST``) and ``--http_port``; it pre-processes, calls the predictor's V1 predict at
``http://{predictor_host}/v1/models/{name}:predict`` and post-processes.

The transformer is a plain Python program written the way a KServe transformer is (the
kserve SDK's ``kserve.Model`` cannot be installed beside the platform's pins, so it is not
used): an http.server that reads those arguments.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from services.common.settings import SINGLE_USER_NAMESPACE as NS

from .conftest import ISVC_PATH, isvc, predict, ready, train_sklearn, wait_isvc

# Pre-process named iris features into rows, predict through the predictor host, post-process
# class indices into names. It answers under the gateway's path prefix too, and sends its
# workload token to the gateway when it has one (in-cluster clients do; single-user mode
# needs none).
TRANSFORMER = r"""
import argparse, json, os, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--model_name", required=True)
parser.add_argument("--predictor_host", required=True)
parser.add_argument("--http_port", type=int, required=True)
args = parser.parse_args()
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
PREFIX = os.environ.get("SHIPYARD_PATH_PREFIX", "")
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
INSTANCE = os.urandom(6).hex()  # which replica answered


def call_predictor(rows):
    url = f"http://{args.predictor_host}/v1/models/{args.model_name}:predict"
    request = urllib.request.Request(url, json.dumps({"instances": rows}).encode(),
                                     {"content-type": "application/json"})
    if os.path.exists(TOKEN):
        request.add_header("authorization", "Bearer " + open(TOKEN).read().strip())
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())["predictions"]


class Handler(BaseHTTPRequestHandler):
    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self):
        path = self.path.split("?", 1)[0]
        return path[len(PREFIX):] if PREFIX and path.startswith(PREFIX) else path

    def do_GET(self):
        if self.route() == f"/v1/models/{args.model_name}":
            return self.answer(200, {"name": args.model_name, "ready": True,
                                     "predictor_host": args.predictor_host,
                                     "PREDICTOR_HOST": os.environ.get("PREDICTOR_HOST"),
                                     "SHIPYARD_URL": os.environ.get("SHIPYARD_URL"),
                                     "instance": INSTANCE})
        self.answer(200 if self.route() == "/" else 404, {"status": "alive"})

    def do_POST(self):
        if self.route() != f"/v1/models/{args.model_name}:predict":
            return self.answer(404, {"error": "not found"})
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        rows = [[float(item[f]) for f in FEATURES] for item in body["instances"]]
        try:
            predicted = call_predictor(rows)
        except Exception as exc:
            return self.answer(502, {"error": f"predictor: {exc}"})
        self.answer(200, {"predictions": [CLASSES[int(p)] for p in predicted]})

    def log_message(self, *a):
        pass


ThreadingHTTPServer(("0.0.0.0", args.http_port), Handler).serve_forever()
"""

# An explainer as KServe runs one: --model_name and --predictor_host given, answering
# POST /v1/models/{name}:explain (here: the largest feature of each row).
EXPLAINER = r"""
import argparse, json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INSTANCE = os.urandom(6).hex()  # which replica answered
parser = argparse.ArgumentParser()
parser.add_argument("--model_name", required=True)
parser.add_argument("--predictor_host", required=True)
parser.add_argument("--http_port", type=int, required=True)
args = parser.parse_args()


class Handler(BaseHTTPRequestHandler):
    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.answer(200, {"status": "alive"})

    def do_POST(self):
        if not self.path.endswith(f"/v1/models/{args.model_name}:explain"):
            return self.answer(404, {"error": "not found"})
        rows = json.loads(self.rfile.read(int(self.headers["content-length"])))["instances"]
        top = [{"top_feature": max(range(len(r)), key=lambda i: r[i])} for r in rows]
        self.answer(200, {"explanations": top, "model": args.model_name,
                          "predictor_host": args.predictor_host, "instance": INSTANCE})

    def log_message(self, *a):
        pass


ThreadingHTTPServer(("0.0.0.0", args.http_port), Handler).serve_forever()
"""

SAMPLES = [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]


@pytest.fixture(scope="module")
def fronted(api: httpx.Client, claim: Any) -> Any:
    """An sklearn predictor with the transformer in front, Ready."""
    data: Path = claim("transformer-models")
    train_sklearn(data / "iris")
    body = isvc(
        "fronted",
        {
            "model": {
                "modelFormat": {"name": "sklearn"},
                "storageUri": "pvc://transformer-models/iris",
            }
        },
    )
    body["spec"]["transformer"] = {
        "containers": [
            {
                "name": "kserve-container",
                "image": "example/iris-transformer:1",
                "command": ["python", "-c", TRANSFORMER],
            }
        ]
    }
    r = api.post(ISVC_PATH, json=body)
    assert r.status_code == 201, r.text
    yield wait_isvc(api, "fronted", ready, timeout=60)
    api.delete(f"{ISVC_PATH}/fronted")


def test_transformer_status_components(fronted: dict[str, Any], platform: Any) -> None:
    status = fronted["status"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "IngressReady": "True",
        "PredictorReady": "True",
        "TransformerReady": "True",
        "Ready": "True",
    }
    base = f"{platform.gateway_url}/serving/{NS}/fronted"
    assert status["url"] == base
    assert status["components"]["transformer"]["url"] == base
    assert status["components"]["predictor"]["url"] == base + "-predictor"


def test_transformer_gets_predictor_host(fronted: dict[str, Any], api: httpx.Client) -> None:
    """KServe's arguments: --predictor_host and PREDICTOR_HOST name the predictor's data
    plane through the gateway, at the address the runtime gives the workload for it (its own
    $SHIPYARD_URL, as every other workload reaches the gateway)."""
    meta = api.get(f"/serving/{NS}/fronted/v1/models/fronted").json()
    assert meta["name"] == "fronted" and meta["ready"] is True
    assert meta["predictor_host"] == meta["PREDICTOR_HOST"]
    gateway = urlsplit(meta["SHIPYARD_URL"]).netloc
    assert gateway
    assert meta["predictor_host"] == f"{gateway}/serving/{NS}/fronted-predictor"


def test_predict_through_transformer(fronted: dict[str, Any], api: httpx.Client) -> None:
    """The InferenceService's URL reaches the transformer, which pre-processes, asks the
    predictor and post-processes."""
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    instances = [dict(zip(names, row, strict=True)) for row in SAMPLES]
    answer = predict(
        api, f"/serving/{NS}/fronted/v1/models/fronted:predict", {"instances": instances}
    )
    assert answer == {"predictions": ["setosa", "virginica"]}
    # The predictor itself answers under its own name, with raw class indices.
    direct = predict(
        api, f"/serving/{NS}/fronted-predictor/v1/models/fronted:predict", {"instances": SAMPLES}
    )
    assert direct == {"predictions": [0, 2]}


def test_explain_without_explainer_501(fronted: dict[str, Any], api: httpx.Client) -> None:
    r = api.post(f"/serving/{NS}/fronted/v1/models/fronted:explain", json={"instances": SAMPLES})
    assert r.status_code == 501, r.text
    error = r.json()["error"]
    assert "InferenceService " + NS + "/fronted has no explainer" in error
    assert "spec.explainer" in error


def test_explain_routed_to_explainer(fronted: dict[str, Any], api: httpx.Client) -> None:
    """With spec.explainer, :explain reaches the explainer (given KServe's arguments too),
    either of its two replicas (minReplicas); predictions still go through the transformer."""
    explainer = {"name": "kserve-container", "command": ["python", "-c", EXPLAINER]}
    r = api.patch(
        f"{ISVC_PATH}/fronted",
        json={"spec": {"explainer": {"containers": [explainer], "minReplicas": 2}}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text

    def explaining(o: dict[str, Any]) -> bool:
        """Ready with both explainers serving (it is Ready once the first one serves)."""
        conditions = {c["type"]: c["status"] for c in o["status"].get("conditions") or []}
        entry = (o["status"].get("components") or {}).get("explainer") or {}
        ready = conditions.get("ExplainerReady") == "True" and conditions.get("Ready") == "True"
        return ready and len(entry.get("endpoints") or []) == 2

    status = wait_isvc(api, "fronted", explaining, timeout=60)["status"]
    assert status["components"]["explainer"]["url"].endswith(f"/serving/{NS}/fronted")
    assert len(status["components"]["explainer"]["endpoints"]) == 2
    seen: set[str] = set()
    for _ in range(40):  # each request picks one of the two at random
        r = api.post(
            f"/serving/{NS}/fronted/v1/models/fronted:explain", json={"instances": SAMPLES}
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["explanations"] == [{"top_feature": 0}, {"top_feature": 0}]
        assert answer["model"] == "fronted"
        assert answer["predictor_host"].endswith(f"/serving/{NS}/fronted-predictor")
        seen.add(answer["instance"])
    assert len(seen) == 2, seen


def transformers(platform: Any, name: str) -> list[Any]:
    from services.common.runtime import LocalRuntime
    from services.serving.components import COMPONENT_LABEL

    selector = {"serving.kserve.io/inferenceservice": name, COMPONENT_LABEL: "transformer"}
    found = asyncio.run(LocalRuntime(platform.state_dir).list(selector, namespace=NS))
    return sorted((w for w in found if not w.finished), key=lambda w: w.name)


def test_transformer_min_replicas(
    fronted: dict[str, Any], api: httpx.Client, platform: Any
) -> None:
    """minReplicas: 2 on the transformer runs a second replica beside the first (which is
    not restarted), the status lists both, and the gateway spreads the InferenceService's
    traffic over them; back to 1, the second stops."""
    (first,) = transformers(platform, "fronted")
    r = api.patch(
        f"{ISVC_PATH}/fronted",
        json={"spec": {"transformer": {"minReplicas": 2, "maxReplicas": 3}}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text

    def two(o: dict[str, Any]) -> bool:
        return ready(o) and len(o["status"]["components"]["transformer"].get("endpoints", [])) == 2

    status = wait_isvc(api, "fronted", two, timeout=60)["status"]
    replicas = transformers(platform, "fronted")
    assert [w.name for w in replicas] == [first.name, f"{first.name}-1"]
    # The same server, not started again.
    assert (replicas[0].start_time, replicas[0].endpoint) == (first.start_time, first.endpoint)
    assert status["components"]["transformer"]["endpoints"] == [w.endpoint for w in replicas]
    seen: set[str] = set()
    deadline = time.monotonic() + 10  # the gateway's route follows the status event
    while len(seen) < 2 and time.monotonic() < deadline:
        seen.add(api.get(f"/serving/{NS}/fronted/v1/models/fronted").json()["instance"])
    assert len(seen) == 2, seen
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    instances = [dict(zip(names, row, strict=True)) for row in SAMPLES]
    for _ in range(6):
        answer = predict(
            api, f"/serving/{NS}/fronted/v1/models/fronted:predict", {"instances": instances}
        )
        assert answer == {"predictions": ["setosa", "virginica"]}
    r = api.patch(
        f"{ISVC_PATH}/fronted",
        json={"spec": {"transformer": {"minReplicas": 1}}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text

    def one(o: dict[str, Any]) -> bool:
        entry = o["status"]["components"]["transformer"]
        return ready(o) and "endpoints" not in entry and "endpoint" in entry

    wait_isvc(api, "fronted", one, timeout=60)
    deadline = time.monotonic() + 15  # the surplus replica drains, then stops
    while time.monotonic() < deadline and len(transformers(platform, "fronted")) > 1:
        time.sleep(0.2)
    assert [(w.name, w.start_time) for w in transformers(platform, "fronted")] == [
        (first.name, first.start_time)
    ]


def test_remove_transformer_routes_to_predictor(fronted: dict[str, Any], api: httpx.Client) -> None:
    """Without a transformer the InferenceService's URL reaches the predictor again, and the
    transformer's workload and status entries are gone."""
    r = api.patch(
        f"{ISVC_PATH}/fronted",
        json={"spec": {"transformer": None}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text

    def alone(o: dict[str, Any]) -> bool:
        return ready(o) and "transformer" not in o["status"]["components"]

    status = wait_isvc(api, "fronted", alone, timeout=60)["status"]
    assert "TransformerReady" not in {c["type"] for c in status["conditions"]}
    for _ in range(100):  # the gateway's route follows the status event
        r = api.post(
            f"/serving/{NS}/fronted/v1/models/fronted:predict", json={"instances": SAMPLES}
        )
        if r.status_code == 200 and r.json() == {"predictions": [0, 2]}:
            break
        time.sleep(0.1)
    assert r.json() == {"predictions": [0, 2]}, r.text


def test_transformer_that_exits_not_ready(fronted: dict[str, Any], api: httpx.Client) -> None:
    """A transformer whose server exits keeps the InferenceService not Ready, and the
    TransformerReady condition says why."""
    body = isvc(
        "bad-front",
        {
            "model": {
                "modelFormat": {"name": "sklearn"},
                "storageUri": "pvc://transformer-models/iris",
            }
        },
    )
    crash = {"name": "kserve-container", "command": ["python", "-c", "raise SystemExit(3)"]}
    body["spec"]["transformer"] = {"containers": [crash]}
    assert api.post(ISVC_PATH, json=body).status_code == 201

    def told(o: dict[str, Any]) -> bool:
        conditions = {c["type"]: c for c in (o.get("status") or {}).get("conditions") or []}
        message = conditions.get("TransformerReady", {}).get("message", "")
        return "the transformer is not running" in message

    status = wait_isvc(api, "bad-front", told, timeout=60)["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["PredictorReady"]["status"] == "True"
    assert conditions["TransformerReady"]["status"] == "False"
    assert conditions["Ready"]["status"] == "False"
    assert "transformer" in conditions["Ready"]["message"]
    assert api.delete(f"{ISVC_PATH}/bad-front").status_code == 200
