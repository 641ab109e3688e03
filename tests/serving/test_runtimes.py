"""ServingRuntimes and ClusterServingRuntimes end to end: the kinds through the gateway, KServe's
runtime selection (autoSelect by priority, a named runtime, the namespace's before the
cluster's, none at all) and a runtime whose container is the user's own server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.objectstore import ObjectStore
from services.common.runtime import LocalRuntime
from services.common.settings import SINGLE_USER_NAMESPACE as NS
from services.serving.models import SUPPORTED_FORMATS
from tests.conftest import ADMIN_USER

from .conftest import ISVC_PATH, isvc, predict, ready, tar_gz, wait_isvc

GROUP = "/apis/serving.kserve.io/v1alpha1"
SR_PATH = f"{GROUP}/namespaces/{NS}/servingruntimes"
CSR_PATH = f"{GROUP}/clusterservingruntimes"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"

# A model in the ``python`` format answering with what the runtime's container put in its
# environment (RUNTIME_TAG), so a prediction shows which runtime served it.
TAG_MODEL = """import os

def predict(instances):
    return [os.environ.get("RUNTIME_TAG", "none") for _ in instances]
"""

# A user's own model server, as a user's image would run it: V2 health and infer over plain
# http.server on $PORT, with the model (a scale factor) read from $MODEL_DIR. It answers
# under the gateway's path prefix as well (SHIPYARD_PATH_PREFIX), as the platform asks of a
# server of its own.
OWN_SERVER = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--model_name="))
SCALE = float(open(os.path.join(os.environ["MODEL_DIR"], "scale.txt")).read())
PREFIX = os.environ.get("SHIPYARD_PATH_PREFIX", "")

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
        if self.route() in ("/v2/health/ready", "/v2/health/live", f"/v2/models/{NAME}/ready"):
            return self.answer(200, {"ready": True})
        self.answer(404, {"error": "not found"})

    def do_POST(self):
        if self.route() != f"/v2/models/{NAME}/infer":
            return self.answer(404, {"error": "not found"})
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        tensor = body["inputs"][0]
        out = [x * SCALE for x in tensor["data"]]
        self.answer(200, {"model_name": NAME, "id": body.get("id", ""), "outputs": [
            {"name": "scaled", "shape": tensor["shape"], "datatype": "FP64", "data": out}]})

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def runtime(
    name: str,
    formats: list[dict[str, Any]],
    container: dict[str, Any],
    protocols: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"supportedModelFormats": formats, "containers": [container]}
    if protocols:
        spec["protocolVersions"] = protocols
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": name},
        "spec": spec,
    }


def tag_server(tag: str) -> dict[str, Any]:
    """A container running the platform's model server, tagging its answers."""
    return {
        "name": "kserve-container",
        "image": "example/never-pulled:1",
        "command": ["python", "-m", "services.serving.modelserver"],
        "args": ["--model-name={{.Name}}"],
        "env": [{"name": "RUNTIME_TAG", "value": tag + "-{{.Name}}-{{.Labels.team}}"}],
    }


def python_model(version: str | None = None, **extra: Any) -> dict[str, Any]:
    fmt = {"name": "python", **({"version": version} if version else {})}
    return {"model": {"modelFormat": fmt, "storageUri": "pvc://runtime-models/tag", **extra}}


def labelled(name: str, predictor: dict[str, Any]) -> dict[str, Any]:
    body = isvc(name, predictor)
    body["metadata"]["labels"] = {"team": "blue"}
    return body


@pytest.fixture(scope="module")
def runtimes(api: httpx.Client, claim: Callable[[str], Path]) -> Iterator[Callable[..., None]]:
    """Create ServingRuntimes in the test namespace (all deleted afterwards), with the tag
    model on the claim ``runtime-models``."""
    data = claim("runtime-models")
    (data / "tag").mkdir(exist_ok=True)
    (data / "tag" / "model.py").write_text(TAG_MODEL)
    made: list[str] = []

    def create(body: dict[str, Any]) -> None:
        r = api.post(SR_PATH, json=body)
        assert r.status_code == 201, r.text
        made.append(body["metadata"]["name"])

    yield create
    for name in made:
        api.delete(f"{SR_PATH}/{name}")


