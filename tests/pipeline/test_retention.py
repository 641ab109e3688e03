"""Retention: archived KFP runs can be deleted (workflow and files too), and the retention
period removes finished workflows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import yaml

from services.pipeline.models import WORKFLOW
from services.pipeline.schedules import Scheduler
from tests import specs
from tests.pipeline.conftest import PipelineService
from tests.pipeline.test_seed import EXAMPLE

ARGO_PACKAGE = specs.workflow(
    "pkg-",
    [
        {
            "name": "main",
            "inputs": {"parameters": [{"name": "msg"}]},
            "container": {"image": "a", "command": ["echo", "{{inputs.parameters.msg}}"]},
        }
    ],
    generate_name=True,
    arguments={"parameters": [{"name": "msg", "value": "hi"}]},
)


async def wait_state(c, run_id: str, states: tuple[str, ...]) -> dict:  # noqa: ANN001
    for _ in range(200):
        run = (await c.get(f"/apis/v2beta1/runs/{run_id}")).json()
        if run["state"] in states:
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(run)


async def test_delete_archived_run_removes_workflow(
    pipeline: PipelineService, namespace: str
) -> None:
    store = pipeline.app.state.ctx.store
    async with pipeline.client(namespace) as c:
        r = await c.post(
            "/apis/v2beta1/runs",
            json={
                "display_name": "argo-pkg",
                "pipeline_spec": ARGO_PACKAGE,
                "runtime_config": {"parameters": {"msg": "from-kfp"}},
            },
        )
        assert r.status_code == 200, r.text
        run_id = r.json()["run_id"]
        run = await wait_state(c, run_id, ("SUCCEEDED", "FAILED"))
        assert run["state"] == "SUCCEEDED"
        wf = await store.get(WORKFLOW, namespace, f"kfp-{run_id}")
        assert wf["status"]["nodes"][wf["metadata"]["name"]]["inputs"]["parameters"] == [
            {"name": "msg", "value": "from-kfp"}
        ]
        assert (await c.post(f"/apis/v2beta1/runs/{run_id}:archive")).status_code == 200
        assert (await c.get(f"/apis/v2beta1/runs/{run_id}")).json()["storage_state"] == "ARCHIVED"
        assert (await c.delete(f"/apis/v2beta1/runs/{run_id}")).status_code == 200
        missing = await c.get(f"/apis/v2beta1/runs/{run_id}")
        assert missing.status_code == 404 and missing.json()["code"] == 5
        for _ in range(50):
            if await store.find(WORKFLOW, namespace, f"kfp-{run_id}") is None:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the run's workflow was not deleted")
        assert (
            await pipeline.runtime.list(
                {"pipeline.shipyard.io/workflow-uid": wf["metadata"]["uid"]}
            )
            == []
        )


async def test_retention_period_deletes_old_finished_workflows(
    pipeline: PipelineService, namespace: str
) -> None:
    ctx = pipeline.app.state.ctx
    done = await pipeline.run(
        namespace,
        {
            "metadata": {"generateName": "old-"},
            "spec": {
                "entrypoint": "main",
                "templates": [{"name": "main", "container": {"image": "a", "command": ["true"]}}],
            },
        },
    )
    scheduler = Scheduler(ctx.store, ctx.kfp_store, ctx.kfp_runs, retention_seconds=3600)
    await scheduler.apply_retention(datetime.now(UTC))
    assert await ctx.store.find(WORKFLOW, namespace, done["metadata"]["name"]) is not None
    await scheduler.apply_retention(datetime.now(UTC) + timedelta(hours=2))
    for _ in range(50):
        if await ctx.store.find(WORKFLOW, namespace, done["metadata"]["name"]) is None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the old workflow was not deleted")


def test_seed_example_is_the_seed() -> None:
    """The example file holds the seed's two documents unchanged (PVC, then Workflow)."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Workflow"]
