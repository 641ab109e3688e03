"""kfp.Client (the real SDK, unchanged) through the real gateway of the whole platform.

``kfp.Client(host=<gateway>, existing_token=...)`` in single-user mode: the gateway accepts
any bearer token there, forwards to the pipeline service with a signed identity assertion,
and picks the namespace for ``/apis/v2beta1`` from ``?namespace=``, the body, or the user's
default namespace. Every call below travels that path; nothing is faked.
"""

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import kfp
import pytest
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from tests import specs
from tests.pipeline.components import make, napper
from tests.pipeline.conftest import Gateway, call, compile_to, unique

FINAL = ("SUCCEEDED", "FAILED", "CANCELED")


@dsl.component(base_image="python:3.11")
def shout(text: str, out: Output[Dataset]) -> None:
    with open(out.path, "w") as f:
        f.write(text.upper())


@dsl.component(base_image="python:3.11")
def read(data: Input[Dataset]) -> str:
    return open(data.path).read()


@dsl.pipeline(name="three-steps")
def three_steps(n: int = 2, word: str = "ab") -> None:
    made = make(n=n, word=word)
    shouted = shout(text=made.output)
    read(data=shouted.outputs["out"])


@dsl.component(base_image="python:3.11")
def gate(marker: str, mode: str) -> str:
    """While the PersistentVolumeClaim ``marker`` exists: ``wait`` keeps waiting, ``fail``
    fails. So a test decides when a retried step may succeed. The step asks the platform API
    (the one thing its sandbox reaches) as its service account."""
    import os
    import sys
    import time
    import urllib.error
    import urllib.request

    url = (
        f"{os.environ['SHIPYARD_URL']}/api/v1/namespaces/{os.environ['SHIPYARD_NAMESPACE']}"
        f"/persistentvolumeclaims/{marker}"
    )

    def closed() -> bool:
        request = urllib.request.Request(url)
        with open(os.environ["SHIPYARD_TOKEN_FILE"]) as f:
            request.add_header("Authorization", "Bearer " + f.read().strip())
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    if mode == "fail" and closed():
        sys.exit(3)
    for _ in range(600):
        if not closed():
            break
        time.sleep(0.1)
    return mode


@dsl.pipeline(name="gated")
def gated(marker: str, mode: str) -> None:
    gate(marker=marker, mode=mode).set_caching_options(False)