def served(api: httpx.Client, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create the InferenceService, wait until Ready; the object."""
    r = api.post(ISVC_PATH, json=body)
    assert r.status_code == 201, r.text
    return wait_isvc(api, name, ready, timeout=60)


def tag_of(api: httpx.Client, name: str) -> str:
    answer = predict(api, f"/serving/{NS}/{name}/v1/models/{name}:predict", {"instances": [1]})
    return str(answer["predictions"][0])


def test_list_cluster_serving_runtimes_builtin(api: httpx.Client) -> None:
    """Every format the model server loads has a built-in runtime, readable by a tenant."""
    r = api.get(CSR_PATH)
    assert r.status_code == 200, r.text
    items = {o["metadata"]["name"]: o for o in r.json()["items"]}
    for name in ("kserve-sklearnserver", "kserve-xgbserver", "kserve-lgbserver"):
        assert name in items, sorted(items)
    assert {"kserve-torchserve", "shipyard-pythonserver"} <= set(items)
    formats = {f["name"] for o in items.values() for f in o["spec"]["supportedModelFormats"]}
    assert set(SUPPORTED_FORMATS) <= formats
    sklearn = items["kserve-sklearnserver"]["spec"]
    assert sklearn["supportedModelFormats"] == [
        {"name": "sklearn", "version": "1", "autoSelect": True, "priority": 1}
    ]
    assert sklearn["protocolVersions"] == ["v1", "v2"]
    assert sklearn["containers"][0]["args"][0] == "--model-name={{.Name}}"
    table = api.get(f"{CSR_PATH}/kserve-xgbserver", headers={"accept": TABLE}).json()
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "DISABLED", "MODELTYPE", "CONTAINERS", "Age"]
    assert table["rows"][0]["cells"][:4] == [
        "kserve-xgbserver",
        "<none>",
        "xgboost",
        "kserve-container",
    ]


def test_create_cluster_serving_runtime_forbidden_for_tenant(api: httpx.Client) -> None:
    """Cluster-scoped runtimes are the cluster admins': the namespace's owner may not write."""
    body = runtime("mine", [{"name": "sklearn", "autoSelect": True}], tag_server("x"))
    body["kind"] = "ClusterServingRuntime"
    r = api.post(CSR_PATH, json=body)
    assert r.status_code == 403, r.text
    assert r.json()["kind"] == "Status" and "cluster scope" in r.json()["message"]
    r = api.patch(
        f"{CSR_PATH}/kserve-sklearnserver",
        json={"spec": {"disabled": True}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 403, r.text
    assert api.get(f"{CSR_PATH}/kserve-sklearnserver").json()["spec"].get("disabled") is None


def test_serving_runtime_crud(api: httpx.Client) -> None:
    body = runtime("crud-rt", [{"name": "python", "version": "3"}], tag_server("crud"), ["v2"])
    r = api.post(SR_PATH, json=body)
    assert r.status_code == 201, r.text
    got = api.get(f"{SR_PATH}/crud-rt").json()
    assert got["spec"]["protocolVersions"] == ["v2"]
    assert got["metadata"]["namespace"] == NS
    r = api.patch(
        f"{SR_PATH}/crud-rt",
        json={"spec": {"disabled": True}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200 and r.json()["spec"]["disabled"] is True, r.text
    table = api.get(SR_PATH, headers={"accept": TABLE}).json()
    row = next(r["cells"] for r in table["rows"] if r["cells"][0] == "crud-rt")
    assert row[1:4] == ["true", "python", "kserve-container"]
    assert api.delete(f"{SR_PATH}/crud-rt").status_code == 200
    assert api.get(f"{SR_PATH}/crud-rt").status_code == 404


def test_create_serving_runtime_invalid_422(api: httpx.Client) -> None:
    bad = runtime("bad-rt", [{"name": "python", "priority": 0}], tag_server("x"))
    bad["spec"]["containers"][0]["args"] = ["--x={{.Spec.Secret}}"]
    bad["spec"]["protocolVersions"] = ["v3"]
    r = api.post(SR_PATH, json=bad)
    assert r.status_code == 422, r.text
    causes = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
    assert "spec.supportedModelFormats[0].priority" in causes, causes
    assert "spec.protocolVersions[0]" in causes, causes
    empty = runtime("bad-rt", [{"name": "python"}], tag_server("x"))
    empty["spec"]["containers"] = []
    r = api.post(SR_PATH, json=empty)
    assert r.status_code == 422 and "spec.containers" in r.text, r.text
    templated = runtime("bad-rt", [{"name": "python"}], tag_server("x"))
    templated["spec"]["containers"][0]["args"] = ["--x={{.Spec.Secret}}"]
    r = api.post(SR_PATH, json=templated)
    assert r.status_code == 422, r.text
    [cause] = r.json()["details"]["causes"]
    assert cause["field"] == "spec.containers[0].args[0]"
    assert "{{.Spec.Secret}} is not supported" in cause["message"]


def test_namespace_runtime_before_cluster_runtime(api: httpx.Client, runtimes: Any) -> None:
    """A built-in ClusterServingRuntime serves a format; a ServingRuntime of the namespace
    that also autoSelects it is chosen first, whatever the cluster one's priority. (First of
    the selection tests: the later ones' runtimes list ``python`` too.)"""
    obj = served(api, "builtin", labelled("builtin", python_model()))
    assert obj["status"]["clusterServingRuntimeName"] == "shipyard-pythonserver"
    assert tag_of(api, "builtin") == "none"
    assert api.delete(f"{ISVC_PATH}/builtin").status_code == 200
    runtimes(runtime("rt-any", [{"name": "python", "autoSelect": True}], tag_server("ns")))
    obj = served(api, "ns-first", labelled("ns-first", python_model()))
    assert obj["status"]["servingRuntimeName"] == "rt-any"
    assert tag_of(api, "ns-first") == "ns-ns-first-blue"
    assert api.delete(f"{ISVC_PATH}/ns-first").status_code == 200
    assert api.delete(f"{SR_PATH}/rt-any").status_code == 200


def test_autoselect_runtime_by_priority(api: httpx.Client, runtimes: Any) -> None:
    """Of two runtimes that autoSelect the format and version, the higher priority serves;
    its container (templated env and args) drives the server."""
    fmt = [{"name": "python", "version": "9", "autoSelect": True}]
    runtimes(runtime("rt-low", [{**fmt[0], "priority": 1}], tag_server("low")))
    runtimes(runtime("rt-high", [{**fmt[0], "priority": 5}], tag_server("high")))
    runtimes(runtime("rt-unranked", fmt, tag_server("unranked")))
    obj = served(api, "auto", labelled("auto", python_model("9")))
    assert obj["status"]["servingRuntimeName"] == "rt-high"
    assert "clusterServingRuntimeName" not in obj["status"]
    assert tag_of(api, "auto") == "high-auto-blue"
    assert api.delete(f"{ISVC_PATH}/auto").status_code == 200


def test_named_runtime_even_without_autoselect(api: httpx.Client, runtimes: Any) -> None:
    runtimes(runtime("rt-manual", [{"name": "python", "version": "9"}], tag_server("manual")))
    obj = served(api, "named", labelled("named", python_model("9", runtime="rt-manual")))
    assert obj["status"]["servingRuntimeName"] == "rt-manual"
    assert tag_of(api, "named") == "manual-named-blue"
    assert api.delete(f"{ISVC_PATH}/named").status_code == 200


def test_no_supporting_runtime_condition(api: httpx.Client) -> None:
    """A format (or version) no runtime serves: KServe's NoSupportingRuntime, not a 422."""
    body = isvc("no-rt", {"model": {"modelFormat": {"name": "mlflow"}, "storageUri": "pvc://x/y"}})
    assert api.post(ISVC_PATH, json=body).status_code == 201

    def failed(o: dict[str, Any]) -> bool:
        return bool((o.get("status") or {}).get("modelStatus", {}).get("lastFailureInfo"))

    status = wait_isvc(api, "no-rt", failed)["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    message = conditions["PredictorReady"]["message"]
    assert "No runtime found to support model format 'mlflow' over protocol v1" in message
    info = status["modelStatus"]["lastFailureInfo"]
    assert info["reason"] == "NoSupportingRuntime" and info["message"] == message
    assert status["modelStatus"]["transitionStatus"] == "InvalidSpec"
    assert api.delete(f"{ISVC_PATH}/no-rt").status_code == 200
    # A version no runtime lists, and a named runtime that does not exist.
    body = isvc("no-rt-v", python_model("7"))
    assert api.post(ISVC_PATH, json=body).status_code == 201
    info = wait_isvc(api, "no-rt-v", failed)["status"]["modelStatus"]["lastFailureInfo"]
    assert "'python' version '7'" in info["message"]
    assert api.delete(f"{ISVC_PATH}/no-rt-v").status_code == 200
    body = isvc("no-rt-n", python_model(runtime="nowhere"))
    assert api.post(ISVC_PATH, json=body).status_code == 201
    info = wait_isvc(api, "no-rt-n", failed)["status"]["modelStatus"]["lastFailureInfo"]
    assert info["reason"] == "RuntimeNotRecognized" and "'nowhere'" in info["message"]
    assert api.delete(f"{ISVC_PATH}/no-rt-n").status_code == 200


def test_user_runtime_container_serves_end_to_end(
    api: httpx.Client, runtimes: Any, claim: Callable[[str], Path]
) -> None:
    """A runtime whose container is the user's own server (image recorded, command run in
    the sandbox), selected by autoSelect for its format over V2, answers through the
    gateway with the model from the volume."""
    data = claim("runtime-models")
    (data / "scale").mkdir(exist_ok=True)
    (data / "scale" / "scale.txt").write_text("3")
    container = {
        "name": "kserve-container",
        "image": "example/scaler-server:1.0",
        "command": ["python", "-c", OWN_SERVER],
        "args": ["--model_name={{.Name}}", "--model_dir=/mnt/models"],
    }
    fmts = [{"name": "scaler", "version": "1", "autoSelect": True}]
    runtimes(runtime("scaler-rt", fmts, container, ["v2"]))
    model = {
        "modelFormat": {"name": "scaler"},
        "protocolVersion": "v2",
        "storageUri": "pvc://runtime-models/scale",
    }
    obj = served(api, "scaler", isvc("scaler", {"model": model}))
    assert obj["status"]["servingRuntimeName"] == "scaler-rt"
    body = {"id": "7", "inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}]}
    answer = predict(api, f"/serving/{NS}/scaler/v2/models/scaler/infer", body)
    assert answer["outputs"][0]["data"] == [3.0, 6.0] and answer["id"] == "7"
    assert api.get(f"/serving/{NS}/scaler/v2/health/ready").json() == {"ready": True}
    assert api.delete(f"{ISVC_PATH}/scaler").status_code == 200


def test_user_runtime_container_serves_an_s3_model(
    api: httpx.Client, runtimes: Any, seaweedfs: Any, platform: Any
) -> None:
    """The same kind of server (the user's own, not the platform's) with its model in the
    platform's bucket (``s3://``): the storage initializer runs first as an init container of
    its workload, filling the emptyDir at /mnt/models that MODEL_DIR names, and the server
    answers with what the uploaded file says (a scale of 7)."""
    prefix = f"models/{NS}/scale-{os.urandom(4).hex()}"

    async def upload() -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"7"

        async with ObjectStore(seaweedfs.config) as store:
            await store.put_stream(f"{prefix}/scale.txt", chunks())

    asyncio.run(upload())
    container = {
        "name": "kserve-container",
        "image": "example/scaler-server:1.0",
        "command": ["python", "-c", OWN_SERVER],
        "args": ["--model_name={{.Name}}", "--model_dir=/mnt/models"],
    }
    fmts = [{"name": "scaler-s3", "version": "1", "autoSelect": True}]
    runtimes(runtime("scaler-s3-rt", fmts, container, ["v2"]))
    model = {
        "modelFormat": {"name": "scaler-s3"},
        "protocolVersion": "v2",
        "storageUri": f"s3://{seaweedfs.config.bucket}/{prefix}",
    }
    try:
        obj = served(api, "scaler-s3", isvc("scaler-s3", {"model": model}))
        assert obj["status"]["servingRuntimeName"] == "scaler-s3-rt"
        body = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}]}
        answer = predict(api, f"/serving/{NS}/scaler-s3/v2/models/scaler-s3/infer", body)
        assert answer["model_name"] == "scaler-s3"
        assert answer["outputs"][0]["data"] == [7.0, 14.0]
        # The download was the init step's, logged before the server's own start.
        logs = asyncio.run(workload_logs(platform, "isvc-scaler-s3-1"))
        assert any(line.startswith("storage initializer: model in place") for line in logs)
    finally:
        api.delete(f"{ISVC_PATH}/scaler-s3")


