"""The real ``kubectl`` (1.32, Debian's package) through the real gateway and platform, for
what needs the server's schemas and printing: ``get`` prints the server's Tables (the CLI's
columns), ``get -w`` prints rows as they change, ``explain`` reads ``/openapi/v3``, and
``apply`` validates fields on the server (``fieldValidation=Strict``, found through the
OpenAPI document) and converges when run again (a strategic merge patch for a core kind, a
merge patch for a custom one)."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
import yaml

from tests.gateway.kubectl import Kubectl, kubectl_binary, seed_pvc

NS = "kubeflow-user-example-com"
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io"


@pytest.fixture(scope="module")
def kubectl(platform: Any, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    home = tmp_path_factory.mktemp("kubectl-schema")
    return Kubectl(kubectl_binary(), home, server=platform.gateway_url, namespace=NS)


def shipyard(platform: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipyard.cli", "--server", platform.gateway_url, *args, "-n", NS],
        capture_output=True,
        text=True,
        timeout=60,
    )


def columns(line: str) -> list[str]:
    """A printed table line's cells (kubectl pads with at least three spaces)."""
    return re.split(r"\s{2,}", line.strip())


def wait_for(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def test_kubectl_get_prints_the_cli_columns(kubectl: Kubectl, platform: Any) -> None:
    name = f"schema-pvc-{uuid.uuid4().hex[:6]}"
    kubectl.run("apply", "-f", "-", stdin=seed_pvc(name))

    def bound() -> list[str] | None:
        out = kubectl.run("get", "pvc", name).stdout.splitlines()
        return out if len(out) == 2 and columns(out[1])[1] == "Bound" else None

    header, row = wait_for(bound)
    assert columns(header) == ["NAME", "STATUS", "CAPACITY", "ACCESS MODES", "AGE"]
    cells = columns(row)
    assert cells[0] == name and cells[2] == "128Mi" and cells[3] == "ReadWriteOnce"
    assert re.fullmatch(r"\d+[smhd]", cells[4]), cells
    # The same header as the shipyard CLI's own table.
    cli = shipyard(platform, "get", "pvc", name)
    assert cli.returncode == 0, cli.stderr
    assert columns(cli.stdout.splitlines()[0]) == columns(header)
    # All the claims, and the wide and custom outputs still read the objects.
    listed = kubectl.run("get", "persistentvolumeclaims").stdout
    assert any(columns(line)[0] == name for line in listed.splitlines()[1:]), listed
    assert kubectl.run("get", "pvc", name, "-o", "jsonpath={.spec.accessModes[0]}").stdout == (
        "ReadWriteOnce"
    )
    kubectl.run("delete", "pvc", name)


def test_kubectl_get_watch_prints_rows(kubectl: Kubectl, platform: Any) -> None:
    name = f"schema-watch-{uuid.uuid4().hex[:6]}"
    claims = f"{platform.gateway_url}/api/v1/namespaces/{NS}/persistentvolumeclaims"
    proc = subprocess.Popen(
        kubectl.argv("get", "pvc", "-w", "--request-timeout=60s"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=kubectl.env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def rows_until(done: Any) -> list[list[str]]:
        seen: list[list[str]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                cells = columns(lines.get(timeout=1))
            except queue.Empty:
                continue
            if cells and cells[0] == name:
                seen.append(cells)
                if done(cells):
                    return seen
        raise AssertionError(f"kubectl get -w printed no such row for {name}: {seen}")

    try:
        r = httpx.post(claims, json=yaml.safe_load(seed_pvc(name)), timeout=10)
        assert r.status_code == 201, r.text
        # Its row comes from the list or the watch, whichever saw it first; then Bound.
        bound = rows_until(lambda cells: cells[1] == "Bound")
        assert bound[-1][1:4] == ["Bound", "128Mi", "ReadWriteOnce"], bound
        # A change now can only reach kubectl as a watch event: one more row.
        r = httpx.patch(
            f"{claims}/{name}",
            json={"metadata": {"labels": {"watched": "yes"}}},
            headers={"content-type": "application/merge-patch+json"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        again = rows_until(lambda cells: True)
        assert again == [[name, "Bound", "128Mi", "ReadWriteOnce", again[0][4]]], again
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    httpx.delete(f"{claims}/{name}", timeout=10)


def test_openapi_v3_documents_through_the_gateway(platform: Any) -> None:
    root = httpx.get(f"{platform.gateway_url}/openapi/v3", timeout=30)
    assert root.status_code == 200, root.text
    paths = root.json()["paths"]
    for key in (
        "api/v1",
        "apis/kubeflow.org/v1",
        "apis/kubeflow.org/v1beta1",
        "apis/argoproj.io/v1alpha1",
        "apis/serving.kserve.io/v1beta1",
        "apis/serving.kubeflow.org/v1beta1",
    ):
        assert paths[key]["serverRelativeURL"].startswith(f"/openapi/v3/{key}?hash="), paths
    doc = httpx.get(platform.gateway_url + paths["api/v1"]["serverRelativeURL"], timeout=30)
    assert doc.headers["content-type"] == "application/json"
    assert "immutable" in doc.headers["cache-control"]
    schemas = doc.json()["components"]["schemas"]
    # core/v1 spans three services: PVCs (notebook), ConfigMaps (automl), Secrets (serving).
    for kind in ("PersistentVolumeClaim", "ConfigMap", "Secret", "ServiceAccount"):
        schema = schemas[f"io.k8s.api.core.v1.{kind}"]
        assert schema["x-kubernetes-group-version-kind"] == [
            {"group": "", "version": "v1", "kind": kind}
        ]
    patch = doc.json()["paths"]["/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"][
        "patch"
    ]
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    kubeflow = httpx.get(f"{platform.gateway_url}/openapi/v3/apis/kubeflow.org/v1", timeout=30)
    found = kubeflow.json()["components"]["schemas"]
    assert {"org.kubeflow.v1.Notebook", "org.kubeflow.v1.Profile"} <= set(found)
    nb_patch = kubeflow.json()["paths"][
        "/apis/kubeflow.org/v1/namespaces/{namespace}/notebooks/{name}"
    ]["patch"]
    assert "application/strategic-merge-patch+json" not in nb_patch["requestBody"]["content"]
    missing = httpx.get(f"{platform.gateway_url}/openapi/v3/apis/nothing.io/v1", timeout=30)
    assert missing.status_code == 404 and missing.json()["kind"] == "Status"


def test_kubectl_explain_reads_the_schemas(kubectl: Kubectl) -> None:
    pvc = kubectl.run("explain", "pvc").stdout
    assert "KIND:" in pvc and "PersistentVolumeClaim" in pvc
    for field in ("apiVersion", "kind", "metadata", "spec", "status"):
        assert re.search(rf"^\s+{field}\s+<", pvc, re.M), pvc
    spec = kubectl.run("explain", "notebooks.spec").stdout
    assert "template" in spec and "FIELDS:" in spec, spec
    modes = kubectl.run("explain", "pvc.spec.accessModes").stdout
    assert "[]string" in modes, modes
    experiment = kubectl.run("explain", "experiments.spec.objective").stdout
    assert "objectiveMetricName" in experiment, experiment


def test_kubectl_apply_validates_fields_on_the_server(kubectl: Kubectl) -> None:
    name = f"schema-strict-{uuid.uuid4().hex[:6]}"
    good = kubectl.run("apply", "-f", "-", stdin=seed_pvc(name))
    assert good.stdout.strip() == f"persistentvolumeclaim/{name} created"
    bad = yaml.safe_load(seed_pvc(f"{name}-bad"))
    bad["spec"]["storageClassNmae"] = "fast"
    refused = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(bad), ok=False)
    assert refused.returncode != 0
    assert "spec.storageClassNmae" in refused.stderr and "unknown field" in refused.stderr
    gone = kubectl.run("get", "pvc", f"{name}-bad", ok=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    # --validate=warn: the server drops the field and says so; kubectl prints its warning.
    warned = kubectl.run("apply", "--validate=warn", "-f", "-", stdin=yaml.safe_dump(bad))
    assert 'unknown field "spec.storageClassNmae"' in warned.stderr, warned.stderr
    kubectl.run("delete", "pvc", name, f"{name}-bad")


def apply_twice(kubectl: Kubectl, ref: str, first: str, changed: str) -> dict[str, Any]:
    """``kubectl apply`` of ``first`` (``ref``, as ``<resource>/<name>``, is created), of
    ``changed`` (configured) and of ``changed`` again (unchanged); the object after that."""
    for manifest, outcome in ((first, "created"), (changed, "configured"), (changed, "unchanged")):
        applied = kubectl.run("apply", "-f", "-", stdin=manifest)
        assert applied.stdout.strip() == f"{ref} {outcome}"
    obj: dict[str, Any] = json.loads(kubectl.run("get", *ref.split("/"), "-o", "json").stdout)
    return obj


def test_kubectl_apply_twice_converges_on_a_core_kind(kubectl: Kubectl) -> None:
    name = f"schema-smp-{uuid.uuid4().hex[:6]}"
    first, changed = seed_pvc(name, labels={"a": "1"}), seed_pvc(name, "256Mi", {"b": "2"})
    obj = apply_twice(kubectl, f"persistentvolumeclaim/{name}", first, changed)
    assert obj["metadata"]["labels"] == {"b": "2"}  # "a" was applied before: removed
    assert obj["spec"]["resources"]["requests"]["storage"] == "256Mi"
    assert "kubernetes.io/pvc-protection" in obj["metadata"]["finalizers"]
    kubectl.run("delete", "pvc", name)


def notebook_manifest(name: str, image: str, labels: dict[str, str]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Notebook",
            "metadata": {"name": name, "labels": labels},
            "spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}},
        }
    )


def test_kubectl_apply_twice_converges_on_a_custom_kind(kubectl: Kubectl) -> None:
    name = f"schema-nb-{uuid.uuid4().hex[:6]}"
    first = notebook_manifest(name, "jupyter:1", {"a": "1"})
    changed = notebook_manifest(name, "jupyter:2", {"b": "2"})
    try:
        obj = apply_twice(kubectl, f"notebook.kubeflow.org/{name}", first, changed)
        assert obj["metadata"]["labels"] == {"b": "2"}
        containers = obj["spec"]["template"]["spec"]["containers"]
        assert containers == [{"name": name, "image": "jupyter:2"}]
        # A typo in a custom kind's spec is refused by the server, with its path.
        bad = yaml.safe_load(changed)
        bad["spec"]["tempalte"] = {}
        refused = kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(bad), ok=False)
        assert refused.returncode != 0 and "spec.tempalte" in refused.stderr, refused.stderr
    finally:
        kubectl.run("delete", "notebook", name, "--wait=false")


def test_table_through_the_gateway_with_httpx(platform: Any) -> None:
    """The gateway's proxy passes ``Accept`` through: the service answers a Table."""
    r = httpx.get(
        f"{platform.gateway_url}/apis/kubeflow.org/v1beta1/namespaces/{NS}/experiments",
        headers={"Accept": TABLE_ACCEPT},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    names = [c["name"] for c in r.json()["columnDefinitions"]]
    assert names[:3] == ["Name", "STATUS", "TRIALS"] and names[-1] == "Age"


def test_openapi_v2_is_json_only(platform: Any) -> None:
    r = httpx.get(f"{platform.gateway_url}/openapi/v2", timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["swagger"] == "2.0"
    pvc = doc["definitions"]["io.k8s.api.core.v1.PersistentVolumeClaim"]
    assert pvc["x-kubernetes-group-version-kind"][0]["kind"] == "PersistentVolumeClaim"
    assert "#/components/" not in r.text
    item = doc["paths"]["/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows/{name}"]
    names = [p["name"] for p in item["patch"]["parameters"]]
    assert names == ["fieldValidation", "body"]
    assert item["parameters"][0] == {
        "name": "namespace",
        "in": "path",
        "required": True,
        "type": "string",
    }
    protobuf = {"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"}
    refused = httpx.get(f"{platform.gateway_url}/openapi/v2", headers=protobuf, timeout=30)
    assert refused.status_code == 406 and refused.json()["reason"] == "NotAcceptable"


def test_kubectl_get_profiles_prints_the_owner(kubectl: Kubectl) -> None:
    out = kubectl.run("get", "profiles").stdout.splitlines()
    assert columns(out[0]) == ["NAME", "OWNER", "AGE"], out
    rows = {columns(line)[0]: columns(line) for line in out[1:]}
    assert rows[NS][1] == "user@example.com", out


def test_kubectl_diff_and_server_dry_run_write_nothing(kubectl: Kubectl) -> None:
    name = f"schema-dry-{uuid.uuid4().hex[:6]}"
    kubectl.run("apply", "-f", "-", stdin=seed_pvc(name))
    changed = seed_pvc(name, "256Mi", {"b": "2"})
    diff = kubectl.run("diff", "-f", "-", stdin=changed, ok=False)
    assert diff.returncode == 1, (diff.stdout, diff.stderr)  # 1: differences found
    assert "+      storage: 256Mi" in diff.stdout and "-      storage: 128Mi" in diff.stdout
    dry = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=changed)
    assert dry.stdout.strip() == f"persistentvolumeclaim/{name} configured (server dry run)"
    obj = json.loads(kubectl.run("get", "pvc", name, "-o", "json").stdout)
    assert obj["spec"]["resources"]["requests"]["storage"] == "128Mi"
    assert "labels" not in obj["metadata"]
    same = kubectl.run("diff", "-f", "-", stdin=seed_pvc(name), ok=False)
    assert same.returncode == 0 and same.stdout == "", (same.stdout, same.stderr)
    kubectl.run("delete", "pvc", name, "--dry-run=server")
    assert kubectl.run("get", "pvc", name, "-o", "name").stdout.strip() == (
        f"persistentvolumeclaim/{name}"
    )
    kubectl.run("delete", "pvc", name)
    # Profiles (namespaces behind them) refuse a dry run rather than act on it.
    refused = kubectl.run("delete", "profile", "no-such-profile", "--dry-run=server", ok=False)
    assert refused.returncode != 0
    assert "dryRun is not supported for profiles" in refused.stderr, refused.stderr


async def test_openapi_needs_a_sign_in_in_oidc_mode(gateway: Any, oidc: Any) -> None:
    """OIDC mode: an anonymous caller gets a 401 Status (an API path: no login redirect); any
    signed-in user reads the documents. (This gateway's upstream is an echo service, whose
    answer is no document: it is left out, and the gateway's own Profile is served.)"""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as c:
        for path in ("/openapi/v3", "/openapi/v3/apis/kubeflow.org/v1", "/openapi/v2"):
            r = await c.get(path, headers={"Accept": "application/json"})
            assert r.status_code == 401 and r.json()["kind"] == "Status", (path, r.text)
        token = await oidc.id_token("second@example.com")
        auth = {"Authorization": f"Bearer {token}"}
        root = await c.get("/openapi/v3", headers=auth)
        assert root.status_code == 200, root.text
        assert list(root.json()["paths"]) == ["apis/kubeflow.org/v1"]
        doc = await c.get(
            root.json()["paths"]["apis/kubeflow.org/v1"]["serverRelativeURL"], headers=auth
        )
        profile = doc.json()["components"]["schemas"]["org.kubeflow.v1.Profile"]
        assert profile["x-kubernetes-group-version-kind"][0]["kind"] == "Profile"
        owner = doc.json()["components"]["schemas"]["org.kubeflow.v1.Profile.ProfileOwner"]
        assert owner["properties"]["name"]["description"] == "The owner's user name (email)."


def test_kubectl_apply_twice_converges_on_a_configmap(kubectl: Kubectl) -> None:
    name = f"schema-cm-{uuid.uuid4().hex[:6]}"

    def manifest(data: dict[str, str]) -> str:
        return json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        )

    first, changed = manifest({"a": "1", "b": "2"}), manifest({"b": "3", "c": "4"})
    obj = apply_twice(kubectl, f"configmap/{name}", first, changed)
    assert obj["data"] == {"b": "3", "c": "4"}  # "a" was applied before and is gone
    kubectl.run("delete", "configmap", name)


def test_alias_and_v2_documents_are_derived_from_v3() -> None:
    """Pure: the KFServing alias document and Swagger 2.0, from a service's v3 document."""
    from gateway.openapi import alias_document, swagger_v2
    from services.common import catalog
    from services.common.resources.kinds import ResourceKind
    from services.common.resources.openapi import document

    info = catalog.INFERENCE_SERVICE
    kserve = document([ResourceKind(**info.resource_kind_fields(), spec_model=None)])
    alias = alias_document(kserve, catalog.KFSERVING_INFERENCE_SERVICE)
    schemas = alias["components"]["schemas"]
    assert "org.kubeflow.serving.v1beta1.InferenceService" in schemas
    assert schemas["org.kubeflow.serving.v1beta1.InferenceService"][
        "x-kubernetes-group-version-kind"
    ] == [{"group": "serving.kubeflow.org", "version": "v1beta1", "kind": "InferenceService"}]
    assert all(p.startswith("/apis/serving.kubeflow.org/v1beta1/") for p in alias["paths"])
    assert "serving.kserve.io" not in json.dumps(alias)
    v2 = swagger_v2({"apis/serving.kserve.io/v1beta1": kserve})
    item = v2["paths"]["/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices"]
    body = next(p for p in item["post"]["parameters"] if p["in"] == "body")
    assert body["schema"] == {"$ref": "#/definitions/io.kserve.serving.v1beta1.InferenceService"}
    assert item["post"]["consumes"] == ["application/json"]
    assert item["get"]["responses"]["200"]["schema"] == {
        "$ref": "#/definitions/io.kserve.serving.v1beta1.InferenceServiceList"
    }


def test_proxy_forwards_accept_and_content_type() -> None:
    """Pure: what the proxy sends upstream keeps the Table ``Accept`` and the patch type."""
    from gateway.proxy import forward_headers

    sent = [
        (b"accept", TABLE_ACCEPT.encode()),
        (b"content-type", b"application/strategic-merge-patch+json"),
        (b"connection", b"keep-alive"),
    ]
    out = forward_headers(sent, "assertion", strip_authorization=False, client_host=None)
    assert (b"accept", TABLE_ACCEPT.encode()) in out
    assert (b"content-type", b"application/strategic-merge-patch+json") in out
    assert not any(name == b"connection" for name, _ in out)
