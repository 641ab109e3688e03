"""KFServing's group ``serving.kubeflow.org/v1beta1``: the same InferenceServices as KServe's.

Driven with the ``kubernetes`` client's CustomObjectsApi through the real gateway, as a
notebook user with KFServing-era code would: an object created through either group is
read, listed, patched, watched and deleted through both, each reader seeing its own group.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from services.common.settings import SINGLE_USER_NAMESPACE as NS

from .conftest import REVISION_MODEL, predict, ready

KFSERVING = ("serving.kubeflow.org", "v1beta1")
KSERVE = ("serving.kserve.io", "v1beta1")
PLURAL = "inferenceservices"


@pytest.fixture(scope="module")
def custom(platform: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(
        client.ApiClient(client.Configuration(host=platform.gateway_url))
    )


@pytest.fixture(scope="module")
def model_claim(claim: Any) -> str:
    """A claim holding a ``python`` model that answers with its revision; its pvc:// URI."""
    data: Path = claim("kfs-models")
    (data / "m").mkdir(exist_ok=True)
    (data / "m" / "model.py").write_text(REVISION_MODEL)
    return "pvc://kfs-models/m"


def body(name: str, api_version: str, uri: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "python"}, "storageUri": uri}}},
    }


def get(custom: client.CustomObjectsApi, group: tuple[str, str], name: str) -> dict[str, Any]:
    return dict(custom.get_namespaced_custom_object(*group, NS, PLURAL, name))