def test_user_runtime_storage_initializer_failure_is_quoted(
    api: httpx.Client, runtimes: Any, seaweedfs: Any
) -> None:
    """An archive whose member would leave /mnt/models fails the user's server's storage
    initializer: the server never starts, and the InferenceService's status quotes the init
    step and the initializer's reason."""
    key = f"models/{NS}/evil-{os.urandom(4).hex()}/model.tgz"

    async def upload() -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield tar_gz({"../scale.txt": b"9"})

        async with ObjectStore(seaweedfs.config) as store:
            await store.put_stream(key, chunks())

    asyncio.run(upload())
    container = {
        "name": "kserve-container",
        "image": "example/scaler-server:1.0",
        "command": ["python", "-c", "print('THE SERVER STARTED')"],
    }
    fmts = [{"name": "scaler-evil", "version": "1", "autoSelect": True}]
    runtimes(runtime("scaler-evil-rt", fmts, container, ["v2"]))
    model = {
        "modelFormat": {"name": "scaler-evil"},
        "protocolVersion": "v2",
        "storageUri": f"s3://{seaweedfs.config.bucket}/{key}",
    }
    r = api.post(ISVC_PATH, json=isvc("scaler-evil", {"model": model}))
    assert r.status_code == 201, r.text

    def failed(obj: dict[str, Any]) -> bool:
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c.get("reason") == "RevisionFailed" for c in conds)

    try:
        obj = wait_isvc(api, "scaler-evil", failed, timeout=60)
        message = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")["message"]
        assert "init step 'storage-initializer' exited with code 1" in message, message
        assert "cannot download the model" in message and "'..'" in message, message
        assert "THE SERVER STARTED" not in message
    finally:
        api.delete(f"{ISVC_PATH}/scaler-evil")


