"""A KFP run uses only pipelines of its own namespace (issue 10, item 5).

The KFP API names pipeline versions by id, so the namespace check is the pipeline service's:
a run (or recurring run) in tenant B that names tenant A's pipeline version or pipeline by
id gets exactly the NOT_FOUND an id that never existed gets, and nothing is created. Tenant
A's own runs keep working. A version is also deleted only through its own pipeline.

A real pipeline service (uvicorn in this loop) on its own database, reached with minted
gateway assertions: ``alice`` owns ``tenant-a``, ``bob`` owns ``tenant-b``.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from services.pipeline.app import create_app
from services.pipeline.settings import Settings
from tests import specs
from tests.conftest import InProcessService, own_service_fixture

KFP = "/apis/v2beta1"
ALICE_NS, BOB_NS = "tenant-a", "tenant-b"
# Suspended: runs of it wait for a resume, so nothing executes in these tests.
PACKAGE = specs.workflow(
    "waits-",
    [{"name": "main", "suspend": {}}],
    generate_name=True,
)


pipeline = own_service_fixture(create_app, Settings, "shipyard_sec_kfp", namespace=ALICE_NS)


def client(service: InProcessService, user: str, namespace: str) -> httpx.AsyncClient:
    headers = service.minter.headers(user=user, namespace=namespace, role="admin")
    return httpx.AsyncClient(base_url=service.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
async def alice_pipeline(pipeline: InProcessService) -> dict[str, str]:
    """Tenant A's pipeline and its one version: their ids."""
    async with client(pipeline, "alice@example.com", ALICE_NS) as alice:
        r = await alice.post(
            f"{KFP}/pipelines/create",
            json={
                "pipeline": {"display_name": f"private-{uuid.uuid4().hex[:6]}"},
                "pipeline_version": {"pipeline_spec": PACKAGE},
            },
        )
        assert r.status_code == 200, r.text
        pipeline_id = r.json()["pipeline_id"]
        r = await alice.get(f"{KFP}/pipelines/{pipeline_id}/versions")
        assert r.status_code == 200, r.text
        (version,) = r.json()["pipeline_versions"]
    return {"pipeline_id": pipeline_id, "pipeline_version_id": version["pipeline_version_id"]}


def not_found(r: httpx.Response, message: str) -> dict[str, Any]:
    """KFP's NOT_FOUND (HTTP 404, gRPC code 5) with exactly ``message``."""
    assert r.status_code == 404, r.text
    body = r.json()
    assert body == {"error": message, "code": 5, "message": message, "details": []}, body
    return body


async def assert_nothing_created(bob: httpx.AsyncClient) -> None:
    runs = (await bob.get(f"{KFP}/runs", params={"namespace": BOB_NS})).json()
    assert runs.get("runs", []) == [], runs
    recurring = (await bob.get(f"{KFP}/recurringruns", params={"namespace": BOB_NS})).json()
    assert recurring.get("recurringRuns", []) == [], recurring
    workflows = await bob.get(f"/apis/argoproj.io/v1alpha1/namespaces/{BOB_NS}/workflows")
    assert workflows.json()["items"] == [], workflows.text


async def assert_borrowing_refused(
    bob: httpx.AsyncClient, attempts: list[tuple[dict[str, Any], str]]
) -> None:
    """For each (reference, message): Bob's run and recurring run (in his namespace) of
    ``reference`` get KFP's NOT_FOUND with exactly ``message``; nothing is created."""
    for path, extra in (("runs", {}), ("recurringruns", {"trigger": _every_hour()})):
        for reference, message in attempts:
            body = {"display_name": "borrowed", "namespace": BOB_NS, **reference, **extra}
            not_found(await bob.post(f"{KFP}/{path}", json=body), message)
    await assert_nothing_created(bob)


