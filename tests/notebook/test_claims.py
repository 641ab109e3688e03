"""PersistentVolumeClaims are backed by runtime volumes and protected while in use."""

from __future__ import annotations

import asyncio

import httpx

from services.common.runtime import LocalRuntime
from tests import specs
from tests.common.resources.conftest import NAMESPACE, RunningService

PVCS = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"


async def wait_for(predicate, within: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await predicate()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_claim_bound_used_protected_and_released(notebook_service: RunningService) -> None:
    runtime = LocalRuntime(notebook_service.state_dir)
    claim = specs.claim("work", "64Mi")
    async with httpx.AsyncClient(
        base_url=notebook_service.url, headers=notebook_service.headers()
    ) as http:
        assert (await http.post(PVCS, json=claim)).status_code == 201

        async def bound() -> dict | None:
            body = (await http.get(f"{PVCS}/work")).json()
            return body if body.get("status", {}).get("phase") == "Bound" else None

        body = await wait_for(bound)
        assert body and body["status"]["capacity"] == {"storage": "64Mi"}
        path = await runtime.resolve_volume(NAMESPACE, "work")
        assert path.is_dir()

        mount = {
            "volumeMounts": [{"name": "d", "mountPath": "/gotest/outputs/output_text/"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "work"}}],
        }
        await runtime.apply(
            {
                "namespace": NAMESPACE,
                "name": "writer",
                "command": ["sh", "-c", "echo hello > /gotest/outputs/output_text/data"],
                **mount,
            }
        )
        assert (await runtime.wait(NAMESPACE, "writer", timeout=20)).exit_code == 0
        await runtime.apply(
            {
                "namespace": NAMESPACE,
                "name": "reader",
                "command": ["sh", "-c", "cat /gotest/outputs/output_text/data; sleep 30"],
                **mount,
            }
        )

        async def reading() -> bool:
            return (await runtime.status(NAMESPACE, "reader")).phase == "Running"

        assert await wait_for(reading)
        assert await wait_for(lambda: _logged(runtime, "reader"))

        refused = await http.delete(f"{PVCS}/work")
        assert refused.status_code == 409, refused.text
        assert "in use" in refused.json()["message"] and "reader" in refused.json()["message"]
        assert (await http.get(f"{PVCS}/work")).json()["metadata"].get("deletionTimestamp") is None

        await runtime.delete(NAMESPACE, "reader")
        assert (await http.delete(f"{PVCS}/work")).status_code == 200

        async def gone() -> bool:
            return (await http.get(f"{PVCS}/work")).status_code == 404

        assert await wait_for(gone)
        assert not path.exists()


async def _logged(runtime: LocalRuntime, name: str) -> bool:
    return [line async for line in runtime.logs(NAMESPACE, name)] == ["hello"]


async def test_claim_storage_must_be_a_quantity(notebook_service: RunningService) -> None:
    async with httpx.AsyncClient(
        base_url=notebook_service.url, headers=notebook_service.headers()
    ) as http:
        for size, why in (("lots", "not a quantity"), ("0", "greater than zero")):
            r = await http.post(PVCS, json=specs.claim("sized", size))
            assert r.status_code == 422, r.text
            body = r.json()
            assert body["kind"] == "Status" and body["reason"] == "Invalid"
            [cause] = body["details"]["causes"]
            assert cause["field"] == "spec.resources.requests[storage]"
            assert why in cause["message"]
            assert (await http.get(f"{PVCS}/sized")).status_code == 404
        assert (await http.post(PVCS, json=specs.claim("sized", "1.5Gi"))).status_code == 201