def wait_until(
    custom: client.CustomObjectsApi, group: tuple[str, str], name: str, until: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = get(custom, group, name)
        if until(obj):
            return obj
        time.sleep(0.1)
    raise AssertionError(f"{name} did not get there: {obj.get('status')}")


def wait_gone(custom: client.CustomObjectsApi, group: tuple[str, str], name: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            get(custom, group, name)
        except ApiException as exc:
            assert exc.status == 404, exc.body
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} still exists")


def test_create_through_kfserving_group_served_through_both(
    custom: client.CustomObjectsApi, model_claim: str, api: httpx.Client
) -> None:
    created = custom.create_namespaced_custom_object(
        *KFSERVING, NS, PLURAL, body("kfs-a", "serving.kubeflow.org/v1beta1", model_claim)
    )
    assert created["apiVersion"] == "serving.kubeflow.org/v1beta1"
    assert created["kind"] == "InferenceService"
    assert created["spec"]["predictor"]["minReplicas"] == 1  # KServe's defaulting applied

    alias = wait_until(custom, KFSERVING, "kfs-a", ready)
    kserve = get(custom, KSERVE, "kfs-a")
    assert alias["apiVersion"] == "serving.kubeflow.org/v1beta1"
    assert kserve["apiVersion"] == "serving.kserve.io/v1beta1"
    assert alias["metadata"]["uid"] == kserve["metadata"]["uid"] == created["metadata"]["uid"]
    assert alias["status"]["components"]["predictor"]["latestReadyRevision"] == (
        "kfs-a-predictor-00001"
    )
    # The same object serves: the data plane answers with the revision that runs it.
    got = predict(api, f"/serving/{NS}/kfs-a/v1/models/kfs-a:predict", {"instances": [1, 2]})
    assert got == {"predictions": ["kfs-a-predictor-00001"] * 2}

    listed = custom.list_namespaced_custom_object(*KFSERVING, NS, PLURAL)
    assert listed["apiVersion"] == "serving.kubeflow.org/v1beta1"
    assert listed["kind"] == "InferenceServiceList"
    mine = [i for i in listed["items"] if i["metadata"]["name"] == "kfs-a"]
    assert [i["apiVersion"] for i in mine] == ["serving.kubeflow.org/v1beta1"]

    patched = custom.patch_namespaced_custom_object(
        *KFSERVING, NS, PLURAL, "kfs-a", {"metadata": {"labels": {"team": "kfserving"}}}
    )
    assert patched["apiVersion"] == "serving.kubeflow.org/v1beta1"
    assert get(custom, KSERVE, "kfs-a")["metadata"]["labels"] == {"team": "kfserving"}

    custom.delete_namespaced_custom_object(*KFSERVING, NS, PLURAL, "kfs-a")
    wait_gone(custom, KSERVE, "kfs-a")
    wait_gone(custom, KFSERVING, "kfs-a")


def test_watch_through_kfserving_group_sees_kserve_writes(
    custom: client.CustomObjectsApi, model_claim: str
) -> None:
    start = custom.list_namespaced_custom_object(*KFSERVING, NS, PLURAL)
    events: list[tuple[str, str, str]] = []
    seen_deleted = threading.Event()

    def run_watch() -> None:
        for event in watch.Watch().stream(
            custom.list_namespaced_custom_object,
            *KFSERVING,
            NS,
            PLURAL,
            resource_version=start["metadata"]["resourceVersion"],
            timeout_seconds=40,
        ):
            obj = event["object"]
            if obj["metadata"]["name"] != "kfs-b":
                continue
            events.append((event["type"], obj["apiVersion"], obj["metadata"]["name"]))
            if event["type"] == "DELETED":
                seen_deleted.set()
                return

    watcher = threading.Thread(target=run_watch, daemon=True)
    watcher.start()
    created = custom.create_namespaced_custom_object(
        *KSERVE, NS, PLURAL, body("kfs-b", "serving.kserve.io/v1beta1", model_claim)
    )
    assert created["apiVersion"] == "serving.kserve.io/v1beta1"
    wait_until(custom, KFSERVING, "kfs-b", ready)
    custom.delete_namespaced_custom_object(*KSERVE, NS, PLURAL, "kfs-b")
    assert seen_deleted.wait(30), events
    watcher.join(5)
    assert events[0] == ("ADDED", "serving.kubeflow.org/v1beta1", "kfs-b")
    assert events[-1] == ("DELETED", "serving.kubeflow.org/v1beta1", "kfs-b")
    assert {e[1] for e in events} == {"serving.kubeflow.org/v1beta1"}


def test_replace_through_kfserving_group_and_yaml_create(
    custom: client.CustomObjectsApi, model_claim: str, api: httpx.Client
) -> None:
    """PUT with the alias's apiVersion (optimistic concurrency as ever), and a YAML body."""
    path = f"/apis/serving.kubeflow.org/v1beta1/namespaces/{NS}/{PLURAL}"
    manifest = (
        "apiVersion: serving.kubeflow.org/v1beta1\n"
        "kind: InferenceService\n"
        "metadata: {name: kfs-c}\n"
        "spec:\n  predictor:\n    minReplicas: 0\n"
        f"    model: {{modelFormat: {{name: python}}, storageUri: {model_claim}}}\n"
    )
    r = api.post(path, content=manifest, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    assert r.json()["apiVersion"] == "serving.kubeflow.org/v1beta1"
    replaced, obj = replace_retrying(custom, "kfs-c", {"note": "replaced"})
    assert replaced["apiVersion"] == "serving.kubeflow.org/v1beta1"
    assert obj["apiVersion"] == "serving.kubeflow.org/v1beta1"  # what was sent back
    assert get(custom, KSERVE, "kfs-c")["metadata"]["annotations"] == {"note": "replaced"}
    with pytest.raises(ApiException) as stale:  # the old resourceVersion: a conflict
        custom.replace_namespaced_custom_object(*KFSERVING, NS, PLURAL, "kfs-c", obj)
    assert stale.value.status == 409
    assert json.loads(stale.value.body)["reason"] == "Conflict"
    custom.delete_namespaced_custom_object(*KFSERVING, NS, PLURAL, "kfs-c")
    wait_gone(custom, KFSERVING, "kfs-c")


def replace_retrying(
    custom: client.CustomObjectsApi, name: str, annotations: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Get, change and PUT through the alias, again on 409 (the controller writes status
    meanwhile, as client-go's RetryOnConflict expects): (the answer, the object sent)."""
    for _ in range(20):
        obj = get(custom, KFSERVING, name)
        obj["metadata"]["annotations"] = annotations
        try:
            return custom.replace_namespaced_custom_object(*KFSERVING, NS, PLURAL, name, obj), obj
        except ApiException as exc:
            assert exc.status == 409, exc.body
    raise AssertionError(f"{name}: every replace conflicted")


def test_create_through_kfserving_group_bad_input_4xx(
    custom: client.CustomObjectsApi, model_claim: str, api: httpx.Client
) -> None:
    path = f"/apis/serving.kubeflow.org/v1beta1/namespaces/{NS}/{PLURAL}"
    wrong = body("kfs-d", "serving.kubeflow.org/v1alpha2", model_claim)
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(*KFSERVING, NS, PLURAL, wrong)
    status = json.loads(refused.value.body)
    assert refused.value.status == 422, refused.value.body
    assert status["kind"] == "Status" and status["reason"] == "Invalid"
    assert "apiVersion" in status["message"] and "v1alpha2" in status["message"]

    bad_spec = body("kfs-d", "serving.kubeflow.org/v1beta1", model_claim)
    bad_spec["spec"]["predictor"]["model"]["modelFormat"] = {"name": "tensorflow"}
    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object(*KFSERVING, NS, PLURAL, bad_spec)
    assert invalid.value.status == 422
    assert "tensorflow" in json.loads(invalid.value.body)["message"]

    r = api.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["kind"] == "Status" and "not valid JSON" in r.json()["message"]

    with pytest.raises(ApiException) as missing:
        get(custom, KFSERVING, "no-such-isvc")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["reason"] == "NotFound"