async def create_own(
    alice: httpx.AsyncClient, path: str, display_name: str, reference: Any, **extra: Any
) -> dict[str, Any]:
    """Alice's run or recurring run (``path``) in her namespace of ``reference``: created
    (HTTP 200); its body."""
    body = {
        "display_name": display_name,
        "namespace": ALICE_NS,
        "pipeline_version_reference": reference,
        **extra,
    }
    r = await alice.post(f"{KFP}/{path}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def test_run_with_other_namespace_version_not_found(
    pipeline: InProcessService, alice_pipeline: dict[str, str]
) -> None:
    version_id = alice_pipeline["pipeline_version_id"]
    unknown = str(uuid.uuid4())
    refused = f"pipeline version {version_id} not found"
    async with client(pipeline, "bob@example.com", BOB_NS) as bob:
        await assert_borrowing_refused(
            bob,
            [
                ({"pipeline_version_reference": alice_pipeline}, refused),
                ({"pipeline_version_reference": {"pipeline_version_id": version_id}}, refused),
                ({"pipeline_version_id": version_id}, refused),  # the older top-level field
                # An id that never existed: the same answer, so existence does not leak.
                (
                    {"pipeline_version_reference": {"pipeline_version_id": unknown}},
                    f"pipeline version {unknown} not found",
                ),
            ],
        )


async def test_run_with_other_namespace_pipeline_not_found(
    pipeline: InProcessService, alice_pipeline: dict[str, str]
) -> None:
    """A pipeline id alone means its latest version: the same rule, the same answer."""
    pipeline_id = alice_pipeline["pipeline_id"]
    unknown = str(uuid.uuid4())
    async with client(pipeline, "bob@example.com", BOB_NS) as bob:
        await assert_borrowing_refused(
            bob,
            [
                (
                    {"pipeline_version_reference": {"pipeline_id": target}},
                    f"pipeline {target} not found",
                )
                for target in (pipeline_id, unknown)
            ],
        )


async def test_run_with_own_pipeline_version_created(
    pipeline: InProcessService, alice_pipeline: dict[str, str]
) -> None:
    async with client(pipeline, "alice@example.com", ALICE_NS) as alice:
        for ref in (alice_pipeline, {"pipeline_id": alice_pipeline["pipeline_id"]}):
            run = await create_own(alice, "runs", "mine", ref)
            assert run["display_name"] == "mine" and run["pipeline_version_reference"] == ref
            r = await alice.delete(f"{KFP}/runs/{run['run_id']}")
            assert r.status_code == 200, r.text
        recurring = await create_own(
            alice,
            "recurringruns",
            "mine-hourly",
            alice_pipeline,
            trigger=_every_hour(),
            mode="DISABLE",
        )
        assert recurring["pipeline_version_reference"] == alice_pipeline


async def test_delete_version_through_other_pipeline_not_found(
    pipeline: InProcessService, alice_pipeline: dict[str, str]
) -> None:
    """Bob may delete versions of his own pipeline only: naming Alice's version under his
    pipeline's path is a NOT_FOUND, and her version stays."""
    version_id = alice_pipeline["pipeline_version_id"]
    async with client(pipeline, "bob@example.com", BOB_NS) as bob:
        r = await bob.post(
            f"{KFP}/pipelines/create",
            json={
                "pipeline": {"display_name": "bobs", "namespace": BOB_NS},
                "pipeline_version": {"pipeline_spec": PACKAGE},
            },
        )
        assert r.status_code == 200, r.text
        bobs = r.json()["pipeline_id"]
        r = await bob.delete(f"{KFP}/pipelines/{bobs}/versions/{version_id}")
        not_found(r, f"pipeline version {version_id} not found")
    async with client(pipeline, "alice@example.com", ALICE_NS) as alice:
        r = await alice.get(
            f"{KFP}/pipelines/{alice_pipeline['pipeline_id']}/versions/{version_id}"
        )
        assert r.status_code == 200, r.text
        assert r.json()["pipeline_version_id"] == version_id


def _every_hour() -> dict[str, Any]:
    return {"periodic_schedule": {"interval_second": "3600"}}
