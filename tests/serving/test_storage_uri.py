"""storageUri from object storage and HTTP: the model cache against a real SeaweedFS and a real
HTTP server, the storage initializer run on its plans (as the model server runs it), admission
through the platform's API, and models served end to end from s3:// and http://.

What the cache keeps is observed in the object store (the service writes no volume), and what
a server gets by running the plan it would be given."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
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
    MANIFEST,
    DownloadPolicy,
    ModelCache,
    ModelPending,
    ModelSourceError,
    StoredModel,
    cache_prefix,
    uri_digest,
)
from services.serving.modelserver.initializer import DONE_MARKER, StorageInitError, initialize
from services.serving.unpack import SizeLimitExceeded, UnpackError
from tests.conftest import crash_service, start_service_again

from .conftest import (
    ISVC_PATH,
    assert_v2_predicts,
    isvc,
    predict,
    ready,
    tar_gz,
    train_sklearn,
    wait_isvc,
)

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


def make_cache(store: ObjectStore, *, allow_loopback: bool = True, **policy: Any) -> ModelCache:
    async def objects() -> ObjectStore:
        return store

    allowed = AllowedHosts.parse("127.0.0.1" if allow_loopback else "")
    return ModelCache(objects, store.bucket, DownloadPolicy(allowed_hosts=allowed, **policy))


async def put(store: ObjectStore, key: str, data: bytes) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    await store.put_stream(key, chunks())


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != DONE_MARKER
    }


async def served(cache: ModelCache, model: StoredModel, dest: Path) -> dict[str, bytes]:
    """What a model server given ``model`` finds in /mnt/models: its plan run by the storage
    initializer (in a worker thread: it is synchronous, as in the server)."""
    plan = await cache.plan(model, str(dest), 600)

    def run() -> dict[str, bytes]:
        dest.mkdir(parents=True, exist_ok=True)
        initialize(plan)
        return tree(dest)

    return await asyncio.to_thread(run)


async def cached_keys(store: ObjectStore, uri: str, namespace: str = NS) -> list[str]:
    """The objects of ``uri``'s copies in the namespace's cache area of the bucket."""
    prefix = f"models/{namespace}/.cache/{uri_digest(uri)}/"
    return [info.key async for info in store.list(prefix)]


async def cache_listing(config: Any, uri: str) -> list[str]:
    async with ObjectStore(config) as store:
        return await cached_keys(store, uri)


def unique(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


# ----------------------------------------------------------------------------- s3://
async def test_fetch_s3_prefix_model_used_in_place(store: ObjectStore, tmp_path: Path) -> None:
    base = f"models/{NS}/{unique('prefix')}"
    await put(store, f"{base}/model.joblib", b"weights-1")
    await put(store, f"{base}/sub/vocab.txt", b"a b c")
    await put(store, f"{base}-other/model.joblib", b"not mine")  # a sibling, not below
    cache = make_cache(store)
    uri = f"s3://{store.bucket}/{base}"

    model = await cache.fetch(NS, uri)

    assert model.file is None
    assert {o.key for o in model.objects} == {f"{base}/model.joblib", f"{base}/sub/vocab.txt"}
    assert await served(cache, model, tmp_path / "one") == {
        "model.joblib": b"weights-1",
        "sub/vocab.txt": b"a b c",
    }
    # The platform's own bucket: nothing is copied, and a fresh cache (a restarted serving
    # service, another replica of it) finds the same model.
    assert cache.downloads == 0 and await cached_keys(store, uri) == []
    assert await make_cache(store).fetch(NS, uri) == model
    # A changed object is a new version. The old one's servers are pinned to what they were
    # given: a replica of the old revision started now is refused the changed bytes.
    await put(store, f"{base}/model.joblib", b"weights-2")
    changed = await cache.fetch(NS, uri)
    assert changed.version != model.version
    assert (await served(cache, changed, tmp_path / "two"))["model.joblib"] == b"weights-2"
    with pytest.raises(StorageInitError, match="changed in the store after this revision"):
        await served(cache, model, tmp_path / "old")


async def test_fetch_s3_single_object(store: ObjectStore, tmp_path: Path) -> None:
    key = f"models/{NS}/{unique('single')}/iris.joblib"
    await put(store, key, b"one file")
    cache = make_cache(store)

    model = await cache.fetch(NS, f"s3://{store.bucket}/{key}")

    assert model.file == "iris.joblib"
    assert await served(cache, model, tmp_path) == {"iris.joblib": b"one file"}


async def test_fetch_s3_single_archive_unpacked(store: ObjectStore, tmp_path: Path) -> None:
    key = f"v2/artifacts/{NS}/{unique('run')}/model.tgz"
    await put(store, key, tar_gz({"model/model.joblib": b"packed"}))
    cache = make_cache(store)

    model = await cache.fetch(NS, f"s3://{store.bucket}/{key}")

    assert model.file is None and [o.unpack for o in model.objects] == ["tar"]
    assert await served(cache, model, tmp_path) == {"model/model.joblib": b"packed"}


@pytest.mark.parametrize(
    "uri",
    [
        "s3://other-bucket/models/{ns}/m",
        "s3://{bucket}/models/{other}/m",
        "s3://{bucket}/models/{ns}/../{other}/m",
        "s3://{bucket}/secrets/m",
    ],
)
async def test_fetch_s3_outside_namespace_refused(store: ObjectStore, uri: str) -> None:
    await put(store, f"models/{OTHER_NS}/m/model.joblib", b"theirs")
    cache = make_cache(store)
    with pytest.raises(ModelSourceError, match=f"models/{NS}/"):
        await cache.fetch(NS, uri.format(ns=NS, other=OTHER_NS, bucket=store.bucket))
    assert cache.downloads == 0


async def test_fetch_s3_missing_prefix_says_so(store: ObjectStore) -> None:
    cache = make_cache(store)
    with pytest.raises(ModelSourceError, match="no model found"):
        await cache.fetch(NS, f"s3://{store.bucket}/models/{NS}/{unique('absent')}")


async def test_fetch_without_object_store_says_so(http_server: ModelHTTPServer) -> None:
    """Without a store there is nowhere to keep a model: s3:// and http(s):// both say so."""
    cache = ModelCache(None, None, DownloadPolicy(allowed_hosts=AllowedHosts.parse("127.0.0.1")))
    uri = http_server.serve(f"/{unique('n')}/model.joblib", b"x", "application/octet-stream")
    for source in (uri, "s3://mlpipeline/models/ns/m"):
        with pytest.raises(ModelSourceError, match="SHIPYARD_S3_ENDPOINT"):
            await cache.fetch(NS, source)


