"""Serving on the honest runtime seam: no host path, no loopback, no service interpreter.

The serving service hands the runtime a spec that works on every runtime: the runtime's own
interpreter and platform image for the built-in server, a claim mounted as a claim, and a
downloaded model as a plan of presigned URLs in the workload's ``files`` with an emptyDir
to put it in. The storage initializer that runs the plan is tried here on its own (retries,
pinned ETags, expired URLs, a restart) and through the model server's command line.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

import services.serving
from services.common.objectstore import ObjectStore
from services.common.resources import ResourceStore
from services.common.runtime import LocalRuntime
from services.common.settings import SINGLE_USER_NAMESPACE as NS
from services.serving.controller import InferenceServiceController
from services.serving.modelcache import DownloadPolicy, ModelCache
from services.serving.modelserver import initializer
from services.serving.modelserver.initializer import DONE_MARKER, StorageInitError, initialize
from services.serving.runtimes import CLUSTER_SERVING_RUNTIME, MODEL_SERVER, builtin_runtimes
from services.serving.storage import MODEL_MOUNT, STORAGE_PLAN, StorageError
from services.serving.unpack import UnpackError

from .conftest import isvc, model_server_main, tar_gz

SERVING_SOURCE = Path(services.serving.__file__).parent
#: What a caller of the runtime must never use: a volume's host path (the local runtime's
#: own method or store), the service's interpreter for a workload, a loopback address.
FORBIDDEN = {
    "resolve_volume": re.compile(r"\bresolve_volume\b"),
    "VolumeStore / LocalRuntime": re.compile(r"\b(VolumeStore|LocalRuntime)\b"),
    "sys.executable": re.compile(r"\bsys\.executable\b"),
    "127.0.0.1": re.compile(r"127\.0\.0\.1"),
    "localhost": re.compile(r"\blocalhost\b"),
    "a hostPath volume": re.compile(r"""["']hostPath["']\s*:"""),
}