async def test_kfp_client_upload_run_recurring_archive(
    gateway: Gateway, kfp_client: kfp.Client, tmp_path: Path
) -> None:
    client = kfp_client
    health = await call(client.get_kfp_healthz)
    assert health.multi_user is False
    package = compile_to(three_steps, tmp_path / "three.yaml")
    pipeline_name = unique("three-steps")
    uploaded = await call(client.upload_pipeline, package, pipeline_name)
    assert uploaded.pipeline_id
    assert await call(client.get_pipeline_id, pipeline_name) == uploaded.pipeline_id

    exp_name, run_name = unique("exp"), unique("first")
    result = await call(
        client.create_run_from_pipeline_package,
        package,
        arguments={"n": 3, "word": "xy"},
        run_name=run_name,
        experiment_name=exp_name,
    )
    run = await call(client.wait_for_run_completion, result.run_id, 60, 0.2)
    assert run.state == "SUCCEEDED", run
    reads = [d for d in run.run_details.task_details if d.display_name == "read"]
    assert reads and reads[0].state == "SUCCEEDED"
    async with gateway.client(gateway.namespace) as c:
        wf = (
            await c.get(
                f"/apis/argoproj.io/v1alpha1/namespaces/{gateway.namespace}/"
                f"workflows/kfp-{result.run_id}"
            )
        ).json()
    assert wf["status"]["phase"] == "Succeeded"
    read_pods = [
        n
        for n in wf["status"]["nodes"].values()
        if n["displayName"] == "read" and n["type"] == "Pod"
    ]
    assert read_pods[0]["outputs"]["parameters"] == [{"name": "Output", "value": "XYXYXY"}]

    filtered = await call(
        client.list_runs,
        filter=json.dumps(
            {
                "predicates": [
                    {"operation": "EQUALS", "key": "display_name", "stringValue": run_name}
                ]
            }
        ),
    )
    assert [r.run_id for r in filtered.runs] == [result.run_id]

    experiment = await call(client.get_experiment, experiment_name=exp_name)
    napping = compile_to(napper, tmp_path / "napper.yaml")
    recurring = await call(
        client.create_recurring_run,
        experiment_id=experiment.experiment_id,
        job_name="every-second",
        pipeline_package_path=napping,
        interval_second=1,
        max_concurrency=1,
    )
    started = time.monotonic()
    max_active = 0
    seen: set[str] = set()
    while time.monotonic() - started < 5:
        page = await call(client.list_runs, experiment_id=experiment.experiment_id, page_size=100)
        mine = [r for r in page.runs or [] if r.recurring_run_id == recurring.recurring_run_id]
        seen |= {r.run_id for r in mine}
        max_active = max(max_active, sum(1 for r in mine if r.state not in FINAL))
        await asyncio.sleep(0.2)
    assert len(seen) >= 2, "the recurring run did not fire repeatedly"
    assert max_active == 1, "max_concurrency=1 was exceeded"
    await call(client.disable_recurring_run, recurring.recurring_run_id)

    await call(client.archive_experiment, experiment.experiment_id)
    archived = await call(client.get_experiment, experiment_id=experiment.experiment_id)
    assert archived.storage_state == "ARCHIVED"
    again = await call(client.get_run, result.run_id)
    assert again.storage_state == "ARCHIVED"
    job = await call(client.get_recurring_run, recurring.recurring_run_id)
    assert job.status == "DISABLED"


async def test_kfp_unarchive_enable_and_delete(kfp_client: kfp.Client, tmp_path: Path) -> None:
    """The way back and the way out with kfp.Client: an archived run and experiment are
    AVAILABLE again once unarchived, a disabled recurring run ENABLED again once enabled;
    a deleted recurring run, run and experiment are gone (404)."""
    from kfp_server_api.exceptions import ApiException

    client = kfp_client
    experiment = await call(client.create_experiment, unique("exp"))
    exp_id = experiment.experiment_id
    package = compile_to(napper, tmp_path / "napper.yaml")
    run = await call(
        client.create_run_from_pipeline_package,
        package,
        arguments={"seconds": 0.0},
        experiment_id=exp_id,
    )
    await call(client.archive_run, run.run_id)
    assert (await call(client.get_run, run.run_id)).storage_state == "ARCHIVED"
    await call(client.unarchive_run, run.run_id)
    assert (await call(client.get_run, run.run_id)).storage_state == "AVAILABLE"
    await call(client.archive_experiment, exp_id)
    await call(client.unarchive_experiment, exp_id)
    assert (await call(client.get_experiment, experiment_id=exp_id)).storage_state == "AVAILABLE"
    yearly = await call(
        client.create_recurring_run,
        experiment_id=exp_id,
        job_name=unique("yearly"),
        cron_expression="0 0 0 1 1 *",  # never due while the test runs
        pipeline_package_path=package,
        enabled=False,
    )
    job_id = yearly.recurring_run_id
    assert (await call(client.get_recurring_run, job_id)).status == "DISABLED"
    await call(client.enable_recurring_run, job_id)
    assert (await call(client.get_recurring_run, job_id)).status == "ENABLED"
    await call(client.wait_for_run_completion, run.run_id, 60, 0.2)
    await call(client.delete_recurring_run, job_id)
    await call(client.delete_run, run.run_id)
    await call(client.delete_experiment, exp_id)
    for gone in (
        lambda: client.get_recurring_run(job_id),
        lambda: client.get_run(run.run_id),
        lambda: client.get_experiment(experiment_id=exp_id),
    ):
        with pytest.raises(ApiException) as info:
            await call(gone)
        assert info.value.status == 404, info.value


