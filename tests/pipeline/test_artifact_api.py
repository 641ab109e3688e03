"""Artifact download against the real SeaweedFS: KFP's v2beta1 artifact API (records, paging,
signed download URLs that expire), the run's ``:read``, and the Argo Server's artifact
endpoints (a tar+gzip'd file, a raw file, a raw directory), with tenants kept apart.

The steps' upload path is not used here: each test puts its objects into the store, records
KFP artifacts with ``record_artifact`` and writes a finished Workflow (spec and status in one
transaction, so the controller only ever sees it finished), as the step collector would.
"""

from __future__ import annotations

import asyncio
import base64
import io
import tarfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from gateway import routes
from services.common.objectstore import ObjectStore
from services.pipeline.app import create_app
from services.pipeline.artifact_records import delete_run_artifacts, record_artifact
from services.pipeline.models import WORKFLOW
from services.pipeline.settings import Settings
from tests import specs
from tests.conftest import InProcessService, RunningSeaweedFS, own_service_fixture

service = own_service_fixture(create_app, Settings, "shipyard_test_art", object_store=True)


@pytest.fixture(scope="module")
async def store(seaweedfs: RunningSeaweedFS) -> AsyncIterator[ObjectStore]:
    async with ObjectStore(seaweedfs.config) as s:
        yield s


def _ns() -> str:
    return f"art-{uuid.uuid4().hex[:8]}"


def client(service: InProcessService, namespace: str | None, **kw: Any) -> httpx.AsyncClient:
    """The service as a person whose own namespace is ``namespace`` would reach it."""
    return httpx.AsyncClient(
        base_url=service.url, headers=service.headers(namespace, **kw), timeout=30
    )


async def put(store: ObjectStore, key: str, data: bytes) -> None:
    async def one() -> AsyncIterator[bytes]:
        yield data

    await store.put_stream(key, one())


def tgz_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def finished_workflow(
    service: InProcessService, namespace: str, nodes: dict[str, Any], name: str | None = None
) -> str:
    """A Succeeded Workflow with ``nodes`` as its status (one transaction: never run)."""
    ctx = service.app.state.ctx
    name = name or f"wf-{uuid.uuid4().hex[:6]}"
    wf = specs.workflow(
        name,
        [{"name": "main", "container": {"image": "a", "command": ["true"]}}],
    )
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"phase": "Succeeded", "startedAt": now, "finishedAt": now, "nodes": nodes}
    async with ctx.db.transaction() as s:
        await ctx.store.create(WORKFLOW, namespace, wf, session=s)
        await ctx.store.update_status(WORKFLOW, namespace, name, status, session=s)
    return name


def node(node_id: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": node_id,
        "name": node_id,
        "displayName": node_id,
        "type": "Pod",
        "phase": "Succeeded",
        "outputs": {"artifacts": outputs},
    }


async def record(service: InProcessService, namespace: str, run_id: str, i: int, uri: str) -> str:
    return await record_artifact(
        service.app.state.ctx.db,
        namespace=namespace,
        run_id=run_id,
        workflow="wf",
        node_id=f"node-{i}",
        task_name=f"task-{i}",
        name="dataset",
        uri=uri,
        artifact_type="system.Dataset",
        metadata={"i": i},
        size=5,
    )


# ------------------------------------------------------------------ records
async def test_record_artifact_idempotent(service: InProcessService) -> None:
    ns, run_id = _ns(), str(uuid.uuid4())
    uri = f"s3://mlpipeline/v2/artifacts/{ns}/p/{run_id}/t/dataset"
    first = await record(service, ns, run_id, 0, uri)
    again = await record(service, ns, run_id, 0, uri)
    racing = await asyncio.gather(*(record(service, ns, run_id, 1, uri) for _ in range(4)))
    assert first == again and first.isdigit()
    assert len(set(racing)) == 1 and racing[0] != first
    async with client(service, ns) as c:
        listed = (await c.get("/apis/v2beta1/artifacts", params={"namespace": ns})).json()
    assert listed["total_size"] == 2
    assert await delete_run_artifacts(service.app.state.ctx.db, run_id) == 2


