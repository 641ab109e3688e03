"""CronWorkflow scheduling: the schedule grammar, and the scheduler's decisions at chosen
instants (the service's own scheduler runs too; names derived from the scheduled time make
a repeated fire a no-op, which is what these tests rely on and check)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.pipeline.cron import check_schedule, parse_schedule
from services.pipeline.models import CRON_WORKFLOW, WORKFLOW
from services.pipeline.nodes import parse_iso
from services.pipeline.schedules import CRON_LABEL, Scheduler
from tests.pipeline.conftest import PipelineService


def test_parse_schedule_five_and_six_fields() -> None:
    t0 = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)  # a Thursday
    assert parse_schedule("*/15 * * * *").next_fire(t0) == datetime(2026, 1, 1, 0, 15, tzinfo=UTC)
    assert parse_schedule("0 9 * * MON-FRI").next_fire(t0) == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert parse_schedule("0 0 1 * *").next_fire(t0) == datetime(2026, 2, 1, tzinfo=UTC)
    assert parse_schedule("*/10 * * * * *", with_seconds=True).next_fire(t0) == t0 + timedelta(
        seconds=10
    )
    berlin = parse_schedule("0 9 * * *", "Europe/Berlin").next_fire(t0)
    assert berlin == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert parse_schedule("@hourly").next_fire(t0) == datetime(2026, 1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("line", ["* * *", "61 * * * *", "* * * * MONX", "*/0 * * * *"])
def test_check_schedule_rejects_bad_cron(line: str) -> None:
    assert check_schedule(line) is not None


async def test_create_cron_workflow_bad_schedule_rejected(
    pipeline: PipelineService, namespace: str
) -> None:
    body = cron_body("bad", "99 * * * *")
    async with pipeline.client(namespace) as c:
        r = await c.post(
            f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/cronworkflows", json=body
        )
    assert r.status_code == 422
    assert r.json()["details"]["causes"][0]["field"] == "spec.schedule"


def cron_body(name: str, schedule: str, **spec: object) -> dict:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            **spec,
            "workflowSpec": {
                "entrypoint": "main",
                "templates": [
                    {"name": "main", "container": {"image": "a", "command": ["sleep", "5"]}}
                ],
            },
        },
    }


async def create_cron(
    pipeline: PipelineService, namespace: str, name: str, schedule: str, **spec: object
) -> datetime:
    """Create the CronWorkflow ``cron_body(name, schedule, **spec)`` in the service's store;
    its creation time (where its schedule starts)."""
    cron = await store_of(pipeline).create(
        CRON_WORKFLOW, namespace, cron_body(name, schedule, **spec)
    )
    created = parse_iso(cron["metadata"]["creationTimestamp"])
    assert created is not None
    return created


def store_of(pipeline: PipelineService) -> Any:
    return pipeline.app.state.ctx.store


async def tick(
    scheduler: Scheduler, pipeline: PipelineService, namespace: str, name: str, at: datetime
) -> None:
    """One ``cron_tick`` of ``scheduler`` at ``at`` for the CronWorkflow ``name`` as stored."""
    await scheduler.cron_tick(await store_of(pipeline).get(CRON_WORKFLOW, namespace, name), at)


async def cron_runs(pipeline: PipelineService, namespace: str, name: str) -> list[dict[str, Any]]:
    """The Workflows the CronWorkflow ``name`` started."""
    runs = await store_of(pipeline).list_all(
        WORKFLOW, namespace, label_selector=f"{CRON_LABEL}={name}"
    )
    return list(runs)


def new_scheduler(pipeline: PipelineService) -> Scheduler:
    """A scheduler of its own over the service's stores (as another replica, or after a
    restart, would have)."""
    ctx = pipeline.app.state.ctx
    return Scheduler(ctx.store, ctx.kfp_store, ctx.kfp_runs)


async def test_cron_fires_once_per_slot_and_forbid_skips(
    pipeline: PipelineService, namespace: str
) -> None:
    store = store_of(pipeline)
    created = await create_cron(
        pipeline, namespace, "nightly", "*/5 * * * *", concurrencyPolicy="Forbid", timezone="UTC"
    )
    first_slot = parse_schedule("*/5 * * * *").next_fire(created)
    at = first_slot + timedelta(seconds=20)
    await tick(new_scheduler(pipeline), pipeline, namespace, "nightly", at)
    # A second scheduler (as after a restart) at the same instant: nothing new.
    again = new_scheduler(pipeline)
    await tick(again, pipeline, namespace, "nightly", at)
    runs = await cron_runs(pipeline, namespace, "nightly")
    assert [w["metadata"]["name"] for w in runs] == [f"nightly-{int(first_slot.timestamp())}"]
    status = (await store.get(CRON_WORKFLOW, namespace, "nightly"))["status"]
    assert parse_iso(status["lastScheduledTime"]) == first_slot
    # The next slot while the first run is still active: Forbid skips it (and records it).
    await tick(again, pipeline, namespace, "nightly", at + timedelta(minutes=5))
    assert len(await cron_runs(pipeline, namespace, "nightly")) == 1
    status = (await store.get(CRON_WORKFLOW, namespace, "nightly"))["status"]
    assert parse_iso(status["lastScheduledTime"]) == first_slot + timedelta(minutes=5)
    await store.delete(CRON_WORKFLOW, namespace, "nightly")


async def test_cron_missed_slots_fire_latest_within_deadline(
    pipeline: PipelineService, namespace: str
) -> None:
    created = await create_cron(
        pipeline, namespace, "hourly", "0 * * * *", startingDeadlineSeconds=600, suspend=False
    )
    scheduler = new_scheduler(pipeline)
    slot = parse_schedule("0 * * * *").next_fire(created) + timedelta(hours=3)
    # Down for three hours: only the latest slot runs, and only within the deadline.
    await tick(scheduler, pipeline, namespace, "hourly", slot + timedelta(seconds=900))
    assert await cron_runs(pipeline, namespace, "hourly") == []
    await tick(scheduler, pipeline, namespace, "hourly", slot + timedelta(hours=1, seconds=30))
    runs = await cron_runs(pipeline, namespace, "hourly")
    assert [w["metadata"]["name"] for w in runs] == [
        f"hourly-{int((slot + timedelta(hours=1)).timestamp())}"
    ]
    await store_of(pipeline).delete(CRON_WORKFLOW, namespace, "hourly")
