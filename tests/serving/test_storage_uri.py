"""storageUri from object storage and HTTP: the model cache against a real SeaweedFS and a real
HTTP server, admission through the platform's API, and one model served end to end from s3://."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import stat
import tarfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.common.fetch import AddressRefused, AllowedHosts
from services.common.objectstore import ObjectStore
from services.common.runtime import LocalRuntime
from services.common.settings import SINGLE_USER_NAMESPACE as NS
from services.serving.modelcache import (
    CACHE_CLAIM,
    DownloadPolicy,
    ModelCache,
    ModelPending,
    ModelSourceError,
)
from services.serving.unpack import SizeLimitExceeded, UnpackError
from tests.conftest import crash_service, start_service_again

from .conftest import ISVC_PATH, isvc, predict, ready, train_sklearn, wait_isvc

OTHER_NS = "someone-else"


# ----------------------------------------------------------------------------- fixtures
class ModelHTTPServer:
    """A real loopback HTTP server with files, ETags and a request counter."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, str | None]] = {}
        self.requests: Counter[tuple[str, str]] = Counter()
        #: Paths whose GET waits (bounded) until released: a download in progress.
        self.gates: dict[str, threading.Event] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, body: bool) -> None:
                server.requests[(self.command, self.path)] += 1
                found = server.files.get(self.path)
                if found is None:
                    self.send_error(404)
                    return
                data, content_type, etag = found
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                if etag:
                    self.send_header("ETag", f'"{etag}"')
                self.end_headers()
                if body:
                    gate = server.gates.get(self.path)
                    if gate is not None:
                        gate.wait(timeout=60)
                    self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, data: bytes, content_type: str, etag: bool = True) -> str:
        tag = hashlib.sha256(data).hexdigest()[:16] if etag else None
        self.files[path] = (data, content_type, tag)
        return self.url(path)

    def gate(self, path: str) -> None:
        self.gates[path] = threading.Event()

    def release(self, path: str) -> None:
        if path in self.gates:
            self.gates[path].set()

    def gets(self, path: str) -> int:
        return self.requests[("GET", path)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def http_server() -> Iterator[ModelHTTPServer]:
    server = ModelHTTPServer()
    yield server
    server.close()


@pytest.fixture
async def store(seaweedfs: Any) -> AsyncIterator[ObjectStore]:
    async with ObjectStore(seaweedfs.config) as opened:
        yield opened


@pytest.fixture
def runtime(tmp_path: Path) -> LocalRuntime:
    return LocalRuntime(tmp_path / "runtime")


def make_cache(
    runtime: LocalRuntime, store: ObjectStore, *, allow_loopback: bool = True, **policy: Any
) -> ModelCache:
    async def objects() -> ObjectStore:
        return store

    allowed = AllowedHosts.parse("127.0.0.1" if allow_loopback else "")
    return ModelCache(
        runtime, objects, store.bucket, DownloadPolicy(allowed_hosts=allowed, **policy)
    )


async def put(store: ObjectStore, key: str, data: bytes) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    await store.put_stream(key, chunks())


async def cache_root(runtime: LocalRuntime, namespace: str = NS) -> Path:
    return await runtime.resolve_volume(namespace, CACHE_CLAIM)


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def unique(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


def tar_gz(members: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink is not None:
            link = tarfile.TarInfo(symlink)
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            tar.addfile(link)
    return buf.getvalue()


# ----------------------------------------------------------------------------- s3://
async def test_fetch_s3_prefix_model_into_cache(runtime: LocalRuntime, store: ObjectStore) -> None:
    base = f"models/{NS}/{unique('prefix')}"
    await put(store, f"{base}/model.joblib", b"weights-1")
    await put(store, f"{base}/sub/vocab.txt", b"a b c")
    await put(store, f"{base}-other/model.joblib", b"not mine")  # a sibling, not below
    cache = make_cache(runtime, store)
    uri = f"s3://{store.bucket}/{base}"

    model = await cache.fetch(NS, uri)

    assert model.claim == CACHE_CLAIM and model.file is None
    root = await cache_root(runtime)
    assert tree(root / model.sub_path) == {"model.joblib": b"weights-1", "sub/vocab.txt": b"a b c"}
    assert cache.downloads == 1
    # Found again (same keys and ETags): no download, by this cache or by a fresh one (a
    # restarted serving service, another replica of it).
    assert await cache.fetch(NS, uri) == model
    again = make_cache(runtime, store)
    assert await again.fetch(NS, uri) == model
    assert cache.downloads == 1 and again.downloads == 0
    # A changed object is a new version, downloaded beside the old one.
    await put(store, f"{base}/model.joblib", b"weights-2")
    changed = await cache.fetch(NS, uri)
    assert changed.sub_path != model.sub_path and cache.downloads == 2
    assert (root / changed.sub_path / "model.joblib").read_bytes() == b"weights-2"
    assert not [p for p in (root / model.sub_path).parent.iterdir() if p.name.startswith(".")]


async def test_fetch_s3_single_object(runtime: LocalRuntime, store: ObjectStore) -> None:
    key = f"models/{NS}/{unique('single')}/iris.joblib"
    await put(store, key, b"one file")
    cache = make_cache(runtime, store)

    model = await cache.fetch(NS, f"s3://{store.bucket}/{key}")

    assert model.file == "iris.joblib"
    assert tree((await cache_root(runtime)) / model.sub_path) == {"iris.joblib": b"one file"}


async def test_fetch_s3_single_archive_unpacked(runtime: LocalRuntime, store: ObjectStore) -> None:
    key = f"v2/artifacts/{NS}/{unique('run')}/model.tgz"
    await put(store, key, tar_gz({"model/model.joblib": b"packed"}))
    cache = make_cache(runtime, store)

    model = await cache.fetch(NS, f"s3://{store.bucket}/{key}")

    assert model.file is None
    assert tree((await cache_root(runtime)) / model.sub_path) == {"model/model.joblib": b"packed"}


@pytest.mark.parametrize(
    "uri",
    [
        "s3://other-bucket/models/{ns}/m",
        "s3://{bucket}/models/{other}/m",
        "s3://{bucket}/models/{ns}/../{other}/m",
        "s3://{bucket}/secrets/m",
    ],
)
async def test_fetch_s3_outside_namespace_refused(
    runtime: LocalRuntime, store: ObjectStore, uri: str
) -> None:
    await put(store, f"models/{OTHER_NS}/m/model.joblib", b"theirs")
    cache = make_cache(runtime, store)
    with pytest.raises(ModelSourceError, match=f"models/{NS}/"):
        await cache.fetch(NS, uri.format(ns=NS, other=OTHER_NS, bucket=store.bucket))
    assert cache.downloads == 0


async def test_fetch_s3_missing_prefix_says_so(runtime: LocalRuntime, store: ObjectStore) -> None:
    cache = make_cache(runtime, store)
    with pytest.raises(ModelSourceError, match="no model found"):
        await cache.fetch(NS, f"s3://{store.bucket}/models/{NS}/{unique('absent')}")


# ----------------------------------------------------------------------------- http(s)://
async def test_fetch_http_tar_gz_unpacked_and_cached(
    runtime: LocalRuntime, store: ObjectStore, http_server: ModelHTTPServer
) -> None:
    path = f"/{unique('m')}/model.tar.gz"
    archive = tar_gz({"model.joblib": b"from http", "meta/info.json": b"{}"})
    uri = http_server.serve(path, archive, "application/gzip")
    cache = make_cache(runtime, store)

    model = await cache.fetch(NS, uri)

    root = await cache_root(runtime)
    assert tree(root / model.sub_path) == {"model.joblib": b"from http", "meta/info.json": b"{}"}
    assert [p.name for p in (root / model.sub_path).parent.iterdir()] == [
        model.sub_path.split("/")[1]
    ]  # the archive and the partial directory are gone
    assert http_server.gets(path) == 1
    # Cached by URI and ETag: a HEAD, no second GET (also from a fresh cache: a restart).
    assert await cache.fetch(NS, uri) == model
    assert await make_cache(runtime, store).fetch(NS, uri) == model
    assert http_server.gets(path) == 1 and http_server.requests[("HEAD", path)] == 3


async def test_fetch_http_single_file_and_zip(
    runtime: LocalRuntime, store: ObjectStore, http_server: ModelHTTPServer
) -> None:
    cache = make_cache(runtime, store)
    one = await cache.fetch(
        NS, http_server.serve(f"/{unique('f')}/model.joblib", b"plain", "application/octet-stream")
    )
    assert one.file == "model.joblib"
    root = await cache_root(runtime)
    assert tree(root / one.sub_path) == {"model.joblib": b"plain"}

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model.joblib", b"zipped")
    zipped = await cache.fetch(
        NS, http_server.serve(f"/{unique('z')}/m.zip", buf.getvalue(), "application/zip")
    )
    assert zipped.file is None
    assert tree(root / zipped.sub_path) == {"model.joblib": b"zipped"}


async def test_fetch_http_wrong_content_type_refused(
    runtime: LocalRuntime, store: ObjectStore, http_server: ModelHTTPServer
) -> None:
    uri = http_server.serve(f"/{unique('t')}/model.joblib", b"<html>", "text/html")
    with pytest.raises(ModelSourceError, match="application/octet-stream"):
        await make_cache(runtime, store).fetch(NS, uri)


async def test_fetch_http_loopback_refused_without_allow_setting(
    runtime: LocalRuntime, store: ObjectStore, http_server: ModelHTTPServer
) -> None:
    path = f"/{unique('ssrf')}/model.joblib"
    uri = http_server.serve(path, b"x", "application/octet-stream")
    cache = make_cache(runtime, store, allow_loopback=False)
    with pytest.raises(AddressRefused, match="loopback"):
        await cache.fetch(NS, uri)
    # A name resolving to loopback is refused just the same, and so is link-local metadata.
    with pytest.raises(AddressRefused, match="loopback"):
        await cache.fetch(NS, uri.replace("127.0.0.1", "localhost"))
    with pytest.raises(AddressRefused, match="link-local"):
        await cache.fetch(NS, "http://169.254.169.254/latest/meta-data/model.joblib")
    assert http_server.requests[("HEAD", path)] == http_server.gets(path) == 0


async def test_fetch_http_archive_escaping_member_refused(
    runtime: LocalRuntime, store: ObjectStore, http_server: ModelHTTPServer, tmp_path: Path
) -> None:
    cache = make_cache(runtime, store)
    for members, symlink, why in (
        ({"../escaped.txt": b"out"}, None, r"'\.\.'"),
        ({"/abs.txt": b"out"}, None, "relative"),
        ({"model.joblib": b"in"}, "link", "link"),
    ):
        uri = http_server.serve(
            f"/{unique('evil')}/model.tar.gz", tar_gz(members, symlink=symlink), "application/gzip"
        )
        with pytest.raises(UnpackError, match=why):
            await cache.fetch(NS, uri)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        link = zipfile.ZipInfo("model.joblib")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/shadow")
    uri = http_server.serve(f"/{unique('evil')}/m.zip", buf.getvalue(), "application/zip")
    with pytest.raises(UnpackError, match="not a plain file"):
        await cache.fetch(NS, uri)
    root = await cache_root(runtime)
    assert not (root.parent / "escaped.txt").exists() and not (root / "escaped.txt").exists()
    leftovers = [p for p in root.rglob("*") if p.is_file()]
    assert leftovers == []  # nothing half-unpacked looks like a model


async def test_fetch_http_size_limit(
    runtime: LocalRuntime, store: ObjectStore, http_server: ModelHTTPServer
) -> None:
    cache = make_cache(runtime, store, max_bytes=1000)
    big = http_server.serve(
        f"/{unique('big')}/model.joblib", b"0" * 5000, "application/octet-stream"
    )
    with pytest.raises(ModelSourceError, match="download limit"):
        await cache.fetch(NS, big)
    # A small archive that inflates beyond the limit stops while unpacking.
    bomb = http_server.serve(
        f"/{unique('bomb')}/model.tar.gz", tar_gz({"zeros": b"\0" * 200_000}), "application/gzip"
    )
    with pytest.raises(SizeLimitExceeded):
        await cache.fetch(NS, bomb)


# ----------------------------------------------------------------------------- resolve()
async def test_resolve_reports_pending_then_ready_and_failure(
    runtime: LocalRuntime, store: ObjectStore
) -> None:
    key = f"models/{NS}/{unique('bg')}/model.joblib"
    await put(store, key, b"bg")
    cache = make_cache(runtime, store)
    cache.inline_wait = 0.0
    uri = f"s3://{store.bucket}/{key}"
    with pytest.raises(ModelPending, match="downloading the model"):
        await cache.resolve(NS, uri, "rev1")
    deadline = time.monotonic() + 30
    while True:
        try:
            model = await cache.resolve(NS, uri, "rev1")
            break
        except ModelPending:
            assert time.monotonic() < deadline, "the download never finished"
            await asyncio.sleep(0.05)
    assert model.file == "model.joblib"

    missing = f"s3://{store.bucket}/models/{NS}/{unique('none')}"
    with pytest.raises((ModelPending, ModelSourceError)):
        await cache.resolve(NS, missing)
    deadline = time.monotonic() + 30
    while True:
        try:
            await cache.resolve(NS, missing)
        except ModelPending:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        except ModelSourceError as exc:
            assert "no model found" in str(exc)
            break


async def test_stale_partial_download_is_never_used(
    runtime: LocalRuntime, store: ObjectStore
) -> None:
    """A download killed mid-way leaves only a ``.partial-*`` directory: never taken for the
    model, and removed by the next download of that URI once it is old."""
    key = f"models/{NS}/{unique('killed')}"
    await put(store, f"{key}/model.joblib", b"whole")
    cache = make_cache(runtime, store)
    uri = f"s3://{store.bucket}/{key}"
    model = await cache.fetch(NS, uri)
    root = await cache_root(runtime)
    by_uri = root / model.sub_path.split("/")[0]
    version = root / model.sub_path
    os.rename(version, by_uri / ".partial-killed")  # as if the rename never happened
    (by_uri / ".partial-killed" / "model.joblib").write_bytes(b"wh")
    old = time.time() - 7200
    os.utime(by_uri / ".partial-killed", (old, old))

    again = await make_cache(runtime, store).fetch(NS, uri)

    assert again == model and (version / "model.joblib").read_bytes() == b"whole"
    assert not (by_uri / ".partial-killed").exists()


# ----------------------------------------------------------------------------- admission
@pytest.mark.parametrize(
    ("storage_uri", "field", "words"),
    [
        ("s3://other-bucket/models/{ns}/m", "spec.predictor.model.storageUri", "models/{ns}/"),
        ("s3://mlpipeline/models/{other}/m", "spec.predictor.model.storageUri", "models/{ns}/"),
        ("s3://mlpipeline/models/{ns}/../x/m", "spec.predictor.model.storageUri", "models/{ns}/"),
        ("gs://bucket/model", "spec.predictor.model.storageUri", "s3://"),
        ("hf://org/model", "spec.predictor.model.storageUri", "http(s)://"),
        ("http://127.0.0.1:1/model.joblib", "spec.predictor.model.storageUri", "loopback"),
        ("http://example.com/", "spec.predictor.model.storageUri", "names no file"),
    ],
)
def test_create_inferenceservice_storage_uri_422(
    api: httpx.Client, storage_uri: str, field: str, words: str
) -> None:
    uri = storage_uri.format(ns=NS, other=OTHER_NS)
    body = isvc("refused", {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}})
    r = api.post(ISVC_PATH, json=body)
    assert r.status_code == 422, r.text
    causes = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
    assert field in causes, causes
    assert words.format(ns=NS) in causes[field], causes


def test_create_inferenceservice_s3_bucket_rules_422(api: httpx.Client) -> None:
    """Without serviceAccountName an s3:// model comes from the platform's bucket (the field
    path of the framework block is named); with one, any bucket passes admission (the
    Secret says where it is: tests/serving/test_s3_credentials.py)."""
    body = isvc("other", {"sklearn": {"storageUri": "s3://else/models/m"}})
    r = api.post(ISVC_PATH, json=body)
    causes = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
    assert set(causes) == {"spec.predictor.sklearn.storageUri"}
    assert "serviceAccountName" in causes["spec.predictor.sklearn.storageUri"]
    body = isvc(
        "other-bucket",
        {"sklearn": {"storageUri": "s3://else/models/m"}, "serviceAccountName": "s3-reader"},
    )
    r = api.post(ISVC_PATH, json=body)
    assert r.status_code == 201, r.text
    api.delete(f"{ISVC_PATH}/other-bucket")


# ----------------------------------------------------------------------------- end to end
SAMPLES = [[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0], [6.1, 2.9, 4.6, 1.4]]


def test_inferenceservice_from_s3_ready_and_infers(
    api: httpx.Client, platform: Any, seaweedfs: Any, tmp_path: Path
) -> None:
    """A model uploaded to the platform's bucket is served from ``s3://`` and answers V2 with
    its own predictions; a missing one reports why."""
    model = train_sklearn(tmp_path / "iris")
    prefix = f"models/{NS}/{unique('iris')}"

    async def upload() -> None:
        async with ObjectStore(seaweedfs.config) as store:
            data = (tmp_path / "iris" / "model.joblib").read_bytes()
            await put(store, f"{prefix}/model.joblib", data)

    asyncio.run(upload())
    uri = f"s3://{seaweedfs.config.bucket}/{prefix}"
    body = isvc(
        "iris-s3",
        {"model": {"modelFormat": {"name": "sklearn"}, "protocolVersion": "v2", "storageUri": uri}},
    )
    r = api.post(ISVC_PATH, json=body)
    assert r.status_code == 201, r.text
    try:
        obj = wait_isvc(api, "iris-s3", ready, timeout=90)
        assert obj["status"]["modelStatus"]["states"]["activeModelState"] == "Loaded"
        x = np.array(SAMPLES, dtype=np.float64)
        answer = predict(
            api,
            f"/serving/{NS}/iris-s3/v2/models/iris-s3/infer",
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": list(x.shape),
                        "datatype": "FP64",
                        "data": x.ravel().tolist(),
                    }
                ]
            },
        )
        assert answer["outputs"][0]["data"] == model.predict(x).tolist()
        # The model came through the namespace's cache volume, written by the serving service.
        cache = asyncio.run(LocalRuntime(platform.state_dir).resolve_volume(NS, CACHE_CLAIM))
        assert any(p.name == "model.joblib" for p in cache.rglob("model.joblib"))
    finally:
        api.delete(f"{ISVC_PATH}/iris-s3")

    missing = isvc(
        "iris-missing",
        {
            "model": {
                "modelFormat": {"name": "sklearn"},
                "storageUri": f"s3://{seaweedfs.config.bucket}/models/{NS}/{unique('nothing')}",
            }
        },
    )
    assert api.post(ISVC_PATH, json=missing).status_code == 201

    def failed(obj: dict[str, Any]) -> bool:
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(
            c["type"] == "Ready"
            and c["status"] == "False"
            and "no model found" in c.get("message", "")
            for c in conds
        )

    try:
        obj = wait_isvc(api, "iris-missing", failed, timeout=60)
        ready_cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert ready_cond["reason"] == "RevisionFailed"
    finally:
        api.delete(f"{ISVC_PATH}/iris-missing")