def test_serving_source_has_no_host_path_loopback_or_service_interpreter() -> None:
    found = [
        f"{path.relative_to(SERVING_SOURCE.parent.parent)}:{n}: {what}: {line.strip()}"
        for path in sorted(SERVING_SOURCE.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for what, pattern in FORBIDDEN.items()
        if pattern.search(line)
    ]
    assert found == [], "\n".join(found)


# ----------------------------------------------------------------------------- the spec
class _NoStore:
    """What workload_for reads: the runtimes, here only the built-in ClusterServingRuntimes
    (services.serving.runtimes); the controller also registers a listener."""

    def add_listener(self, listener: Any) -> None:
        pass

    async def list_all(self, kind: Any, namespace: str | None = None) -> list[dict[str, Any]]:
        return builtin_runtimes() if kind is CLUSTER_SERVING_RUNTIME else []

    async def find(self, kind: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        found = [o for o in await self.list_all(kind) if o["metadata"]["name"] == name]
        return found[0] if found else None


@pytest.fixture
def kube_like_runtime(tmp_path: Path) -> LocalRuntime:
    """A runtime that says what the Kubernetes runtime says: ``python3`` and an image."""
    runtime = LocalRuntime(tmp_path / "runtime")
    runtime.python = "python3"
    runtime.platform_image = "registry.example/shipyard:1.2.3"
    return runtime


@pytest.fixture
async def platform_store(seaweedfs: Any) -> AsyncIterator[ObjectStore]:
    async with ObjectStore(seaweedfs.config) as store:
        yield store


def controller(runtime: LocalRuntime, store: ObjectStore | None = None) -> Any:
    async def objects() -> ObjectStore:
        assert store is not None
        return store

    models = ModelCache(objects, store.bucket if store else None, DownloadPolicy())
    return InferenceServiceController(
        cast(ResourceStore, _NoStore()), runtime, "http://gateway", models=models
    )


def model_isvc(uri: str, **block: Any) -> dict[str, Any]:
    obj = isvc("m", {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri, **block}})
    obj["metadata"] |= {"namespace": NS, "uid": "u-1"}
    return obj


async def test_workload_for_s3_model_plan_in_files_and_emptydir(
    kube_like_runtime: LocalRuntime, platform_store: ObjectStore
) -> None:
    key = f"models/{NS}/seam-{id(platform_store)}/model.joblib"

    async def body() -> AsyncIterator[bytes]:
        yield b"weights"

    await platform_store.put_stream(key, body())
    ctl = controller(kube_like_runtime, platform_store)
    spec = await ctl.workload_for(
        model_isvc(f"s3://{platform_store.bucket}/{key.rsplit('/', 1)[0]}"), 1, "digest"
    )

    assert spec.command == ["python3", "-m", MODEL_SERVER]
    assert spec.image == "registry.example/shipyard:1.2.3"
    assert spec.args[:2] == ["--storage-plan", STORAGE_PLAN]
    assert spec.args[spec.args.index("--model-dir") + 1] == f"{MODEL_MOUNT}/model.joblib"
    assert [v.model_dump(exclude_none=True, by_alias=True) for v in spec.volumes] == [
        {"name": "kserve-provision-location", "emptyDir": {}}
    ]
    assert [(m.name, m.mount_path, m.read_only) for m in spec.volume_mounts] == [
        ("kserve-provision-location", MODEL_MOUNT, False)
    ]
    plan = json.loads(spec.files[STORAGE_PLAN])
    assert plan["dest"] == MODEL_MOUNT
    [obj] = plan["objects"]
    assert obj["path"] == "model.joblib" and obj["size"] == 7
    assert obj["url"].startswith(platform_store.config.endpoint) and "X-Amz-Signature" in obj["url"]
    assert platform_store.config.secret_access_key not in spec.files[STORAGE_PLAN]
    # A predictor's own image wins over the platform's.
    spec = await ctl.workload_for(
        model_isvc(f"s3://{platform_store.bucket}/{key}", image="example/own:1"), 2, "digest"
    )
    assert spec.image == "example/own:1"


async def test_workload_for_pvc_model_mounts_claim_read_only(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path / "runtime")
    spec = await controller(runtime).workload_for(model_isvc("pvc://models/iris/v1"), 1, "d")

    assert spec.command == [runtime.python, "-m", MODEL_SERVER]
    assert spec.image is None  # the local runtime pulls no image: its status says so
    assert spec.files == {} and "--storage-plan" not in spec.args
    assert spec.args[spec.args.index("--model-dir") + 1] == f"{MODEL_MOUNT}/iris/v1"
    [volume] = spec.volumes
    assert volume.persistent_volume_claim is not None
    assert volume.persistent_volume_claim.claim_name == "models"
    [mount] = spec.volume_mounts
    assert (mount.mount_path, mount.read_only, mount.sub_path) == (MODEL_MOUNT, True, None)


async def test_workload_for_file_uri_refused(tmp_path: Path) -> None:
    """A file:// model stored before admission refused it fails its revision, saying what to
    use instead."""
    ctl = controller(LocalRuntime(tmp_path / "runtime"))
    with pytest.raises(StorageError, match=r"pvc://<claim>/<path>"):
        await ctl.workload_for(model_isvc("file:///srv/models/iris"), 1, "d")


# ----------------------------------------------------------------------------- initializer
class ObjectServer:
    """A loopback HTTP server standing in for the object store's presigned GETs: files with
    ETags, a queue of failures per path, and a request counter."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.failures: dict[str, list[int]] = {}
        self.requests: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                path = self.path.split("?", 1)[0]
                server.requests[path] += 1
                pending = server.failures.get(path) or []
                if pending:
                    self.send_error(pending.pop(0))
                    return
                data, etag = server.files[path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{etag}"')
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def put(self, path: str, data: bytes, etag: str = "e1") -> dict[str, Any]:
        self.files[path] = (data, etag)
        port = self.httpd.server_address[1]
        return {"url": f"http://127.0.0.1:{port}{path}", "size": len(data), "etag": etag}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def objects() -> Iterator[ObjectServer]:
    server = ObjectServer()
    yield server
    server.close()


def plan_for(dest: Path, *objects: dict[str, Any]) -> dict[str, Any]:
    return {"dest": str(dest), "maxBytes": 1 << 20, "digest": "d1", "objects": list(objects)}


def test_initialize_retries_transient_errors(
    objects: ObjectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(initializer, "RETRY_SECONDS", 30.0)
    a = objects.put("/b/a.bin", b"aaa") | {"path": "a.bin"}
    b = objects.put("/b/deep/b.bin", b"bb") | {"path": "deep/er/b.bin"}
    objects.failures["/b/a.bin"] = [503, 500]
    objects.failures["/b/deep/b.bin"] = [429]

    initialize(plan_for(tmp_path, a, b))

    assert (tmp_path / "a.bin").read_bytes() == b"aaa"
    assert (tmp_path / "deep/er/b.bin").read_bytes() == b"bb"
    assert objects.requests["/b/a.bin"] == 3 and objects.requests["/b/deep/b.bin"] == 2
    assert not list(tmp_path.rglob("*.part"))


def test_initialize_refuses_changed_object(objects: ObjectServer, tmp_path: Path) -> None:
    """The plan pins the ETag the revision was made with: other bytes are never served."""
    obj = objects.put("/c/model.joblib", b"new bytes", etag="new") | {"path": "model.joblib"}
    with pytest.raises(StorageInitError, match="changed in the store after this revision"):
        initialize(plan_for(tmp_path, obj | {"etag": "old"}))
    with pytest.raises(StorageInitError, match="more than the 3 bytes"):
        initialize(plan_for(tmp_path, obj | {"size": 3}))
    assert list(tmp_path.iterdir()) == []


def test_initialize_expired_url_says_so(objects: ObjectServer, tmp_path: Path) -> None:
    obj = objects.put("/e/model.joblib", b"x") | {"path": "model.joblib"}
    objects.failures["/e/model.joblib"] = [403]
    obj["url"] += "?X-Amz-Date=20200101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=abc"
    with pytest.raises(StorageInitError, match="presigned URL expired"):
        initialize(plan_for(tmp_path, obj))
    assert objects.requests["/e/model.joblib"] == 1  # a 403 is not retried


def test_initialize_once_per_workload(objects: ObjectServer, tmp_path: Path) -> None:
    """A restarted server keeps its emptyDir and skips the download; leftovers of a start that
    died half-way are cleared before a new one."""
    obj = objects.put("/r/model.joblib", b"model") | {"path": "model.joblib"}
    (tmp_path / "model.joblib.part").write_bytes(b"half")
    initialize(plan_for(tmp_path, obj))
    assert sorted(p.name for p in tmp_path.iterdir()) == [DONE_MARKER, "model.joblib"]
    initialize(plan_for(tmp_path, obj))
    assert objects.requests["/r/model.joblib"] == 1
    (tmp_path / DONE_MARKER).unlink()
    initialize(plan_for(tmp_path, obj))
    assert objects.requests["/r/model.joblib"] == 2


def test_initialize_archive_unpacked_within_budget(objects: ObjectServer, tmp_path: Path) -> None:
    archive = objects.put("/a/m.tgz", tar_gz({"m/model.py": b"x" * 100})) | {
        "path": None,
        "unpack": "tar",
        "name": "m.tgz",
    }
    initialize(plan_for(_mkdir(tmp_path / "ok"), archive))
    assert (tmp_path / "ok/m/model.py").read_bytes() == b"x" * 100
    assert not [p for p in (tmp_path / "ok").iterdir() if p.name.startswith(".shipyard-archive")]
    small = plan_for(_mkdir(tmp_path / "small"), archive) | {"maxBytes": 50}
    with pytest.raises(UnpackError, match="download limit"):
        initialize(small)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_modelserver_main_storage_plan_failure_exits_with_reason(
    objects: ObjectServer, tmp_path: Path
) -> None:
    """The reason a model cannot be had is the server's last ERROR line: the InferenceService's
    status quotes it."""
    evil = objects.put("/x/m.tgz", tar_gz({"../out.py": b"x"})) | {
        "path": None,
        "unpack": "tar",
        "name": "m.tgz",
    }
    dest = _mkdir(tmp_path / "models")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(plan_for(dest, evil)))
    done = model_server_main(dest, "--storage-plan", str(plan), timeout=60)
    assert done.returncode == 1
    assert " ERROR " in done.stderr and "cannot download model m" in done.stderr
    assert "'..'" in done.stderr
    assert not (tmp_path / "out.py").exists()
