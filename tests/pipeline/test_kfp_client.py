"""kfp.Client (the real SDK, unchanged) against the KFP v2beta1 API of a real pipeline service.

The service is called directly, not through the gateway: kfp's own context file
(``Client._LOCAL_KFP_CONTEXT``) supplies the gateway's identity-assertion header, which is
exactly what the gateway would add to each forwarded request.
"""

import asyncio
import json
import time
from pathlib import Path

import httpx
import kfp
import pytest
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Output

from services.common.identity import ASSERTION_HEADER
from tests.pipeline.conftest import PipelineService


@dsl.component(base_image="python:3.11")
def make(n: int, word: str) -> str:
    return word * n


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
def nap(seconds: float) -> None:
    import time

    time.sleep(seconds)


@dsl.pipeline(name="napper")
def napper(seconds: float = 1.5) -> None:
    nap(seconds=seconds).set_caching_options(False)


@pytest.fixture
def kfp_client(pipeline: PipelineService, namespace: str, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> kfp.Client:
    pipeline.minter.signer.ttl_seconds = 3600
    token = pipeline.headers(namespace)[ASSERTION_HEADER]
    context = tmp_path / "kfp-context.json"
    context.write_text(json.dumps({"namespace": namespace,
                                   "client_authentication_header_name": ASSERTION_HEADER,
                                   "client_authentication_header_value": token}))
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(context))
    return kfp.Client(host=pipeline.url, namespace=namespace)


def compile_to(func, path: Path) -> str:  # noqa: ANN001 - a kfp pipeline function
    compiler.Compiler().compile(func, str(path))
    return str(path)


async def test_kfp_client_upload_run_recurring_archive(pipeline: PipelineService, namespace: str,
                                                       kfp_client: kfp.Client,
                                                       tmp_path: Path) -> None:
    client = kfp_client
    package = compile_to(three_steps, tmp_path / "three.yaml")
    uploaded = await asyncio.to_thread(client.upload_pipeline, package, "three-steps")
    assert uploaded.pipeline_id
    got = await asyncio.to_thread(client.get_pipeline_id, "three-steps")
    assert got == uploaded.pipeline_id

    result = await asyncio.to_thread(
        client.create_run_from_pipeline_package, package, arguments={"n": 3, "word": "xy"},
        run_name="first", experiment_name="exp-a")
    run = await asyncio.to_thread(client.wait_for_run_completion, result.run_id, 60, 0.2)
    assert run.state == "SUCCEEDED", run
    async with httpx.AsyncClient(base_url=pipeline.url, headers=pipeline.headers(namespace)) as c:
        runs = (await c.get("/apis/v2beta1/runs", params={"namespace": namespace})).json()
        wf_name = next(r for r in runs["runs"] if r["run_id"] == result.run_id)
        wf = (await c.get(f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows/"
                          f"kfp-{result.run_id}")).json()
        assert wf_name and wf["status"]["phase"] == "Succeeded"
        reads = [n for n in wf["status"]["nodes"].values() if n["displayName"] == "read"]
        assert reads[0]["outputs"]["parameters"] == [{"name": "Output", "value": "XYXYXY"}]
        health = (await c.get("/apis/v2beta1/healthz")).json()
        assert health["multi_user"] is False

    filtered = await asyncio.to_thread(
        client.list_runs, namespace=namespace,
        filter=json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                           "stringValue": "first"}]}))
    assert [r.run_id for r in filtered.runs] == [result.run_id]

    experiment = await asyncio.to_thread(client.get_experiment, experiment_name="exp-a",
                                         namespace=namespace)
    napping = compile_to(napper, tmp_path / "napper.yaml")
    recurring = await asyncio.to_thread(
        client.create_recurring_run, experiment_id=experiment.experiment_id,
        job_name="every-second", pipeline_package_path=napping, interval_second=1,
        max_concurrency=1)
    started = time.monotonic()
    max_active = 0
    seen: set[str] = set()
    while time.monotonic() - started < 6:
        page = await asyncio.to_thread(client.list_runs, experiment_id=experiment.experiment_id,
                                       page_size=100)
        mine = [r for r in page.runs or [] if r.recurring_run_id == recurring.recurring_run_id]
        seen |= {r.run_id for r in mine}
        active = [r for r in mine if r.state not in ("SUCCEEDED", "FAILED", "CANCELED")]
        max_active = max(max_active, len(active))
        await asyncio.sleep(0.2)
    assert len(seen) >= 2, "the recurring run did not fire repeatedly"
    assert max_active == 1, "max_concurrency=1 was exceeded"
    await asyncio.to_thread(client.disable_recurring_run, recurring.recurring_run_id)

    await asyncio.to_thread(client.archive_experiment, experiment.experiment_id)
    archived = await asyncio.to_thread(client.get_experiment,
                                       experiment_id=experiment.experiment_id)
    assert archived.storage_state == "ARCHIVED"
    again = await asyncio.to_thread(client.get_run, result.run_id)
    assert again.storage_state == "ARCHIVED"
    job = await asyncio.to_thread(client.get_recurring_run, recurring.recurring_run_id)
    assert job.status == "DISABLED"