def test_inferenceservice_from_http_downloading_status_and_restart_no_second_download(
    api: httpx.Client, platform: Any, http_server: ModelHTTPServer, tmp_path: Path
) -> None:
    """A .tar.gz model over HTTP: the status says it is downloading while the server holds the
    body back; then Ready with the model's predictions. A restarted serving service starting a
    new server for it finds the download in the cache (a HEAD, no second GET)."""
    model = train_sklearn(tmp_path / "m")
    archive = tar_gz({"model.joblib": (tmp_path / "m" / "model.joblib").read_bytes()})
    path = f"/{unique('gated')}/model.tar.gz"
    uri = http_server.serve(path, archive, "application/gzip")
    http_server.gate(path)
    serving = crash_service(platform, "serving")
    original_env = dict(serving.env)
    serving.env = {**original_env, "SHIPYARD_MODEL_DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1"}
    start_service_again(serving)
    name = "iris-http"
    try:
        body = isvc(name, {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}})
        r = api.post(ISVC_PATH, json=body)
        assert r.status_code == 201, r.text

        def downloading(obj: dict[str, Any]) -> bool:
            conds = (obj.get("status") or {}).get("conditions") or []
            return any(
                c["type"] == "Ready"
                and c.get("reason") == "ModelDownloading"
                and uri in c["message"]
                for c in conds
            )

        obj = wait_isvc(api, name, downloading, timeout=60)
        assert obj["status"]["modelStatus"]["states"]["targetModelState"] == "Pending"
        http_server.release(path)
        obj = wait_isvc(api, name, ready, timeout=90)
        assert obj["status"]["components"]["predictor"]["latestCreatedRevision"].endswith("1")
        url = f"/serving/{NS}/{name}/v1/models/{name}:predict"
        expected = model.predict(np.array(SAMPLES)).tolist()
        assert predict(api, url, {"instances": SAMPLES}) == {"predictions": expected}
        assert http_server.gets(path) == 1

        # A crash, and the model server gone meanwhile: the restarted service starts a new
        # revision, and finds the model in the cache by its ETag.
        serving = crash_service(platform, "serving")
        asyncio.run(LocalRuntime(platform.state_dir).delete(NS, f"isvc-{name}-1"))
        heads = http_server.requests[("HEAD", path)]
        start_service_again(serving)

        def new_revision_ready(obj: dict[str, Any]) -> bool:
            pred = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
            return ready(obj) and pred.get("latestReadyRevision") == f"{name}-predictor-00002"

        wait_isvc(api, name, new_revision_ready, timeout=90)
        assert predict(api, url, {"instances": SAMPLES}) == {"predictions": expected}
        assert http_server.gets(path) == 1
        assert http_server.requests[("HEAD", path)] > heads
    finally:
        http_server.release(path)
        api.delete(f"{ISVC_PATH}/{name}")
        serving = crash_service(platform, "serving")
        serving.env = original_env
        start_service_again(serving)