# ------------------------------------------------------------------ KFP API
async def test_list_artifacts_namespace_and_paging(service: InProcessService) -> None:
    ns, other, run_id = _ns(), _ns(), str(uuid.uuid4())
    ids = [
        await record(service, ns, run_id, i, f"s3://mlpipeline/v2/artifacts/{ns}/p/r/t{i}/d")
        for i in range(5)
    ]
    await record(service, other, str(uuid.uuid4()), 0, f"s3://mlpipeline/v2/artifacts/{other}/x")
    seen: list[str] = []
    token = ""
    async with client(service, ns) as c:
        for _ in range(5):
            params = {"namespace": ns, "page_size": "2", **({"page_token": token} if token else {})}
            r = await c.get("/apis/v2beta1/artifacts", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["total_size"] == 5
            seen += [a["artifact_id"] for a in body["artifacts"]]
            token = body.get("next_page_token", "")
            if not token:
                break
        first = body["artifacts"][0] if body["artifacts"] else None
        newest = (
            await c.get("/apis/v2beta1/artifacts", params={"namespace": ns, "sort_by": "id desc"})
        ).json()
    assert seen == ids
    assert [a["artifact_id"] for a in newest["artifacts"]] == ids[::-1]
    assert first is not None and first["namespace"] == ns
    sample = newest["artifacts"][0]
    assert sample["uri"] == f"s3://mlpipeline/v2/artifacts/{ns}/p/r/t4/d"
    assert sample["storage_provider"] == "s3"
    assert sample["storage_path"] == f"v2/artifacts/{ns}/p/r/t4/d"
    assert sample["artifact_type"] == "system.Dataset"
    assert sample["artifact_size"] == "5"
    assert "download_url" not in sample


async def test_list_artifacts_other_namespace_forbidden(service: InProcessService) -> None:
    ns, other = _ns(), _ns()
    await record(service, ns, str(uuid.uuid4()), 0, f"s3://mlpipeline/v2/artifacts/{ns}/a")
    async with client(service, other) as c:
        r = await c.get("/apis/v2beta1/artifacts", params={"namespace": ns})
        own = await c.get("/apis/v2beta1/artifacts")  # no namespace: the caller's own
    assert r.status_code == 403, r.text
    assert r.json()["code"] == 7  # KFP's error shape: gRPC PERMISSION_DENIED
    assert own.status_code == 200 and own.json()["artifacts"] == []


async def stored_artifact(
    service: InProcessService,
    store: ObjectStore,
    namespace: str,
    key: str,
    data: bytes,
    run_id: str | None = None,
) -> str:
    """``data`` put at ``key`` and recorded as an artifact of ``namespace``'s run ``run_id``
    (a new one if None); its id."""
    await put(store, key, data)
    return await record(service, namespace, run_id or str(uuid.uuid4()), 0, store.uri(key))


async def download(service: InProcessService, namespace: str, art_id: str) -> httpx.Response:
    """GET the artifact with ``view=DOWNLOAD`` as a person whose namespace is ``namespace``."""
    async with client(service, namespace) as c:
        return await c.get(f"/apis/v2beta1/artifacts/{art_id}", params={"view": "DOWNLOAD"})


async def test_read_artifact_download_url(service: InProcessService, store: ObjectStore) -> None:
    ns, run_id = _ns(), str(uuid.uuid4())
    key = f"v2/artifacts/{ns}/pipe/{run_id}/make/dataset"
    art_id = await stored_artifact(service, store, ns, key, b"a,b\n1,2\n", run_id)
    async with client(service, ns) as c:
        basic = await c.get(f"/apis/v2beta1/artifacts/{art_id}")
    r = await download(service, ns, art_id)
    assert basic.status_code == 200 and "download_url" not in basic.json()
    assert r.status_code == 200, r.text
    url = r.json()["download_url"]
    async with httpx.AsyncClient(timeout=30) as plain:  # no credentials but the URL's
        got = await plain.get(url)
    assert got.status_code == 200 and got.content == b"a,b\n1,2\n"


async def test_download_url_expires(service: InProcessService, store: ObjectStore) -> None:
    ns = _ns()
    key = f"v2/artifacts/{ns}/pipe/run/t/model"
    art_id = await stored_artifact(service, store, ns, key, b"weights")
    settings = service.app.state.ctx.settings
    settings.artifact_url_expiry_seconds = 1
    try:
        r = await download(service, ns, art_id)
    finally:
        settings.artifact_url_expiry_seconds = 15
    url = r.json()["download_url"]
    assert "X-Amz-Expires=1" in url
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=30) as plain:
        while True:  # valid for a second, then refused (SigV4 expiry)
            got = await plain.get(url)
            if got.status_code == 403:
                break
            assert got.status_code == 200 and got.content == b"weights"
            assert time.monotonic() < deadline, "the download URL never expired"
            await asyncio.sleep(0.2)