async def test_kfp_pipeline_versions_upload_list_run_delete(
    kfp_client: kfp.Client, tmp_path: Path
) -> None:
    client = kfp_client
    name = unique("versioned")
    first = await call(client.upload_pipeline, compile_to(three_steps, tmp_path / "v1.yaml"), name)
    second = await call(
        client.upload_pipeline_version,
        compile_to(napper, tmp_path / "v2.yaml"),
        "v2",
        pipeline_id=first.pipeline_id,
    )
    assert second.pipeline_id == first.pipeline_id and second.display_name == "v2"
    versions = await call(client.list_pipeline_versions, first.pipeline_id, page_size=10)
    assert second.pipeline_version_id in [v.pipeline_version_id for v in versions.pipeline_versions]
    assert len(versions.pipeline_versions) == 2
    got = await call(client.get_pipeline_version, first.pipeline_id, second.pipeline_version_id)
    assert got.display_name == "v2"
    assert got.pipeline_spec["pipelineInfo"]["name"] == "napper"
    by_name = await call(
        client.upload_pipeline_version,
        compile_to(napper, tmp_path / "v3.yaml"),
        "v3",
        pipeline_name=name,
    )
    assert by_name.pipeline_id == first.pipeline_id

    experiment = await call(client.create_experiment, unique("versions"))
    run = await call(
        client.run_pipeline,
        experiment.experiment_id,
        unique("from-version"),
        params={"seconds": 0.1},
        pipeline_id=first.pipeline_id,
        version_id=second.pipeline_version_id,
    )
    done = await call(client.wait_for_run_completion, run.run_id, 60, 0.2)
    assert done.state == "SUCCEEDED", done
    assert done.pipeline_version_reference.pipeline_version_id == second.pipeline_version_id

    await call(client.delete_pipeline_version, first.pipeline_id, by_name.pipeline_version_id)
    left = await call(client.list_pipeline_versions, first.pipeline_id)
    assert by_name.pipeline_version_id not in [
        v.pipeline_version_id for v in left.pipeline_versions
    ]
    with pytest.raises(kfp_server_api_exception(), match="404|[Nn]ot [Ff]ound"):
        await call(client.get_pipeline_version, first.pipeline_id, by_name.pipeline_version_id)


def kfp_server_api_exception() -> type[Exception]:
    from kfp_server_api.exceptions import ApiException

    return ApiException


async def wait_state(
    client: kfp.Client,
    run_id: str,
    states: tuple[str, ...],
    timeout: float = 30,  # noqa: ASYNC109
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = await call(client.get_run, run_id)
        if run.state in states:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run.state}, wanted {states}"
        await asyncio.sleep(0.2)


async def test_kfp_terminate_and_retry_runs(
    kfp_client: kfp.Client, gateway: Gateway, tmp_path: Path
) -> None:
    """A waiting run is terminated (CANCELED) and a failing one FAILS; once the marker claim is
    gone, ``:retry`` runs the failed step again and both runs SUCCEED."""
    client = kfp_client
    marker = unique("kfp-gate")
    claims = f"{gateway.url}/api/v1/namespaces/{gateway.namespace}/persistentvolumeclaims"
    claim = specs.claim(marker, "1Mi")
    async with httpx.AsyncClient(timeout=30) as api:
        created = await api.post(claims, json=claim)
        assert created.status_code == 201, created.text
    try:
        package = compile_to(gated, tmp_path / "gated.yaml")
        exp = unique("gates")
        waiting = await call(
            client.create_run_from_pipeline_package,
            package,
            arguments={"marker": marker, "mode": "wait"},
            experiment_name=exp,
        )
        failing = await call(
            client.create_run_from_pipeline_package,
            package,
            arguments={"marker": marker, "mode": "fail"},
            experiment_name=exp,
        )
        await wait_state(client, waiting.run_id, ("RUNNING",))
        failed = await wait_state(client, failing.run_id, FINAL)
        assert failed.state == "FAILED", failed
        await call(client.terminate_run, waiting.run_id)
        canceled = await wait_state(client, waiting.run_id, FINAL)
        assert canceled.state == "CANCELED", canceled
    finally:
        async with httpx.AsyncClient(timeout=30) as api:
            await api.delete(f"{claims}/{marker}")
    for run_id in (waiting.run_id, failing.run_id):
        await call(client._run_api.run_service_retry_run, run_id)  # kfp.Client has no retry
        # At once, not after the controller's next pass: a waiter must not see the old FAILED.
        assert (await call(client.get_run, run_id)).state == "RUNNING"
    for run_id in (waiting.run_id, failing.run_id):
        done = await call(client.wait_for_run_completion, run_id, 60, 0.2)
        assert done.state == "SUCCEEDED", done
        gates = [
            d
            for d in done.run_details.task_details
            if d.display_name == "gate" and d.state == "SUCCEEDED"
        ]
        assert gates, done.run_details.task_details
    with pytest.raises(kfp_server_api_exception(), match="412|not failed"):
        await call(client._run_api.run_service_retry_run, waiting.run_id)


