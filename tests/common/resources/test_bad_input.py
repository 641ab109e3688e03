"""Bad input gets a 4xx Kubernetes Status with the field path, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests import specs
from tests.common.resources.conftest import NAMESPACE, RunningService

PVCS = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"
WIDGETS = f"/apis/test.shipyard.io/v1/namespaces/{NAMESPACE}/widgets"
STRICT = {"fieldValidation": "Strict"}


def good_pvc(name: str = "ok") -> dict:
    return specs.claim(name, "1Gi")


@pytest.fixture
async def http(widget_service: RunningService):
    async with httpx.AsyncClient(
        base_url=widget_service.url, headers=widget_service.headers()
    ) as c:
        yield c


def assert_status(response: httpx.Response, code: int, field: str | None = None) -> dict:
    assert response.status_code == code, response.text
    body = response.json()
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == code
    assert "Traceback" not in response.text
    if field is not None:
        fields = [c["field"] for c in body["details"]["causes"]]
        assert field in fields, fields
    return body


async def test_create_malformed_json(http: httpx.AsyncClient) -> None:
    r = await http.post(
        PVCS, content=b'{"metadata": {"name": ', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_status(r, 400)["message"]


async def test_create_malformed_yaml(http: httpx.AsyncClient) -> None:
    r = await http.post(
        PVCS, content=b"metadata: {name: [unclosed", headers={"content-type": "application/yaml"}
    )
    assert "not valid YAML" in assert_status(r, 400)["message"]


async def test_create_yaml_body_accepted(http: httpx.AsyncClient) -> None:
    body = b"apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: from-yaml}\nspec: {}\n"
    r = await http.post(PVCS, content=body, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text


async def test_create_unknown_spec_field(http: httpx.AsyncClient) -> None:
    """Refused with ``fieldValidation=Strict`` (the default, Warn, is in test_field_validation)."""
    body = good_pvc("unknown-field")
    body["spec"]["resources"]["requestz"] = {}
    r = await http.post(PVCS, json=body, params=STRICT)
    body = assert_status(r, 422, "spec.resources.requestz")
    assert "unknown field" in body["message"]


async def test_create_unknown_top_level_field(http: httpx.AsyncClient) -> None:
    body = good_pvc("unknown-top")
    body["specc"] = {}
    assert_status(await http.post(PVCS, json=body, params=STRICT), 422, "specc")


async def test_create_bad_name(http: httpx.AsyncClient) -> None:
    body = assert_status(await http.post(PVCS, json=good_pvc("Bad_Name")), 422, "metadata.name")
    assert "RFC 1123" in body["message"]


async def test_create_wrong_type(http: httpx.AsyncClient) -> None:
    body = good_pvc("wrong-type")
    body["spec"]["accessModes"] = "ReadWriteOnce"
    assert_status(await http.post(PVCS, json=body), 422, "spec.accessModes")


async def test_create_wrong_enum_value(http: httpx.AsyncClient) -> None:
    body = good_pvc("wrong-enum")
    body["spec"]["accessModes"] = ["ReadWriteSometimes"]
    assert_status(await http.post(PVCS, json=body), 422, "spec.accessModes[0]")


async def test_create_missing_required_nested_field(http: httpx.AsyncClient) -> None:
    body = {"metadata": {"name": "w"}, "spec": {"parts": [{"name": "a"}, {"count": 2}]}}
    assert_status(await http.post(WIDGETS, json=body), 422, "spec.parts[1].name")


async def test_create_bad_label(http: httpx.AsyncClient) -> None:
    body = good_pvc("bad-label")
    body["metadata"]["labels"] = {"app": "has spaces"}
    assert_status(await http.post(PVCS, json=body), 422, "metadata.labels.app")


async def test_create_oversized_body(http: httpx.AsyncClient) -> None:
    big = good_pvc("big")
    big["metadata"]["annotations"] = {"blob": "x" * (33 * 1024 * 1024)}
    assert_status(await http.post(PVCS, json=big), 413)


async def test_create_non_object_body(http: httpx.AsyncClient) -> None:
    assert_status(await http.post(PVCS, json=[1, 2]), 400)


async def test_create_namespace_mismatch(http: httpx.AsyncClient) -> None:
    body = good_pvc("mismatch")
    body["metadata"]["namespace"] = "other"
    assert_status(await http.post(PVCS, json=body), 400)


async def test_create_duplicate(http: httpx.AsyncClient) -> None:
    assert (await http.post(PVCS, json=good_pvc("dup"))).status_code == 201
    body = assert_status(await http.post(PVCS, json=good_pvc("dup")), 409)
    assert body["reason"] == "AlreadyExists"


async def test_list_bad_selector_and_paging_params(http: httpx.AsyncClient) -> None:
    assert_status(await http.get(PVCS, params={"labelSelector": "a in (b"}), 400)
    assert_status(await http.get(PVCS, params={"limit": "ten"}), 400)
    assert_status(await http.get(PVCS, params={"continue": "!!"}), 400)


async def test_patch_bad_content_type(http: httpx.AsyncClient) -> None:
    await http.post(PVCS, json=good_pvc("patchy"))
    r = await http.patch(
        f"{PVCS}/patchy", content=b"{}", headers={"content-type": "application/apply-patch+yaml"}
    )
    assert_status(r, 415)
    r = await http.patch(
        f"{PVCS}/patchy",
        json=[{"op": "replace", "path": "/nope/x", "value": 1}],
        headers={"content-type": "application/json-patch+json"},
    )
    assert_status(r, 422)


async def test_unknown_path_is_status_404(http: httpx.AsyncClient) -> None:
    assert_status(await http.get("/apis/kubeflow.org/v1/namespaces/x/nothings"), 404)