async def secret_artifact(
    service: InProcessService, store: ObjectStore, namespace: str, *, stored_in: str
) -> str:
    """An artifact of ``namespace``'s whose object lies in ``stored_in``'s area; its id."""
    key = f"v2/artifacts/{stored_in}/pipe/run/t/secret"
    return await stored_artifact(service, store, namespace, key, b"secret")


async def test_read_artifact_other_namespace_refused(
    service: InProcessService, store: ObjectStore
) -> None:
    ns, other = _ns(), _ns()
    art_id = await secret_artifact(service, store, ns, stored_in=ns)
    r = await download(service, other, art_id)
    async with client(service, other) as c:
        missing = await c.get("/apis/v2beta1/artifacts/999999999")
        bad = await c.get("/apis/v2beta1/artifacts/not-a-number")
    assert r.status_code in (403, 404) and "download_url" not in r.text
    assert missing.status_code == 404 and bad.status_code == 404


async def test_download_url_refused_outside_namespace_area(
    service: InProcessService, store: ObjectStore
) -> None:
    """A record whose uri names another namespace's object gets no URL for it."""
    ns, victim = _ns(), _ns()
    art_id = await secret_artifact(service, store, ns, stored_in=victim)
    r = await download(service, ns, art_id)
    assert r.status_code == 404 and "download_url" not in r.text


async def test_read_run_artifact_from_store(service: InProcessService, store: ObjectStore) -> None:
    ns = _ns()
    packed = tgz_of("out.txt", b"hello")
    key = f"artifacts/{ns}/wfr/wfr-123/out.tgz"
    await put(store, key, packed)
    wf = await finished_workflow(
        service,
        ns,
        {
            "wfr-123": node(
                "wfr-123", [{"name": "out", "path": "/tmp/out.txt", "s3": {"key": key}}]
            ),
            "wfr-456": node(
                "wfr-456",
                [{"name": "out", "s3": {"key": f"artifacts/other-{ns}/x/y/out.tgz"}}],
            ),
        },
        name="wfr",
    )
    run_id = str(uuid.uuid4())
    await service.app.state.ctx.kfp_store.insert(
        "kfp_runs",
        id=run_id,
        namespace=ns,
        experiment_id=str(uuid.uuid4()),
        display_name="r",
        description="",
        storage_state="AVAILABLE",
        state="SUCCEEDED",
        workflow=wf,
        recurring_run_id="",
        body={},
        created_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
    )
    base = f"/apis/v2beta1/runs/{run_id}/nodes"
    async with client(service, ns) as c:
        r = await c.get(f"{base}/wfr-123/artifacts/out:read")
        outside = await c.get(f"{base}/wfr-456/artifacts/out:read")
        missing = await c.get(f"{base}/wfr-123/artifacts/nope:read")
    async with client(service, _ns()) as c:
        foreign = await c.get(f"{base}/wfr-123/artifacts/out:read")
    assert r.status_code == 200, r.text
    assert base64.b64decode(r.json()["data"]) == packed  # the object as stored, as KFP
    assert outside.status_code == 404
    assert missing.status_code == 404
    assert foreign.status_code == 403