# ----------------------------------------------------------------------------- http(s)://
async def test_fetch_http_tar_gz_copied_once_and_unpacked(
    store: ObjectStore, http_server: ModelHTTPServer, tmp_path: Path
) -> None:
    path = f"/{unique('m')}/model.tar.gz"
    archive = tar_gz({"model.joblib": b"from http", "meta/info.json": b"{}"})
    uri = http_server.serve(path, archive, "application/gzip")
    cache = make_cache(store)

    model = await cache.fetch(NS, uri)

    # Copied as it came into the namespace's cache area, the manifest written last.
    prefix = cache_prefix(NS, uri, model.version)
    assert await cached_keys(store, uri) == [
        f"{prefix}archive/model.tar.gz",
        f"{prefix}{MANIFEST}",
    ]
    assert await served(cache, model, tmp_path) == {
        "model.joblib": b"from http",
        "meta/info.json": b"{}",
    }
    assert http_server.gets(path) == 1 and cache.downloads == 1
    # Cached by URI and ETag: a HEAD, no second GET (also from a fresh cache: a restart).
    assert await cache.fetch(NS, uri) == model
    assert await make_cache(store).fetch(NS, uri) == model
    assert http_server.gets(path) == 1 and http_server.requests[("HEAD", path)] == 3


async def test_fetch_http_single_file_and_zip(
    store: ObjectStore, http_server: ModelHTTPServer, tmp_path: Path
) -> None:
    cache = make_cache(store)
    one = await cache.fetch(
        NS, http_server.serve(f"/{unique('f')}/model.joblib", b"plain", "application/octet-stream")
    )
    assert one.file == "model.joblib"
    assert await served(cache, one, tmp_path / "one") == {"model.joblib": b"plain"}

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model.joblib", b"zipped")
    zipped = await cache.fetch(
        NS, http_server.serve(f"/{unique('z')}/m.zip", buf.getvalue(), "application/zip")
    )
    assert zipped.file is None
    assert await served(cache, zipped, tmp_path / "zip") == {"model.joblib": b"zipped"}