def slot_of(run: Any) -> datetime:
    """The schedule slot a recurring run fired for (its name ends with it, as in KFP)."""
    return datetime.strptime(run.display_name.rsplit("-", 1)[-1], "%Y%m%d%H%M%S")


async def test_kfp_recurring_runs_cron_seconds_and_no_catchup(
    kfp_client: kfp.Client, tmp_path: Path
) -> None:
    """A 6-field cron (with seconds) fires on every even second. With max_concurrency=1 and
    runs longer than the 1 s interval, slots are missed: by default the next run catches up
    on the very next slot; with ``no_catchup`` it skips to now."""
    client = kfp_client
    package = compile_to(napper, tmp_path / "napper.yaml")
    exp = await call(client.create_experiment, unique("schedules"))
    common = {"experiment_id": exp.experiment_id, "pipeline_package_path": package}
    cron = await call(
        client.create_recurring_run,
        job_name="cron-2s",
        cron_expression="*/2 * * * * *",
        params={"seconds": 0.0},
        max_concurrency=10,
        **common,
    )
    catchup = await call(
        client.create_recurring_run,
        job_name="catchup",
        interval_second=1,
        params={"seconds": 2.5},
        **common,
    )
    no_catchup = await call(
        client.create_recurring_run,
        job_name="no-catchup",
        interval_second=1,
        params={"seconds": 2.5},
        no_catchup=True,
        **common,
    )
    assert (await call(client.get_recurring_run, no_catchup.recurring_run_id)).no_catchup is True
    started = time.monotonic()
    by_job: dict[str, list[Any]] = {}
    while time.monotonic() - started < 30:
        runs = (
            await call(client.list_runs, experiment_id=exp.experiment_id, page_size=100)
        ).runs or []
        by_job = {}
        for r in runs:
            by_job.setdefault(r.recurring_run_id, []).append(r)
        if all(len(by_job.get(j.recurring_run_id, [])) >= 2 for j in (catchup, no_catchup)):
            break
        await asyncio.sleep(0.3)
    for job in (cron, catchup, no_catchup):
        await call(client.disable_recurring_run, job.recurring_run_id)
    elapsed = time.monotonic() - started

    cron_slots = sorted(slot_of(r) for r in by_job.get(cron.recurring_run_id, []))
    assert 2 <= len(cron_slots) <= int(elapsed / 2) + 2, cron_slots
    assert len(set(cron_slots)) == len(cron_slots)
    assert all(s.second % 2 == 0 for s in cron_slots), cron_slots
    caught = sorted(slot_of(r) for r in by_job[catchup.recurring_run_id])[:2]
    assert (caught[1] - caught[0]).total_seconds() == 1, caught  # the missed slot, late
    skipped = sorted(slot_of(r) for r in by_job[no_catchup.recurring_run_id])[:2]
    assert (skipped[1] - skipped[0]).total_seconds() >= 2, skipped  # missed slots skipped
    jobs = await call(client.list_recurring_runs, experiment_id=exp.experiment_id)
    assert {j.status for j in jobs.recurring_runs} == {"DISABLED"}