# ----------------------------------------------------------------- Argo API
async def test_artifact_files_tgz_and_raw(service: InProcessService, store: ObjectStore) -> None:
    ns = _ns()
    packed = tgz_of("out.txt", b"packed text\n")
    big = bytes(range(256)) * (12 * 1024 * 4)  # 12 MiB: many chunks of the store's stream
    tgz_key = f"artifacts/{ns}/wfa/wfa-1/out.tgz"
    raw_key = f"artifacts/{ns}/wfa/wfa-1/model.bin"
    await put(store, tgz_key, packed)
    await put(store, raw_key, big)
    wf = await finished_workflow(
        service,
        ns,
        {
            "wfa-1": node(
                "wfa-1",
                [
                    {"name": "out", "path": "/tmp/out.txt", "s3": {"key": tgz_key}},
                    {
                        "name": "model",
                        "path": "/tmp/model.bin",
                        "archive": {"none": {}},
                        "s3": {"key": raw_key},
                    },
                ],
            )
            | {"inputs": {"artifacts": [{"name": "seed", "raw": {"data": "42"}}]}}
        },
        name="wfa",
    )
    files = f"/artifact-files/{ns}/workflows/{wf}/wfa-1"
    async with client(service, ns) as c:
        r = await c.get(f"{files}/outputs/out")
        legacy = await c.get(f"/artifacts/{ns}/{wf}/wfa-1/out")
        seed = await c.get(f"/input-artifacts/{ns}/{wf}/wfa-1/seed")
        chunks = 0
        received = bytearray()
        async with c.stream("GET", f"{files}/outputs/model") as streamed:
            assert streamed.status_code == 200
            headers = streamed.headers
            async for chunk in streamed.aiter_raw():
                chunks += 1
                received += chunk
    assert r.status_code == 200, r.text
    assert r.content == packed  # stored as tar+gzip: served as the .tgz, as Argo's server
    assert r.headers["content-disposition"].startswith('filename="out.tgz"')
    assert r.headers["content-type"] == "application/gzip"
    assert "sandbox" in r.headers["content-security-policy"]
    assert legacy.status_code == 200 and legacy.content == packed
    assert seed.status_code == 200 and seed.text == "42"
    assert bytes(received) == big and chunks > 1
    assert headers["content-disposition"].startswith('filename="model.bin"')
    assert headers["content-length"] == str(len(big))


async def test_artifact_files_directory(service: InProcessService, store: ObjectStore) -> None:
    ns = _ns()
    prefix = f"artifacts/{ns}/wfd/wfd-1/report"
    await put(store, f"{prefix}/summary.txt", b"all good")
    await put(store, f"{prefix}/plots/a.png", b"\x89PNG")
    wf = await finished_workflow(
        service,
        ns,
        {
            "wfd-1": node(
                "wfd-1", [{"name": "report", "archive": {"none": {}}, "s3": {"key": prefix}}]
            )
        },
        name="wfd",
    )
    files = f"/artifact-files/{ns}/workflows/{wf}/wfd-1/outputs/report"
    async with client(service, ns) as c:
        moved = await c.get(files)
        listing = await c.get(files + "/")
        one = await c.get(files + "/plots/a.png")
        escape = await c.get(files + "/plots/%2E%2E/%2E%2E/x")
    assert moved.status_code == 307 and moved.headers["location"] == "report/"
    assert listing.status_code == 200
    assert 'href="./summary.txt"' in listing.text and 'href="./plots/"' in listing.text
    assert one.status_code == 200 and one.content == b"\x89PNG"
    assert one.headers["content-type"] == "image/png"
    assert escape.status_code in (400, 404)


async def test_artifact_files_tenancy(service: InProcessService, store: ObjectStore) -> None:
    ns, other = _ns(), _ns()
    victim_key = f"artifacts/{other}/wfv/wfv-1/secret.txt"
    await put(store, victim_key, b"secret")
    await put(store, f"artifacts/{ns}/wft/wft-1/out.txt", b"mine")
    wf = await finished_workflow(
        service,
        ns,
        {
            "wft-1": node(
                "wft-1",
                [
                    {"name": "mine", "s3": {"key": f"artifacts/{ns}/wft/wft-1/out.txt"}},
                    # a tenant-written status that points at another namespace's object
                    {"name": "stolen", "s3": {"key": victim_key}},
                    {"name": "elsewhere", "s3": {"key": "x", "bucket": "not-ours"}},
                ],
            )
        },
        name="wft",
    )
    files = f"/artifact-files/{ns}/workflows/{wf}/wft-1/outputs"
    async with client(service, ns) as c:
        mine = await c.get(f"{files}/mine")
        stolen = await c.get(f"{files}/stolen")
        elsewhere = await c.get(f"{files}/elsewhere")
        no_node = await c.get(f"/artifact-files/{ns}/workflows/{wf}/nope/outputs/mine")
    async with client(service, other) as c:
        foreign = await c.get(f"{files}/mine")
    assert mine.status_code == 200 and mine.content == b"mine"
    assert stolen.status_code == 404 and b"secret" not in stolen.content
    assert elsewhere.status_code == 404
    assert no_node.status_code == 404
    assert foreign.status_code == 403