async def test_fetch_http_wrong_content_type_refused(
    store: ObjectStore, http_server: ModelHTTPServer
) -> None:
    uri = http_server.serve(f"/{unique('t')}/model.joblib", b"<html>", "text/html")
    with pytest.raises(ModelSourceError, match="application/octet-stream"):
        await make_cache(store).fetch(NS, uri)
    assert await cached_keys(store, uri) == []


async def test_fetch_http_loopback_refused_without_allow_setting(
    store: ObjectStore, http_server: ModelHTTPServer
) -> None:
    path = f"/{unique('ssrf')}/model.joblib"
    uri = http_server.serve(path, b"x", "application/octet-stream")
    cache = make_cache(store, allow_loopback=False)
    with pytest.raises(AddressRefused, match="loopback"):
        await cache.fetch(NS, uri)
    # A name resolving to loopback is refused just the same, and so is link-local metadata.
    with pytest.raises(AddressRefused, match="loopback"):
        await cache.fetch(NS, uri.replace("127.0.0.1", "localhost"))
    with pytest.raises(AddressRefused, match="link-local"):
        await cache.fetch(NS, "http://169.254.169.254/latest/meta-data/model.joblib")
    assert http_server.requests[("HEAD", path)] == http_server.gets(path) == 0


async def test_served_archive_escaping_member_refused(
    store: ObjectStore, http_server: ModelHTTPServer, tmp_path: Path
) -> None:
    """An archive is unpacked where it is served, with the safe rules: a member that would
    leave the model directory, or a link, fails the start and leaves nothing that looks like
    a model."""
    cache = make_cache(store)
    cases: list[tuple[str, bytes, str, str]] = [
        ("model.tar.gz", tar_gz({"../escaped.txt": b"out"}), "application/gzip", r"'\.\.'"),
        ("model.tar.gz", tar_gz({"/abs.txt": b"out"}), "application/gzip", "relative"),
        (
            "model.tar.gz",
            tar_gz({"model.joblib": b"in"}, symlink="link"),
            "application/gzip",
            "link",
        ),
    ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        link = zipfile.ZipInfo("model.joblib")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/shadow")
    cases.append(("m.zip", buf.getvalue(), "application/zip", "not a plain file"))
    for i, (filename, data, content_type, why) in enumerate(cases):
        uri = http_server.serve(f"/{unique('evil')}/{filename}", data, content_type)
        model = await cache.fetch(NS, uri)
        dest = tmp_path / str(i) / "models"
        with pytest.raises(UnpackError, match=why):
            await served(cache, model, dest)
        assert not (dest.parent / "escaped.txt").exists()
        assert not (dest / DONE_MARKER).exists()  # nothing half-unpacked looks complete


async def test_fetch_http_size_limit(
    store: ObjectStore, http_server: ModelHTTPServer, tmp_path: Path
) -> None:
    cache = make_cache(store, max_bytes=1000)
    big = http_server.serve(
        f"/{unique('big')}/model.joblib", b"0" * 5000, "application/octet-stream"
    )
    with pytest.raises(ModelSourceError, match="download limit"):
        await cache.fetch(NS, big)
    assert await cached_keys(store, big) == []
    # A small archive that inflates beyond the limit stops while it is unpacked.
    bomb = http_server.serve(
        f"/{unique('bomb')}/model.tar.gz", tar_gz({"zeros": b"\0" * 200_000}), "application/gzip"
    )
    model = await cache.fetch(NS, bomb)
    with pytest.raises(SizeLimitExceeded):
        await served(cache, model, tmp_path)


async def test_fetch_http_without_length_size_limit_leaves_no_object(
    store: ObjectStore, tmp_path: Path
) -> None:
    """A body without Content-Length that runs past the limit stops the copy; no object."""
    import http.server

    class Chunked(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:  # noqa: N802
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(8):
                chunk = b"x" * 4096
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Chunked)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{httpd.server_address[1]}/{unique('c')}/model.joblib"
        with pytest.raises(SizeLimitExceeded, match="download limit"):
            await make_cache(store, max_bytes=10_000).fetch(NS, uri)
        assert await cached_keys(store, uri) == []
    finally:
        httpd.shutdown()
        httpd.server_close()


# ----------------------------------------------------------------------------- resolve()
async def test_resolve_reports_pending_then_ready_and_failure(
    store: ObjectStore, http_server: ModelHTTPServer
) -> None:
    path = f"/{unique('bg')}/model.joblib"
    uri = http_server.serve(path, b"bg", "application/octet-stream")
    http_server.gate(path)
    cache = make_cache(store)
    cache.inline_wait = 0.0
    try:
        with pytest.raises(ModelPending, match="downloading the model"):
            await cache.resolve(NS, uri, "rev1")
    finally:
        http_server.release(path)
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


async def test_resolve_renew_takes_a_changed_model_in_place(store: ObjectStore) -> None:
    """A revision keeps what it found while it has servers; one that starts again from zero
    (renew) takes the model as it is now, since no replica can differ."""
    key = f"models/{NS}/{unique('renew')}/model.joblib"
    await put(store, key, b"v1")
    cache = make_cache(store)
    uri = f"s3://{store.bucket}/{key}"
    first = await cache.resolve(NS, uri, "rev1")
    await put(store, key, b"v2-longer")
    assert await cache.resolve(NS, uri, "rev1") == first  # a replica joining: pinned
    renewed = await cache.resolve(NS, uri, "rev1", renew=True)
    assert renewed.version != first.version and renewed.objects[0].size == len(b"v2-longer")
    assert await cache.resolve(NS, uri, "rev1") == renewed


async def test_killed_copy_is_never_used(store: ObjectStore, http_server: ModelHTTPServer) -> None:
    """A copy killed before its manifest was written is not taken for the model: the next
    fetch copies again; a manifest that names objects outside its copy is ignored too."""
    path = f"/{unique('killed')}/model.joblib"
    uri = http_server.serve(path, b"whole", "application/octet-stream")
    cache = make_cache(store)
    model = await cache.fetch(NS, uri)
    prefix = cache_prefix(NS, uri, model.version)
    await store.delete(prefix + MANIFEST)  # as if the copy was killed before its end

    again = await make_cache(store).fetch(NS, uri)

    assert again == model and http_server.gets(path) == 2
    # A tenant's workload may write into its own cache area: a forged manifest pointing at
    # another namespace's objects is not read.
    forged = {
        "file": "model.joblib",
        "objects": [
            {
                "name": f"../../../../{OTHER_NS}/m/model.joblib",
                "size": 1,
                "etag": "x",
                "path": "model.joblib",
                "unpack": None,
            }
        ],
    }
    await put(store, prefix + MANIFEST, json.dumps(forged).encode())
    third = await make_cache(store).fetch(NS, uri)
    assert third == model and http_server.gets(path) == 3


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
        assert_v2_predicts(api, "iris-s3", model, SAMPLES)
        # Used in place: the platform's bucket holds no copy of it.
        assert asyncio.run(cache_listing(seaweedfs.config, uri)) == []
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


def test_inferenceservice_archive_refused_where_served_says_why(
    api: httpx.Client, seaweedfs: Any
) -> None:
    """An archive in the namespace's area is unpacked by the server's storage initializer,
    inside its workload: a member that would leave the model directory fails the revision,
    and the status quotes the reason from the server's log."""
    key = f"models/{NS}/{unique('evil')}/model.tgz"

    async def upload() -> None:
        async with ObjectStore(seaweedfs.config) as store:
            await put(store, key, tar_gz({"../escape.py": b"def predict(x): return x"}))

    asyncio.run(upload())
    name = "evil-archive"
    body = isvc(
        name,
        {
            "model": {
                "modelFormat": {"name": "python"},
                "storageUri": f"s3://{seaweedfs.config.bucket}/{key}",
            }
        },
    )
    assert api.post(ISVC_PATH, json=body).status_code == 201

    def failed(obj: dict[str, Any]) -> bool:
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c.get("reason") == "RevisionFailed" for c in conds)

    try:
        obj = wait_isvc(api, name, failed, timeout=60)
        ready_cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert "cannot download model" in ready_cond["message"], ready_cond
        assert "'..'" in ready_cond["message"], ready_cond
    finally:
        api.delete(f"{ISVC_PATH}/{name}")


def test_inferenceservice_from_http_downloading_status_and_restart_no_second_download(
    api: httpx.Client,
    platform: Any,
    seaweedfs: Any,
    http_server: ModelHTTPServer,
    tmp_path: Path,
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
        # The one copy is the archive in the namespace's cache area of the platform's bucket.
        keys = asyncio.run(cache_listing(seaweedfs.config, uri))
        assert ["/".join(k.split("/")[5:]) for k in keys] == ["archive/model.tar.gz", MANIFEST]
    finally:
        http_server.release(path)
        api.delete(f"{ISVC_PATH}/{name}")
        serving = crash_service(platform, "serving")
        serving.env = original_env
        start_service_again(serving)