async def workload_logs(platform: Any, name: str) -> list[str]:
    return [line async for line in LocalRuntime(platform.state_dir).logs(NS, name)]


def test_cluster_serving_runtime_admin_writes_tenant_reads(trusted_header_platform: Any) -> None:
    """In trusted-header mode: a cluster admin creates, disables and deletes a
    ClusterServingRuntime; a person who is no admin reads it and may not change it."""

    def client(user: str) -> httpx.Client:
        return httpx.Client(
            base_url=trusted_header_platform.gateway_url,
            headers={"kubeflow-userid": user},
            timeout=30,
        )

    body = runtime("team-python", [{"name": "python", "autoSelect": True}], tag_server("c"))
    body["kind"] = "ClusterServingRuntime"
    with client(ADMIN_USER) as admin, client("bob@example.com") as bob:
        r = admin.post(CSR_PATH, json=body)
        assert r.status_code == 201, r.text
        assert "namespace" not in r.json()["metadata"]
        names = [o["metadata"]["name"] for o in bob.get(CSR_PATH).json()["items"]]
        assert "team-python" in names and "kserve-sklearnserver" in names
        assert bob.get(f"{CSR_PATH}/team-python").json()["spec"] == r.json()["spec"]
        merge = {"content-type": "application/merge-patch+json"}
        denied = bob.patch(
            f"{CSR_PATH}/team-python", json={"spec": {"disabled": True}}, headers=merge
        )
        assert denied.status_code == 403 and denied.json()["kind"] == "Status", denied.text
        assert bob.delete(f"{CSR_PATH}/team-python").status_code == 403
        r = admin.patch(f"{CSR_PATH}/team-python", json={"spec": {"disabled": True}}, headers=merge)
        assert r.status_code == 200 and r.json()["spec"]["disabled"] is True, r.text
        assert admin.delete(f"{CSR_PATH}/team-python").status_code == 200
        assert bob.get(f"{CSR_PATH}/team-python").status_code == 404
