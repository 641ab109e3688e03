"""What kubectl needs from the resource API, over HTTP against a real service: Tables
(``Accept: application/json;as=Table``), ``fieldValidation`` and the patch content types."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.common.resources.conftest import NAMESPACE, RunningService

PVCS = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"
WIDGETS = f"/apis/test.shipyard.io/v1/namespaces/{NAMESPACE}/widgets"
# What kubectl 1.32 sends for `kubectl get`.
KUBECTL_TABLE = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
SMP = "application/strategic-merge-patch+json"


@pytest.fixture
async def http(widget_service: RunningService):
    async with httpx.AsyncClient(
        base_url=widget_service.url, headers=widget_service.headers(), timeout=20
    ) as c:
        yield c


def pvc(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"suite": "tables"}},
        "spec": {"accessModes": ["ReadWriteOnce"], **spec},
    }


async def created(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await http.post(path, json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


# ---- Tables ------------------------------------------------------------------------------


async def test_list_as_table_has_the_cli_columns(http: httpx.AsyncClient) -> None:
    await created(http, PVCS, pvc("table-a"))
    await created(http, PVCS, pvc("table-b", accessModes=["ReadWriteOnce", "ReadOnlyMany"]))
    r = await http.get(
        PVCS, params={"labelSelector": "suite=tables"}, headers={"Accept": KUBECTL_TABLE}
    )
    assert r.status_code == 200, r.text
    table = r.json()
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "STATUS", "CAPACITY", "ACCESS MODES", "Age"]
    assert int(table["metadata"]["resourceVersion"]) > 0
    rows = {row["cells"][0]: row for row in table["rows"]}
    assert {"table-a", "table-b"} <= set(rows)
    cells = rows["table-b"]["cells"]
    assert cells[3] == "ReadWriteOnce,ReadOnlyMany"
    assert cells[2] == "<none>"  # no capacity until bound (no controller here)
    assert cells[4].endswith("s") or cells[4].endswith("m")
    partial = rows["table-b"]["object"]
    assert partial["kind"] == "PartialObjectMetadata"
    assert partial["apiVersion"] == "meta.k8s.io/v1"
    assert partial["metadata"]["name"] == "table-b" and "spec" not in partial


async def test_table_include_object_and_v1beta1(http: httpx.AsyncClient) -> None:
    await created(http, PVCS, pvc("table-full"))
    accept = "application/json;as=Table;v=v1beta1;g=meta.k8s.io"
    r = await http.get(
        f"{PVCS}/table-full", params={"includeObject": "Object"}, headers={"Accept": accept}
    )
    assert r.status_code == 200, r.text
    table = r.json()
    assert table["apiVersion"] == "meta.k8s.io/v1beta1"
    [row] = table["rows"]
    assert row["object"]["kind"] == "PersistentVolumeClaim"
    assert row["object"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    r = await http.get(
        f"{PVCS}/table-full", params={"includeObject": "None"}, headers={"Accept": accept}
    )
    assert "object" not in r.json()["rows"][0]


async def test_table_pages_carry_continue(http: httpx.AsyncClient) -> None:
    for name in ("page-a", "page-b", "page-c"):
        await created(http, PVCS, pvc(name))
    r = await http.get(PVCS, params={"limit": 2}, headers={"Accept": KUBECTL_TABLE})
    first = r.json()
    assert len(first["rows"]) == 2 and first["metadata"]["continue"]
    r = await http.get(
        PVCS,
        params={"limit": 2, "continue": first["metadata"]["continue"]},
        headers={"Accept": KUBECTL_TABLE},
    )
    assert r.json()["rows"][0]["cells"][0] > first["rows"][-1]["cells"][0]


async def test_plain_json_and_unsupported_table(http: httpx.AsyncClient) -> None:
    r = await http.get(PVCS, headers={"Accept": "application/json"})
    assert r.json()["kind"] == "PersistentVolumeClaimList"
    r = await http.get(PVCS, headers={"Accept": "application/json;as=Table;v=v2;g=meta.k8s.io"})
    assert r.status_code == 406, r.text
    assert r.json()["reason"] == "NotAcceptable" and "as=Table;v=v1" in r.json()["message"]
    r = await http.get(PVCS, params={"includeObject": "All"}, headers={"Accept": KUBECTL_TABLE})
    assert r.status_code == 400 and "includeObject" in r.json()["message"]


async def test_watch_as_table_sends_one_row_per_event(http: httpx.AsyncClient) -> None:
    listed = (await http.get(PVCS)).json()["metadata"]["resourceVersion"]
    params = {"watch": "1", "resourceVersion": listed, "timeoutSeconds": "10"}
    async with http.stream("GET", PVCS, params=params, headers={"Accept": KUBECTL_TABLE}) as r:
        assert r.status_code == 200
        await created(http, PVCS, pvc("watched"))
        async for line in r.aiter_lines():
            if not line.strip():
                continue
            event = json.loads(line)
            table = event["object"]
            assert event["type"] == "ADDED", event
            assert table["kind"] == "Table" and len(table["rows"]) == 1
            assert table["rows"][0]["cells"][0] == "watched"
            assert table["columnDefinitions"][0]["name"] == "Name"
            break
        else:
            raise AssertionError("the watch ended without an event")


# ---- fieldValidation ---------------------------------------------------------------------


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "test.shipyard.io/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"color": "green", **spec},
    }


async def test_unknown_field_warn_by_default(http: httpx.AsyncClient) -> None:
    r = await http.post(WIDGETS, json=widget("fv-warn", colour="blue", size=2))
    assert r.status_code == 201, r.text
    assert r.json()["spec"] == {"color": "green", "size": 2, "parts": []}
    assert r.headers.get_list("warning") == ['299 - "unknown field \\"spec.colour\\""']
    stored = (await http.get(f"{WIDGETS}/fv-warn")).json()
    assert "colour" not in stored["spec"]


async def test_unknown_fields_ignore_drops_silently(http: httpx.AsyncClient) -> None:
    body = widget("fv-ignore", parts=[{"name": "p", "weight": 3}])
    body["extra"] = 1
    r = await http.post(WIDGETS, json=body, params={"fieldValidation": "Ignore"})
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["parts"] == [{"name": "p", "count": 1}]
    assert "extra" not in r.json()
    assert "warning" not in r.headers


async def test_unknown_field_strict_is_refused_with_its_path(http: httpx.AsyncClient) -> None:
    body = widget("fv-strict", parts=[{"name": "p", "weight": 3}])
    r = await http.post(WIDGETS, json=body, params={"fieldValidation": "Strict"})
    assert r.status_code == 422, r.text
    status = r.json()
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.parts[0].weight"]
    assert "spec.parts[0].weight: unknown field" in status["message"]
    assert (await http.get(f"{WIDGETS}/fv-strict")).status_code == 404


async def test_duplicate_fields(http: httpx.AsyncClient) -> None:
    raw = b'{"apiVersion":"test.shipyard.io/v1","kind":"Widget","metadata":{"name":"fv-dup"},'
    raw += b'"spec":{"size":2,"size":3}}'
    headers = {"content-type": "application/json"}
    r = await http.post(WIDGETS, content=raw, headers=headers, params={"fieldValidation": "Strict"})
    assert r.status_code == 422, r.text
    assert r.json()["details"]["causes"][0] == {
        "reason": "FieldValueDuplicate",
        "message": "duplicate field",
        "field": "spec.size",
    }
    r = await http.post(WIDGETS, content=raw, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["size"] == 3  # the last value wins, as in Go
    assert r.headers["warning"] == '299 - "duplicate field \\"spec.size\\""'


async def test_bad_directive_is_400(http: httpx.AsyncClient) -> None:
    r = await http.post(WIDGETS, json=widget("fv-bad"), params={"fieldValidation": "strict"})
    assert r.status_code == 400, r.text
    assert "fieldValidation must be one of" in r.json()["message"]


async def test_update_and_patch_follow_the_directive(http: httpx.AsyncClient) -> None:
    current = await created(http, WIDGETS, widget("fv-write"))
    current["spec"]["sise"] = 4
    r = await http.put(f"{WIDGETS}/fv-write", json=current)
    assert r.status_code == 200, r.text
    assert "sise" not in r.json()["spec"] and "spec.sise" in r.headers["warning"]
    merge = {"content-type": "application/merge-patch+json"}
    patch = {"spec": {"size": 5, "colr": "red"}}
    r = await http.patch(
        f"{WIDGETS}/fv-write", json=patch, headers=merge, params={"fieldValidation": "Strict"}
    )
    assert r.status_code == 422 and "spec.colr" in r.text
    r = await http.patch(f"{WIDGETS}/fv-write", content=json.dumps(patch), headers=merge)
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["size"] == 5 and "colr" not in r.json()["spec"]
    assert r.headers.get_list("warning") == ['299 - "unknown field \\"spec.colr\\""']
    ops = [{"op": "add", "path": "/spec/shade", "value": "dark"}]
    r = await http.patch(
        f"{WIDGETS}/fv-write",
        json=ops,
        headers={"content-type": "application/json-patch+json"},
        params={"fieldValidation": "Ignore"},
    )
    assert r.status_code == 200, r.text
    assert "shade" not in r.json()["spec"] and "warning" not in r.headers


# ---- patch content types -----------------------------------------------------------------


async def test_strategic_merge_patch_on_a_core_kind(http: httpx.AsyncClient) -> None:
    await created(http, PVCS, pvc("smp-claim"))
    patch = {
        "metadata": {
            "labels": {"tier": "gold", "suite": None},
            "finalizers": ["example.com/keep"],
        },
        "spec": {"accessModes": ["ReadWriteMany"]},
    }
    r = await http.patch(
        f"{PVCS}/smp-claim", content=json.dumps(patch), headers={"content-type": SMP}
    )
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]
    assert meta["labels"] == {"tier": "gold"}
    # finalizers merge as a set (patchStrategy: merge), the pvc-protection one stays
    assert meta["finalizers"] == ["kubernetes.io/pvc-protection", "example.com/keep"]
    assert r.json()["spec"]["accessModes"] == ["ReadWriteMany"]  # no strategy: replaced
    drop = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/keep"]}}
    r = await http.patch(f"{PVCS}/smp-claim", json=drop, headers={"content-type": SMP})
    assert r.json()["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]


async def test_strategic_merge_patch_on_a_custom_kind_is_415(http: httpx.AsyncClient) -> None:
    await created(http, WIDGETS, widget("smp-widget"))
    r = await http.patch(
        f"{WIDGETS}/smp-widget", content=b'{"spec":{"size":2}}', headers={"content-type": SMP}
    )
    assert r.status_code == 415, r.text
    status = r.json()
    assert status["reason"] == "UnsupportedMediaType"
    assert "application/merge-patch+json" in status["message"]
    assert "strategic" in status["message"]
    r = await http.patch(
        f"{WIDGETS}/smp-widget",
        content=b"spec: {size: 2}",
        headers={"content-type": "application/apply-patch+yaml"},
    )
    assert r.status_code == 415 and "server-side apply" in r.json()["message"]


async def test_server_dry_run_writes_nothing(http: httpx.AsyncClient) -> None:
    dry = {"dryRun": "All"}
    r = await http.post(WIDGETS, json=widget("dry", colour="x"), params=dry)
    assert r.status_code == 201, r.text
    assert r.json()["metadata"]["name"] == "dry" and r.json()["metadata"]["uid"]
    assert "spec.colour" in r.headers["warning"]  # validated as the write would be
    assert (await http.get(f"{WIDGETS}/dry")).status_code == 404
    r = await http.post(
        WIDGETS, json=widget("dry", colour="x"), params={**dry, "fieldValidation": "Strict"}
    )
    assert r.status_code == 422 and "spec.colour" in r.text
    before = await created(http, WIDGETS, widget("dry"))
    merge = {"content-type": "application/merge-patch+json"}
    r = await http.patch(f"{WIDGETS}/dry", json={"spec": {"size": 9}}, headers=merge, params=dry)
    assert r.status_code == 200 and r.json()["spec"]["size"] == 9
    r = await http.put(f"{WIDGETS}/dry", json={**before, "spec": {"size": 8}}, params=dry)
    assert r.status_code == 200 and r.json()["spec"]["size"] == 8
    r = await http.delete(f"{WIDGETS}/dry", params=dry)
    assert r.status_code == 200, r.text
    # client-go sends a DELETE's dryRun in its DeleteOptions body.
    options = {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]}
    r = await http.request("DELETE", f"{WIDGETS}/dry", json=options)
    assert r.status_code == 200, r.text
    after = (await http.get(f"{WIDGETS}/dry")).json()
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    r = await http.delete(f"{WIDGETS}/dry", params={"dryRun": "Some"})
    assert r.status_code == 400 and 'supported values: "All"' in r.json()["message"]


async def test_unknown_metadata_fields(http: httpx.AsyncClient) -> None:
    body = widget("fv-meta")
    body["metadata"]["labelz"] = {"a": "b"}
    r = await http.post(WIDGETS, json=body, params={"fieldValidation": "Strict"})
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "metadata.labelz"
    r = await http.post(WIDGETS, json=body)
    assert r.status_code == 201, r.text
    assert "labelz" not in r.json()["metadata"]
    assert r.headers["warning"] == '299 - "unknown field \\"metadata.labelz\\""'
    patch = {"metadata": {"annotationz": {"x": "y"}, "labels": {"ok": "1"}}}
    merge = {"content-type": "application/merge-patch+json"}
    r = await http.patch(
        f"{WIDGETS}/fv-meta", json=patch, headers=merge, params={"fieldValidation": "Ignore"}
    )
    assert r.status_code == 200 and "warning" not in r.headers
    assert (
        r.json()["metadata"]["labels"] == {"ok": "1"} and "annotationz" not in r.json()["metadata"]
    )