def test_gateway_routes_artifact_paths_to_pipeline() -> None:
    for path in (
        "/artifact-files/team-a/workflows/wf/wf-1/outputs/out",
        "/artifacts/team-a/wf/wf-1/out",
        "/input-artifacts/team-a/wf/wf-1/in",
        "/apis/v2beta1/artifacts/12",
    ):
        match = routes.resolve(path)
        assert match is not None and match.target == "pipeline", path
        if not path.startswith("/apis/"):
            assert match.namespace == "team-a"


async def test_artifact_files_stream_with_flat_memory(
    service: InProcessService, store: ObjectStore
) -> None:
    """A 96 MiB artifact passes through the service (and this client) a chunk at a time."""
    import tracemalloc

    ns = _ns()
    key = f"artifacts/{ns}/wfm/wfm-1/big.bin"
    size = 96 * 1024 * 1024
    block = b"\x5a" * (1024 * 1024)

    async def blocks() -> AsyncIterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    await store.put_stream(key, blocks())
    wf = await finished_workflow(
        service,
        ns,
        {"wfm-1": node("wfm-1", [{"name": "big", "archive": {"none": {}}, "s3": {"key": key}}])},
        name="wfm",
    )
    received = 0
    tracemalloc.start()
    try:
        async with (
            client(service, ns) as c,
            c.stream("GET", f"/artifact-files/{ns}/workflows/{wf}/wfm-1/outputs/big") as r,
        ):
            assert r.status_code == 200
            async for chunk in r.aiter_raw():
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    assert peak < 24 * 1024 * 1024, f"peak {peak} bytes while streaming {size}"


async def test_artifacts_through_gateway(platform: Any, pg_url: str, store: ObjectStore) -> None:
    """The gateway routes both APIs to the pipeline service and streams the download."""
    from services.common.db import Database
    from services.common.events.outbox import stage_event
    from services.common.resources import ResourceStore
    from services.common.settings import SINGLE_USER_NAMESPACE
    from services.pipeline.tables import metadata

    ns = SINGLE_USER_NAMESPACE
    run_id = str(uuid.uuid4())
    kfp_key = f"v2/artifacts/{ns}/pipe/{run_id}/make/dataset"
    argo_key = f"artifacts/{ns}/wfg-{run_id[:6]}/pod/data.bin"
    data = bytes(range(256)) * 4096 * 3  # 3 MiB: more than the proxy relays whole
    await put(store, kfp_key, b"x,y\n")
    await put(store, argo_key, data)
    db = Database(pg_url, schema="pipeline")  # the platform's pipeline service's own schema
    try:
        art_id = await record_artifact(
            db,
            namespace=ns,
            run_id=run_id,
            workflow="wf",
            node_id="n",
            task_name="make",
            name="dataset",
            uri=store.uri(kfp_key),
            artifact_type="system.Dataset",
            metadata={},
            size=4,
        )
        resources = ResourceStore(
            db, metadata.tables, source="/shipyard/pipeline", stage_event=stage_event
        )
        name = f"wfg-{run_id[:6]}"
        wf = specs.workflow(
            name,
            [{"name": "main", "container": {"image": "a", "command": ["true"]}}],
        )
        status = {
            "phase": "Succeeded",
            "nodes": {
                "pod": node(
                    "pod", [{"name": "data", "archive": {"none": {}}, "s3": {"key": argo_key}}]
                )
            },
        }
        async with db.transaction() as s:
            await resources.create(WORKFLOW, ns, wf, session=s)
            await resources.update_status(WORKFLOW, ns, name, status, session=s)
    finally:
        await db.dispose()
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=60) as gw:
        listed = await gw.get(
            "/apis/v2beta1/artifacts",
            params={"namespace": ns, "page_size": 100, "sort_by": "id desc"},
        )
        one = await gw.get(f"/apis/v2beta1/artifacts/{art_id}", params={"view": "DOWNLOAD"})
        got = bytearray()
        async with gw.stream("GET", f"/artifact-files/{ns}/workflows/{name}/pod/outputs/data") as r:
            assert r.status_code == 200
            async for chunk in r.aiter_raw():
                got += chunk
        async with httpx.AsyncClient(timeout=30) as plain:
            downloaded = await plain.get(one.json()["download_url"])
    assert listed.status_code == 200, listed.text
    assert art_id in [a["artifact_id"] for a in listed.json()["artifacts"]]
    assert one.status_code == 200, one.text
    assert downloaded.content == b"x,y\n"
    assert bytes(got) == data
