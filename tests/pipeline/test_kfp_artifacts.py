"""KFP artifacts in the object store, end to end with the real kfp client (issue 11).

A run's Dataset is an object under ``pipeline_root`` in the platform's bucket, the v2beta1
artifact API lists its ``s3://`` uri and signs a ``download_url`` that returns its bytes;
``dsl.importer`` imports an object of the namespace, and a ``pipeline_root`` outside the
namespace's area fails the task with a message that says where roots may be.
"""

import time
from typing import Any

import httpx
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from services.common.objectstore import ObjectStore
from tests.pipeline.conftest import Gateway, call, unique

FINAL = ("SUCCEEDED", "FAILED", "CANCELED")


@dsl.component(base_image="python:3.11")
def write_rows(rows: int, out: Output[Dataset]) -> None:
    with open(out.path, "w") as f:
        f.write("".join(f"row-{i}\n" for i in range(rows)))
    out.metadata["rows"] = rows


@dsl.component(base_image="python:3.11")
def count_rows(data: Input[Dataset]) -> str:
    return f"{len(open(data.path).read().splitlines())} {data.uri}"


@dsl.pipeline(name="rows")
def rows_pipeline(rows: int = 3) -> None:
    written = write_rows(rows=rows).set_caching_options(False)
    count_rows(data=written.outputs["out"]).set_caching_options(False)


@dsl.pipeline(name="imports")
def import_pipeline(uri: str) -> None:
    imported = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=False)
    count_rows(data=imported.output).set_caching_options(False)


async def _run(kfp_client: Any, func: Any, args: dict[str, Any], **kw: Any) -> Any:
    run = await call(
        kfp_client.create_run_from_pipeline_func,
        func,
        arguments=args,
        run_name=unique("art"),
        **kw,
    )
    deadline = time.monotonic() + 120
    while True:
        got = await call(kfp_client.get_run, run.run_id)
        if got.state in FINAL:
            return got
        assert time.monotonic() < deadline, f"run still {got.state}"
        await call(time.sleep, 0.3)


async def _workflow(gateway: Gateway, run: Any) -> dict[str, Any]:
    async with gateway.client(gateway.namespace) as c:
        wf = await c.get(
            f"/apis/argoproj.io/v1alpha1/namespaces/{gateway.namespace}/workflows/kfp-{run.run_id}"
        )
    return dict(wf.json())


async def _messages(gateway: Gateway, run: Any) -> str:
    wf = await _workflow(gateway, run)
    return " | ".join(n.get("message") or "" for n in wf["status"]["nodes"].values())


async def _task_output(gateway: Gateway, run: Any, task: str) -> str:
    """The ``Output`` parameter of the run's pod for ``task`` (from its Workflow)."""
    wf = await _workflow(gateway, run)
    for node in wf["status"]["nodes"].values():
        if node["displayName"] == task and node["type"] == "Pod":
            params = (node.get("outputs") or {}).get("parameters") or []
            return next((str(p["value"]) for p in params if p["name"] == "Output"), "")
    raise AssertionError(f"no pod for task {task}: {wf['status']}")


async def test_dataset_in_bucket_listed_and_downloadable(
    gateway: Gateway, kfp_client: Any, seaweedfs: Any
) -> None:
    run = await _run(kfp_client, rows_pipeline, {"rows": 4})
    assert run.state == "SUCCEEDED", run.error
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as c:
        listed = (
            await c.get(
                "/apis/v2beta1/artifacts",
                params={"namespace": gateway.namespace, "page_size": 100},
            )
        ).json()
        mine = [a for a in listed.get("artifacts", []) if run.run_id in a["uri"]]
        assert len(mine) == 1, listed
        art = mine[0]
        assert art["uri"].startswith(f"s3://{seaweedfs.config.bucket}/v2/artifacts/")
        assert f"/{gateway.namespace}/" in art["uri"]
        got = (
            await c.get(
                f"/apis/v2beta1/artifacts/{art['artifact_id']}", params={"view": "DOWNLOAD"}
            )
        ).json()
    async with httpx.AsyncClient(timeout=30) as plain:
        body = (await plain.get(got["download_url"])).content
    assert body == b"".join(f"row-{i}\n".encode() for i in range(4))
    key = art["uri"].split("/", 3)[3]
    async with ObjectStore(seaweedfs.config) as store:
        assert (await store.head(key)).size == len(body)
    # The consumer read the same object, by its s3:// uri, at the SDK's local path.
    assert await _task_output(gateway, run, "count-rows") == f"4 {art['uri']}"


async def test_importer_reads_an_object_of_the_namespace(
    gateway: Gateway, kfp_client: Any, seaweedfs: Any
) -> None:
    key = f"models/{gateway.namespace}/{unique('imp')}/data.txt"
    async with ObjectStore(seaweedfs.config) as store:

        async def body() -> Any:
            yield b"a\nb\n"

        await store.put_stream(key, body())
    uri = f"s3://{seaweedfs.config.bucket}/{key}"
    run = await _run(kfp_client, import_pipeline, {"uri": uri})
    assert run.state == "SUCCEEDED", run.error
    assert await _task_output(gateway, run, "count-rows") == f"2 {uri}"
    refused = await _run(
        kfp_client,
        import_pipeline,
        {"uri": f"s3://{seaweedfs.config.bucket}/models/another-team/data.txt"},
    )
    assert refused.state == "FAILED"
    assert "outside namespace" in await _messages(gateway, refused)


async def test_pipeline_root_is_honoured_inside_the_area_only(
    gateway: Gateway, kfp_client: Any, seaweedfs: Any
) -> None:
    bucket = seaweedfs.config.bucket
    root = f"s3://{bucket}/models/{gateway.namespace}/{unique('root')}"
    run = await _run(kfp_client, rows_pipeline, {"rows": 2}, pipeline_root=root)
    assert run.state == "SUCCEEDED", run.error
    assert (await _task_output(gateway, run, "count-rows")).startswith(f"2 {root}/{run.run_id}/")
    outside = await _run(kfp_client, rows_pipeline, {"rows": 2}, pipeline_root=f"s3://{bucket}/x")
    assert outside.state == "FAILED"
    assert "pipeline_root" in await _messages(gateway, outside)
