"""Tenants cannot write the ``/status`` subresource (issue 10, item 5).

Status is what the platform observed, and the platform acts on it (the gateway routes a
notebook's or model's traffic to its ``status.url``; an experiment ranks its trials by
their ``status.observation``). So only the controllers write it, through the store: over
HTTP, ``PUT`` and ``PATCH .../status`` get a Kubernetes ``Status`` 403 for a namespace's
own admin, an editor and a workload's service account alike. Reading status stays open,
and a cluster admin may still repair an object by hand, as in Kubernetes.

The real notebook service (uvicorn in this loop) on its own database: its controller binds
a PersistentVolumeClaim by writing ``status.phase: Bound``, which is the write a tenant
must not be able to make or undo.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from services.common.identity import ASSERTION_HEADER
from services.notebook.app import create_app
from services.notebook.settings import Settings
from tests.conftest import InProcessService, own_service_fixture

NS = "tenant-a"
PVCS = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
SERVICE_ACCOUNT = f"system:serviceaccount:{NS}:default-editor"
FORBIDDEN = "an object's status is written by shipyard's controllers only; change its spec instead"


notebook = own_service_fixture(create_app, Settings, "shipyard_sec_status", namespace=NS)


def as_user(service: InProcessService, user: str, role: str, **kw: Any) -> httpx.AsyncClient:
    headers = service.minter.headers(user=user, namespace=NS, role=role, **kw)
    return httpx.AsyncClient(base_url=service.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
async def bound_claim(notebook: InProcessService) -> str:
    """A claim the controller has bound (its status written by the platform)."""
    async with as_user(notebook, "alice@example.com", "admin") as alice:
        r = await alice.post(
            PVCS,
            json={
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        assert r.status_code == 201, r.text
        async with asyncio.timeout(30):
            while True:
                claim = (await alice.get(f"{PVCS}/data")).json()
                if claim.get("status", {}).get("phase") == "Bound":
                    break
                await asyncio.sleep(0.1)
    return "data"


def assert_forbidden(r: httpx.Response, user: str, verb: str) -> None:
    assert r.status_code == 403, r.text
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'User "{user}" cannot {verb} resource "persistentvolumeclaims/status" '
        f'in the namespace "{NS}": {FORBIDDEN}',
        "reason": "Forbidden",
        "code": 403,
        "details": {"name": "data", "group": "", "kind": "persistentvolumeclaims"},
    }


async def test_status_write_by_tenant_forbidden(
    notebook: InProcessService, bound_claim: str
) -> None:
    item = f"{PVCS}/{bound_claim}"
    tenants = (
        ("alice@example.com", "admin"),  # the namespace's owner
        ("bob@example.com", "edit"),  # a contributor
        (SERVICE_ACCOUNT, "edit"),  # a workload, with its service-account token
    )
    for user, role in tenants:
        async with as_user(notebook, user, role) as tenant:
            current = (await tenant.get(item)).json()
            forged = {**current, "status": {"phase": "Lost"}}
            assert_forbidden(await tenant.put(f"{item}/status", json=forged), user, "update")
            merge = {"status": {"phase": "Lost"}}
            r = await tenant.patch(
                f"{item}/status",
                json=merge,
                headers={"content-type": "application/merge-patch+json"},
            )
            assert_forbidden(r, user, "patch")
            ops = [{"op": "replace", "path": "/status/phase", "value": "Lost"}]
            r = await tenant.patch(
                f"{item}/status",
                json=ops,
                headers={"content-type": "application/json-patch+json"},
            )
            assert_forbidden(r, user, "patch")
            # Reading status is still everyone's, and it is the controller's, unchanged.
            r = await tenant.get(f"{item}/status")
            assert r.status_code == 200, r.text
            assert r.json()["status"]["phase"] == "Bound"
            assert r.json()["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
            # Through the main resource, status is not written either (as in Kubernetes,
            # where a kind with a status subresource ignores it there).
            r = await tenant.patch(
                item, json=merge, headers={"content-type": "application/merge-patch+json"}
            )
            assert r.status_code == 200, r.text
            assert r.json()["status"]["phase"] == "Bound", r.text


async def test_status_write_through_kubernetes_client_forbidden(
    notebook: InProcessService, bound_claim: str
) -> None:
    """What kubectl and the official client see: an ApiException 403, reason Forbidden."""
    config = k8s.Configuration(host=notebook.url)
    headers = notebook.minter.headers(user="alice@example.com", namespace=NS, role="admin")
    api = k8s.CoreV1Api(
        k8s.ApiClient(config, header_name=ASSERTION_HEADER, header_value=headers[ASSERTION_HEADER])
    )
    with pytest.raises(ApiException) as denied:
        await asyncio.to_thread(
            api.patch_namespaced_persistent_volume_claim_status,
            bound_claim,
            NS,
            {"status": {"phase": "Lost"}},
        )
    assert denied.value.status == 403
    assert FORBIDDEN in str(denied.value.body)


async def test_status_write_by_cluster_admin_allowed(
    notebook: InProcessService, bound_claim: str
) -> None:
    """An operator (``adm`` in the assertion) may still repair status by hand."""
    async with as_user(notebook, "root@example.com", "view", cluster_admin=True) as admin:
        r = await admin.patch(
            f"{PVCS}/{bound_claim}/status",
            json={"status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}},
            headers={"content-type": "application/merge-patch+json"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["status"]["capacity"] == {"storage": "1Gi"}
