"""hera's WorkflowsService against the Argo Server API of a real pipeline service.

The service is called directly (no gateway): the test injects the gateway's identity
assertion header into hera's requests session, as the gateway would add it.
"""


import asyncio
from typing import Any

import pytest
from hera.workflows import DAG, Workflow, WorkflowsService, script
from hera.workflows.models import WorkflowCreateRequest

from tests.pipeline.conftest import PipelineService, nodes_by_display


@script()
def fan_out() -> None:
    import json

    print(json.dumps([{"n": 1}, {"n": 2}, {"n": 3}]))


@script()
def square(n: int) -> None:
    print(n * n)


@script()
def flip() -> None:
    print("tails")


@script()
def never() -> None:
    print("should not run")


def hera_service(pipeline: PipelineService, namespace: str) -> WorkflowsService:
    service = WorkflowsService(host=pipeline.url, namespace=namespace, token="unused")
    headers = pipeline.headers(namespace)
    original = service._request if hasattr(service, "_request") else None

    def request(*args: Any, **kwargs: Any) -> Any:
        kwargs["headers"] = {**(kwargs.get("headers") or {}), **headers}
        return original(*args, **kwargs)

    service._request = request  # type: ignore[method-assign]
    return service


async def test_hera_dag_with_param_fan_out_and_when(pipeline: PipelineService,
                                                    namespace: str) -> None:
    with Workflow(generate_name="hera-dag-", entrypoint="d", namespace=namespace) as w:
        with DAG(name="d"):
            gen = fan_out()
            sq = square(with_param=gen.result, arguments={"n": "{{item.n}}"})
            coin = flip()
            skip = never(when=f"{coin.result} == heads")
            gen >> sq
            coin >> skip
    service = hera_service(pipeline, namespace)
    created = await asyncio.to_thread(
        service.create_workflow, WorkflowCreateRequest(workflow=w.build()), namespace)
    name = created.metadata.name
    done = await pipeline.wait(namespace, name, timeout=60)
    assert done["status"]["phase"] == "Succeeded", [
        (n["displayName"], n["phase"], n.get("message")) for n in done["status"]["nodes"].values()]
    fetched = await asyncio.to_thread(service.get_workflow, name, namespace)
    assert fetched.status.phase == "Succeeded"
    nodes = nodes_by_display(done)
    assert nodes["never"]["phase"] == "Skipped"
    squares = sorted(n["outputs"]["result"] for n in done["status"]["nodes"].values()
                     if n["displayName"].startswith("square("))
    assert squares == ["1", "4", "9"]
    listed = await asyncio.to_thread(service.list_workflows, namespace)
    assert name in [i.metadata.name for i in listed.items]


async def test_hera_suspend_resume_stop_retry(pipeline: PipelineService, namespace: str) -> None:
    service = hera_service(pipeline, namespace)
    body = {"metadata": {"generateName": "gate-"},
            "spec": {"entrypoint": "main", "templates": [
                {"name": "main", "steps": [[{"name": "gate", "template": "gate"}],
                                           [{"name": "after", "template": "ok"}]]},
                {"name": "gate", "suspend": {}},
                {"name": "ok", "container": {"image": "a", "command": ["true"]}}]}}
    async with pipeline.client(namespace) as c:
        r = await c.post(f"/api/v1/workflows/{namespace}", json={"workflow": body})
        assert r.status_code == 200, r.text
        name = r.json()["metadata"]["name"]
        await asyncio.sleep(0.5)
        assert (await pipeline.get(namespace, name))["status"]["phase"] == "Running"
        r = await c.put(f"/api/v1/workflows/{namespace}/{name}/resume", json={})
        assert r.status_code == 200, r.text
        done = await pipeline.wait(namespace, name, timeout=20)
        assert done["status"]["phase"] == "Succeeded"
        assert nodes_by_display(done)["gate"]["phase"] == "Succeeded"

        body["spec"]["templates"][2]["container"]["command"] = ["sleep", "30"]
        body["spec"]["templates"][0]["steps"] = [[{"name": "after", "template": "ok"}]]
        r = await c.post(f"/api/v1/workflows/{namespace}", json={"workflow": body})
        name = r.json()["metadata"]["name"]
        await asyncio.sleep(0.5)
        r = await c.put(f"/api/v1/workflows/{namespace}/{name}/terminate", json={})
        assert r.status_code == 200, r.text
        done = await pipeline.wait(namespace, name, timeout=20)
        assert done["status"]["phase"] == "Failed"
        r = await c.put(f"/api/v1/workflows/{namespace}/{name}/retry", json={})
        assert r.status_code == 200, r.text
        running = await pipeline.wait(namespace, name, timeout=10, phases=("Running",))
        assert running["status"]["phase"] == "Running"
        await c.put(f"/api/v1/workflows/{namespace}/{name}/stop", json={})
        await pipeline.wait(namespace, name, timeout=20)

        r = await c.get(f"/api/v1/workflows/{namespace}/does-not-exist")
        assert r.status_code == 404 and r.json()["code"] == 5
    with pytest.raises(Exception, match="404"):
        await asyncio.to_thread(service.get_workflow, "does-not-exist", namespace)
