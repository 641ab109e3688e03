"""The real ``kubectl`` (Debian's package, installed by ``make test``) against the real platform
through the gateway: discovery, ``api-resources``, client-side ``apply`` (last-applied
annotation and strategic-merge patches), ``get -o json|yaml``, ``create`` with generateName,
``get -w``, ``edit`` and ``delete``; and discovery's shapes and access in OIDC mode."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.discovery import AGGREGATED_V2
from services.common import certs
from tests.gateway.kubectl import SEED, Kubectl, kubectl_binary, seed_pvc

NS = "kubeflow-user-example-com"
# kubectl's default --validate=strict: it finds fieldValidation in the gateway's /openapi/v3
# and lets the server check each manifest (gateway/openapi.py).
NO_VALIDATE: tuple[str, ...] = ()


@pytest.fixture(scope="module")
def kubectl(platform: Any, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    home = tmp_path_factory.mktemp("kubectl-home")
    config = home / "kubeconfig"
    written = subprocess.run(
        [sys.executable, "-m", "shipyard.cli", "--server", platform.gateway_url, "kubeconfig"],
        capture_output=True,
        text=True,
        env=dict(os.environ, HOME=str(home), KUBECONFIG=str(config)),
        timeout=60,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    context = yaml.safe_load(config.read_text())
    assert context["clusters"][0]["cluster"]["server"] == platform.gateway_url
    assert context["contexts"][0]["context"]["namespace"] == NS
    assert context["users"][0]["user"] == {}  # single-user mode: no credential
    return Kubectl(kubectl_binary(), home, kubeconfig=config)


def test_kubectl_version_and_api_resources(kubectl: Kubectl) -> None:
    version = json.loads(kubectl.run("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.32.0-shipyard"
    assert version["serverVersion"]["major"] == "1"
    listed = kubectl.run("api-resources").stdout
    rows = {line.split()[0]: line for line in listed.splitlines()[1:]}
    for plural in ("workflows", "experiments", "notebooks", "inferenceservices"):
        assert plural in rows, listed
    assert "PersistentVolumeClaim" in rows["persistentvolumeclaims"]
    assert " pvc " in rows["persistentvolumeclaims"]
    assert "argoproj.io/v1alpha1" in rows["workflows"] and " wf " in rows["workflows"]
    names = kubectl.run("api-resources", "-o", "name").stdout.split()
    assert "inferenceservices.serving.kserve.io" in names
    assert "inferenceservices.serving.kubeflow.org" in names  # KFServing's group, listed too
    assert "experiments.kubeflow.org" in names and "profiles.kubeflow.org" in names
    kubeflow = kubectl.run("api-resources", "--categories=kubeflow", "-o", "name").stdout.split()
    assert "notebooks.kubeflow.org" in kubeflow and "persistentvolumeclaims" not in kubeflow
    assert "poddefaults.kubeflow.org" in kubeflow
    cluster = kubectl.run("api-resources", "--namespaced=false", "-o", "name").stdout.split()
    assert sorted(cluster) == [
        "clusterservingruntimes.serving.kserve.io",
        "profiles.kubeflow.org",
    ]
    assert "pytorchjobs.kubeflow.org" in names and "inferencegraphs.serving.kserve.io" in names


def test_kubectl_apply_get_edit_delete_pvc(kubectl: Kubectl, tmp_path: Path) -> None:
    name = f"kubectl-pv-{uuid.uuid4().hex[:6]}"
    created = kubectl.run("apply", *NO_VALIDATE, "-f", "-", stdin=seed_pvc(name))
    assert created.stdout.strip() == f"persistentvolumeclaim/{name} created"

    obj = json.loads(kubectl.run("get", "pvc", name, "-o", "json").stdout)
    assert obj["kind"] == "PersistentVolumeClaim" and obj["metadata"]["namespace"] == NS
    assert obj["spec"]["resources"]["requests"]["storage"] == "128Mi"
    applied = json.loads(
        obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    )
    assert applied["spec"]["resources"]["requests"]["storage"] == "128Mi"

    # Re-apply, changed: kubectl sends a strategic-merge patch (PVC is a core kind).
    changed = seed_pvc(name, "256Mi", {"team": "kubectl"})
    configured = kubectl.run("apply", *NO_VALIDATE, "-f", "-", stdin=changed)
    assert configured.stdout.strip() == f"persistentvolumeclaim/{name} configured"
    again = kubectl.run("apply", *NO_VALIDATE, "-f", "-", stdin=changed)
    assert again.stdout.strip() == f"persistentvolumeclaim/{name} unchanged"

    as_yaml = yaml.safe_load(kubectl.run("get", "pvc", name, "-o", "yaml").stdout)
    assert as_yaml["spec"]["resources"]["requests"]["storage"] == "256Mi"
    assert as_yaml["metadata"]["labels"] == {"team": "kubectl"}
    assert as_yaml["metadata"]["uid"] == obj["metadata"]["uid"]
    assert "kubernetes.io/pvc-protection" in as_yaml["metadata"]["finalizers"]

    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i "s/storage: 256Mi/storage: 512Mi/" "$1"\n')
    editor.chmod(0o755)
    edited = kubectl.run("edit", *NO_VALIDATE, "pvc", name, env={"KUBE_EDITOR": str(editor)})
    assert edited.stdout.strip() == f"persistentvolumeclaim/{name} edited"
    storage = kubectl.run(
        "get", "pvc", name, "-o", "jsonpath={.spec.resources.requests.storage}"
    ).stdout
    assert storage == "512Mi"

    table = kubectl.run("get", "pvc").stdout
    assert name in table and table.splitlines()[0].startswith("NAME")

    # delete waits (kubectl's default --wait) until the finalizer is gone and the object with it.
    deleted = kubectl.run("delete", "pvc", name)
    assert deleted.stdout.strip() == f'persistentvolumeclaim "{name}" deleted'
    gone = kubectl.run("get", "pvc", name, ok=False)
    assert gone.returncode == 1 and "NotFound" in gone.stderr, gone.stderr


def test_kubectl_create_seed_workflow_with_generate_name(kubectl: Kubectl) -> None:
    created = kubectl.run("create", *NO_VALIDATE, "-f", str(SEED / "workflow.yaml"), "-o", "name")
    ref = created.stdout.strip()
    assert ref.startswith("workflow.argoproj.io/kubeflow-test-"), ref
    name = ref.split("/", 1)[1]
    assert len(name) == len("kubeflow-test-") + 5  # generateName's random suffix
    try:
        listed = kubectl.run("get", "workflows,experiments,notebooks,inferenceservices").stdout
        assert f"workflow.argoproj.io/{name}" in listed, listed
        everything = kubectl.run("get", "all", "-o", "name").stdout.split()  # category "all"
        assert f"workflow.argoproj.io/{name}" in everything, everything
        by_name = kubectl.run("get", "wf", name, "-o", "json").stdout
        assert json.loads(by_name)["metadata"]["generateName"] == "kubeflow-test-"
    finally:
        kubectl.run("delete", "workflow", name, "--wait=false")


def _lines(stream: Any, out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


def _wait_for_line(lines: queue.Queue[str], seen: list[str], name: str) -> None:
    deadline = time.monotonic() + 30
    while not any(line.startswith(name + " ") for line in seen):
        assert time.monotonic() < deadline, (name, seen)
        try:
            seen.append(lines.get(timeout=0.5))
        except queue.Empty:
            continue


def test_kubectl_get_watch_sees_new_object(kubectl: Kubectl) -> None:
    first, second = (f"watched-pv-{uuid.uuid4().hex[:6]}" for _ in range(2))
    proc = subprocess.Popen(
        kubectl.argv("get", "pvc", "-w"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=kubectl.env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        # kubectl lists, then watches: ``first`` shows up whichever it comes through; once it
        # has, the watch is open, so ``second`` can only come as a watch event.
        kubectl.run("create", *NO_VALIDATE, "-f", "-", stdin=seed_pvc(first))
        _wait_for_line(lines, seen, first)
        kubectl.run("create", *NO_VALIDATE, "-f", "-", stdin=seed_pvc(second))
        _wait_for_line(lines, seen, second)
        assert proc.poll() is None  # still watching
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        kubectl.run("delete", "pvc", first, second, "--ignore-not-found")


# ---- discovery documents (httpx), single-user and OIDC mode -------------------------------


def test_discovery_documents(platform: Any) -> None:
    with httpx.Client(base_url=platform.gateway_url, timeout=10) as c:
        core = c.get("/api/v1").json()
        assert core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
        by_name = {r["name"]: r for r in core["resources"]}
        pvc = by_name["persistentvolumeclaims"]
        assert pvc["kind"] == "PersistentVolumeClaim" and pvc["namespaced"] is True
        assert pvc["shortNames"] == ["pvc"] and pvc["singularName"] == "persistentvolumeclaim"
        assert set(pvc["verbs"]) >= {"create", "delete", "get", "list", "patch", "update", "watch"}
        assert by_name["persistentvolumeclaims/status"]["verbs"] == ["get", "patch", "update"]
        assert by_name["serviceaccounts/token"]["kind"] == "TokenRequest"

        groups = c.get("/apis").json()
        assert groups["kind"] == "APIGroupList"
        named = {g["name"]: g for g in groups["groups"]}
        assert named["kubeflow.org"]["preferredVersion"] == {
            "groupVersion": "kubeflow.org/v1",
            "version": "v1",
        }
        versions = [v["version"] for v in named["kubeflow.org"]["versions"]]
        assert versions == ["v1", "v1beta1", "v1alpha1"]  # PodDefault's, last
        assert set(named) >= {"argoproj.io", "serving.kserve.io", "serving.kubeflow.org"}

        group = c.get("/apis/serving.kubeflow.org").json()
        assert group["kind"] == "APIGroup" and group["name"] == "serving.kubeflow.org"
        katib = c.get("/apis/kubeflow.org/v1beta1").json()
        exp = next(r for r in katib["resources"] if r["name"] == "experiments")
        assert exp["categories"] == ["all", "kubeflow"] and "exp" in exp["shortNames"]

        aggregated = c.get("/apis", headers={"Accept": AGGREGATED_V2 + ",application/json"})
        assert aggregated.headers["content-type"].startswith(
            "application/json;g=apidiscovery.k8s.io;v=v2"
        )
        items = {i["metadata"]["name"]: i for i in aggregated.json()["items"]}
        isvc = items["serving.kserve.io"]["versions"][0]["resources"][0]
        assert isvc["resource"] == "inferenceservices" and isvc["scope"] == "Namespaced"
        assert isvc["subresources"][0]["subresource"] == "status"

        missing = c.get("/apis/apps.example.io/v1")
        assert missing.status_code == 404 and missing.json()["kind"] == "Status"
        assert "apps.example.io/v1" in missing.json()["message"]
        # Below a group/version, and KFP's v2beta1 paths, still reach their services.
        pvcs = c.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims")
        assert pvcs.status_code == 200 and pvcs.json()["kind"] == "PersistentVolumeClaimList"
        kfp = c.get("/apis/v2beta1/healthz")
        assert kfp.status_code == 200, kfp.text


async def test_discovery_needs_sign_in_and_no_namespace(gateway: Any, oidc: Any) -> None:
    """OIDC mode: anonymous callers get 401; any signed-in user reads the same documents, which
    name kinds and never an object (second@example.com owns no namespace the others see)."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as c:
        for path in ("/version", "/api", "/api/v1", "/apis", "/apis/kubeflow.org/v1"):
            r = await c.get(path, headers={"Accept": "application/json"})
            assert r.status_code == 401 and r.json()["kind"] == "Status", (path, r.text)
        answers = []
        for user in ("user@example.com", "second@example.com"):
            token = await oidc.id_token(user)
            r = await c.get("/apis/kubeflow.org/v1", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            answers.append(r.json())
        assert answers[0] == answers[1]
        assert {r["name"] for r in answers[0]["resources"]} == {
            "notebooks",
            "notebooks/status",
            "profiles",
            "pytorchjobs",
            "pytorchjobs/status",
        }
        assert "kubeflow-user-example-com" not in json.dumps(answers[0])


def test_kubectl_over_the_platforms_tls_listener(platform: Any, kubectl: Kubectl) -> None:
    """``shipyard kubeconfig --api-server https://... --certificate-authority ...``: kubectl
    verifies the gateway's TLS listener with the platform's CA (docs/kubectl.md)."""
    config = kubectl.kubeconfig.with_name("kubeconfig-tls")
    ca = certs.ca_paths(platform.state_dir / "keys").cert
    api = f"https://127.0.0.1:{platform.tls_port}"
    argv = [sys.executable, "-m", "shipyard.cli", "--server", platform.gateway_url, "kubeconfig"]
    argv += ["--kubeconfig", str(config), "--api-server", api, "--certificate-authority", str(ca)]
    # Token mode: SHIPYARD_TOKEN goes into the context (over https only would kubectl send it;
    # with no credential at all it would prompt for a password). Single-user mode ignores it.
    env = dict(kubectl.env, SHIPYARD_TOKEN="a-bearer-token")
    verified = subprocess.run(
        [*argv, "--tls-server-name", "kubernetes.default.svc"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    written = yaml.safe_load(config.read_text())
    assert written["users"][0]["user"] == {"token": "a-bearer-token"}
    cluster = written["clusters"][0]["cluster"]
    assert cluster["server"] == api and cluster["tls-server-name"] == "kubernetes.default.svc"
    listed = kubectl.run("--kubeconfig", str(config), "get", "pvc", "-o", "name")
    assert listed.stderr == "" or "No resources" in listed.stderr
    version = json.loads(kubectl.run("--kubeconfig", str(config), "version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.32.0-shipyard"

    # The certificate names the in-cluster API, not 127.0.0.1: without the name, no trust.
    unnamed = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert unnamed.returncode == 0, unnamed.stderr
    refused = kubectl.run("--kubeconfig", str(config), "get", "pvc", ok=False)
    assert refused.returncode != 0 and "x509" in refused.stderr, refused.stderr
