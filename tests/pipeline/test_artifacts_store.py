"""Argo artifacts in the object store (issue 11): real SeaweedFS, real sandboxed steps.

Steps exchange artifacts only through the store, with URLs the service presigned for their
own keys; these tests look at the bucket itself, and attack the scheme from inside a step.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import tarfile
import time
import uuid
from asyncio.subprocess import Process
from pathlib import Path
from typing import Any

import pytest

from services.common.objectstore import ObjectNotFound, ObjectStore
from services.pipeline import stepwrap
from tests.pipeline.conftest import Gateway, PipelineService, nodes_by_display, root_result
from tests.pipeline.test_engine import py, sh, two_steps, wf


async def _keys(s3: Any, prefix: str) -> dict[str, int]:
    async with ObjectStore(s3) as store:
        return {o.key: o.size async for o in store.list(prefix)}


async def _put(s3: Any, key: str, data: bytes) -> None:
    async with ObjectStore(s3) as store:

        async def body() -> Any:
            yield data

        await store.put_stream(key, body())


async def _get(s3: Any, key: str) -> bytes:
    async with ObjectStore(s3) as store:
        return b"".join([c async for c in store.get_stream(key)])


async def make_and_use_tree(
    pipeline: PipelineService,
    namespace: str,
    name: str,
    output: dict[str, Any],
    use: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run to success a two-step workflow: ``make`` writes a tree (``/tmp/o/a.txt``,
    ``/tmp/o/sub/b.txt``) as its output artifact (with ``output``'s fields), ``use`` runs the
    Python ``use`` with it at ``/in/d``. (The workflow, its nodes by display name.)"""
    spec = two_steps(
        name,
        "mkdir -p /tmp/o/sub && echo one > /tmp/o/a.txt && echo two > /tmp/o/sub/b.txt",
        {"path": "/tmp/o", **output},
        use,
        {"path": "/in/d"},
    )
    done = await pipeline.run_succeeded(namespace, spec)
    return done, nodes_by_display(done)


async def test_output_is_a_tgz_under_the_workflow_name(
    pipeline: PipelineService, namespace: str, seaweedfs: Any
) -> None:
    done, nodes = await make_and_use_tree(
        pipeline,
        namespace,
        "tgz",
        {},
        "import os; print(sorted(os.listdir('/in/d')), open('/in/d/sub/b.txt').read().strip())",
    )
    assert nodes["use"]["outputs"]["result"] == "['a.txt', 'sub'] two"
    art = nodes["make"]["outputs"]["artifacts"][0]
    name = done["metadata"]["name"]
    key = f"artifacts/{namespace}/{name}/{nodes['make']['id']}/out.tgz"
    assert art["s3"] == {"key": key} and "archive" not in art
    stored = await _keys(seaweedfs.config, f"artifacts/{namespace}/{name}/")
    make, use = (f"artifacts/{namespace}/{name}/{nodes[s]['id']}" for s in ("make", "use"))
    # Beside the artifact, only each wrapped step's report (its state key; see runner.py).
    assert sorted(stored) == sorted(
        [key, f"{make}/.shipyard/result.json", f"{use}/.shipyard/result.json"]
    )
    with tarfile.open(fileobj=io.BytesIO(await _get(seaweedfs.config, key))) as tar:
        assert sorted(tar.getnames()) == ["o", "o/a.txt", "o/sub", "o/sub/b.txt"]


async def test_archive_none_directory_is_stored_as_objects(
    pipeline: PipelineService, namespace: str, seaweedfs: Any
) -> None:
    done, nodes = await make_and_use_tree(
        pipeline,
        namespace,
        "raw",
        {"archive": {"none": {}}},
        "print(open('/in/d/a.txt').read().strip(), open('/in/d/sub/b.txt').read().strip())",
    )
    assert nodes["use"]["outputs"]["result"] == "one two"
    art = nodes["make"]["outputs"]["artifacts"][0]
    assert art["archive"] == {"none": {}}
    stored = await _keys(seaweedfs.config, art["s3"]["key"] + "/")
    assert sorted(stored) == [f"{art['s3']['key']}/a.txt", f"{art['s3']['key']}/sub/b.txt"]


async def test_s3_input_in_own_area_is_read_and_another_namespace_is_refused(
    pipeline: PipelineService, namespace: str, seaweedfs: Any
) -> None:
    await _put(seaweedfs.config, f"models/{namespace}/in.txt", b"mine")
    await _put(seaweedfs.config, "models/someone-else/secret.txt", b"theirs")

    def reader(key: str) -> dict[str, Any]:
        return wf(
            "s3in",
            [
                py(
                    "main",
                    "print(open('/in/x').read())",
                    inputs={"artifacts": [{"name": "x", "path": "/in/x", "s3": {"key": key}}]},
                )
            ],
        )

    done = await pipeline.run_succeeded(namespace, reader(f"models/{namespace}/in.txt"))
    assert root_result(done) == "mine"
    done = await pipeline.run(namespace, reader("models/someone-else/secret.txt"))
    assert done["status"]["phase"] == "Error"
    message = done["status"]["nodes"][done["metadata"]["name"]]["message"]
    assert "outside namespace" in message and f"models/{namespace}/" in message, message
    other = await pipeline.run(
        namespace,
        wf(
            "s3bucket",
            [
                py(
                    "main",
                    "print(1)",
                    inputs={
                        "artifacts": [
                            {"name": "x", "path": "/in/x", "s3": {"key": "k", "bucket": "other"}}
                        ]
                    },
                )
            ],
        ),
    )
    assert other["status"]["phase"] == "Error"
    assert (
        "only the platform's bucket"
        in other["status"]["nodes"][other["metadata"]["name"]]["message"]
    )


ESCAPE = r"""
import json, urllib.request, urllib.error, uuid
plan = json.load(open('/var/run/shipyard/step/plan.json'))
upload = plan['outputArtifacts'][0]['upload']
form = upload['form']
results = {}
def post(key):
    b = uuid.uuid4().hex
    fields = dict(form['fields'], key=key)
    body = ''.join(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in fields.items()).encode()
    body += (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'
             ).encode() + b'planted' + f'\r\n--{b}--\r\n'.encode()
    req = urllib.request.Request(form['url'], data=body, method='POST',
        headers={'Content-Type': 'multipart/form-data; boundary=' + b})
    try:
        return urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
results['other_ns'] = post('artifacts/VICTIM/planted.txt')
results['own_prefix_sibling'] = post(plan['outputArtifacts'][0]['key'].rsplit('/', 1)[0] + '/x')
# The PUT URL is signed for its own key: the same signature on another key is refused.
own = plan['outputArtifacts'][0]['key']
other_put = upload['put'].replace(own, f'artifacts/VICTIM/put.txt')
try:
    results['put_other_key'] = urllib.request.urlopen(urllib.request.Request(
        other_put, data=b'planted', method='PUT'), timeout=10).status
except urllib.error.HTTPError as e:
    results['put_other_key'] = e.code
# The report's PUT URL is as narrow: it cannot overwrite another step's report.
report = plan['report']['put']
own_report = report.split('?')[0].rsplit('/', 3)[0]
try:
    results['report_other_key'] = urllib.request.urlopen(urllib.request.Request(
        report.replace(own_report, own_report + 'x'), data=b'{}', method='PUT'),
        timeout=10).status
except urllib.error.HTTPError as e:
    results['report_other_key'] = e.code
base = form['url']
try:
    results['unsigned_get'] = urllib.request.urlopen(base + '/models/VICTIM/secret.txt',
                                                     timeout=10).status
except urllib.error.HTTPError as e:
    results['unsigned_get'] = e.code
try:  # the relay reaches the store, but the store wants a signature for a listing too
    results['unsigned_list'] = urllib.request.urlopen(base + '?list-type=2', timeout=10).status
except urllib.error.HTTPError as e:
    results['unsigned_list'] = e.code
print(json.dumps(results))
open('/tmp/out.txt', 'w').write('x')
"""


async def test_a_step_cannot_use_its_upload_form_elsewhere(
    pipeline: PipelineService, namespace: str, seaweedfs: Any
) -> None:
    """The hostile step reads its own plan (it can) and tries its PUT URL and POST form on
    other keys: another namespace's, and a sibling of its own output."""
    victim = f"pl-victim-{namespace[-6:]}"
    await _put(seaweedfs.config, f"models/{victim}/secret.txt", b"theirs")
    source = ESCAPE.replace("VICTIM", victim)
    spec = wf(
        "escape",
        [py("main", source, outputs={"artifacts": [{"name": "out", "path": "/tmp/out.txt"}]})],
    )
    done = await pipeline.run_succeeded(namespace, spec)
    results = json.loads(root_result(done))
    assert results == {
        "other_ns": 403,
        "own_prefix_sibling": 403,
        "put_other_key": 403,
        "report_other_key": 403,
        "unsigned_get": 403,
        "unsigned_list": 403,
    }
    assert await _keys(seaweedfs.config, f"artifacts/{victim}/") == {}


async def test_a_killed_upload_leaves_no_object(tmp_path: Path, seaweedfs: Any) -> None:
    """stepwrap killed mid-upload (SIGKILL): S3 shows no object, so nothing can be recorded."""
    from services.pipeline.artifacts import ArtifactRepository

    key = f"artifacts/kill-test/wf/{tmp_path.name}/big"
    async with ObjectStore(seaweedfs.config) as store:

        async def opened() -> ObjectStore:
            return store

        repo = ArtifactRepository(opened)
        form = await repo.upload_form(key, 600)
        report_key = f"{key}.report"
        big = tmp_path / "big.bin"
        big.touch()
        os.truncate(big, 512 * 1024 * 1024)
        plan = {
            "outputArtifacts": [
                {"name": "big", "path": str(big), "key": key, "archive": "none", "upload": form}
            ],
            "report": {"put": await store.presigned_put_url(report_key, 600)},
        }
        # Kill it once the upload is under way: it has read (and sent) part of the file.
        proc = await stepwrap_mid_upload(plan, tmp_path)
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL
        with pytest.raises(ObjectNotFound):  # the report is sent last: it never went
            await store.head(report_key)
        assert await repo.uploaded(key, "file") is False
        with pytest.raises(ObjectNotFound):
            await store.head(key)


def _sent_bytes(pid: int) -> bool:
    """Whether process ``pid`` has read 64 MiB of its file (so its upload is under way)."""
    try:
        io_stats = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return False
    rchar = next(int(line.split()[1]) for line in io_stats.splitlines() if line.startswith("rchar"))
    return rchar > 64 * 1024 * 1024


async def stepwrap_mid_upload(plan: dict[str, Any], directory: Path) -> Process:
    """stepwrap running ``plan`` (written to ``directory``/plan.json, the step ``true``), once
    it has sent part of an upload (or after 30 s)."""
    path = directory / "plan.json"
    path.write_text(json.dumps(plan))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", stepwrap.__file__, str(path), "--", "true"
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _sent_bytes(proc.pid):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return proc


async def test_one_gib_artifact_between_steps_in_bounded_memory(
    pipeline: PipelineService, namespace: str, seaweedfs: Any
) -> None:
    """1 GiB passes make -> use through the store while each step is limited to 160 MiB of
    memory (cgroup): neither the wrapper nor the service may hold the artifact in memory."""
    spec = two_steps(
        "big",
        "truncate -s 1G /tmp/big.bin",
        {"path": "/tmp/big.bin", "archive": {"none": {}}},
        "import os; print(os.path.getsize('/tmp/in.bin'))",
        {"path": "/tmp/in.bin"},
    )
    for template in spec["spec"]["templates"]:
        body = template.get("container") or template.get("script")
        if body is not None:
            body["resources"] = {"limits": {"memory": "160Mi"}}
    done = await pipeline.run_succeeded(namespace, spec, timeout=300)
    nodes = nodes_by_display(done)
    assert nodes["use"]["outputs"]["result"] == str(1024**3)
    key = nodes["make"]["outputs"]["artifacts"][0]["s3"]["key"]
    assert await _keys(seaweedfs.config, key) == {key: 1024**3}


class _Files:
    """A loopback HTTP server for ``http`` input artifacts; counts the GETs it answers."""

    def __init__(self, files: dict[str, bytes]) -> None:
        import http.server
        import threading

        owner = self
        self.gets = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.gets += 1
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _http_reader(url: str) -> dict[str, Any]:
    return wf(
        "httpin",
        [
            py(
                "main",
                "import os\n"
                "p = '/in/x'\n"
                "print(sorted(os.listdir(p)) if os.path.isdir(p) else open(p).read())",
                inputs={"artifacts": [{"name": "x", "path": "/in/x", "http": {"url": url}}]},
            )
        ],
    )


async def test_http_input_artifact_is_fetched_by_the_service_ssrf_checked(
    pipeline: PipelineService, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as tar:
        for name in ("a.txt", "b.txt"):
            info = tarfile.TarInfo(f"d/{name}")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    files = _Files({"/plain.txt": b"over http", "/d.tgz": packed.getvalue()})
    try:
        base = f"http://127.0.0.1:{files.port}"
        refused = await pipeline.run(namespace, _http_reader(f"{base}/plain.txt"))
        assert refused["status"]["phase"] == "Error"
        message = refused["status"]["nodes"][refused["metadata"]["name"]]["message"]
        assert "127.0.0.1" in message and "cannot prepare the step" in message, message
        assert files.gets == 0  # refused before any connection

        from services.common.fetch import AllowedHosts

        repo = pipeline.app.state.ctx.artifacts
        monkeypatch.setattr(repo, "allowed_hosts", AllowedHosts.parse(f"127.0.0.1:{files.port}"))
        done = await pipeline.run_succeeded(namespace, _http_reader(f"{base}/plain.txt"))
        assert root_result(done) == ("over http")
        done = await pipeline.run_succeeded(namespace, _http_reader(f"{base}/d.tgz"))
        assert root_result(done) == ("['a.txt', 'b.txt']")
        missing = await pipeline.run(namespace, _http_reader(f"{base}/nothing"))
        assert missing["status"]["phase"] == "Error"
        assert "404" in missing["status"]["nodes"][missing["metadata"]["name"]]["message"]
    finally:
        files.close()


def _repo_workflow(ref: dict[str, str]) -> dict[str, Any]:
    body = wf(
        "repo",
        [
            sh(
                "main",
                "echo via-ref > /tmp/r.txt",
                outputs={"artifacts": [{"name": "r", "path": "/tmp/r.txt"}]},
            )
        ],
    )
    body["spec"]["artifactRepositoryRef"] = ref
    return body


async def test_artifact_repository_ref_names_a_configmap_of_the_namespace(
    gateway: Gateway, seaweedfs: Any
) -> None:
    """Argo's artifact-repositories ConfigMap (read by the service as the namespace's account,
    through the gateway): its keyFormat places outputs, inside the namespace's areas only."""
    ns = gateway.namespace
    cm_name = f"repos-{uuid.uuid4().hex[:6]}"
    bucket = seaweedfs.config.bucket
    good = f"s3:\n  bucket: {bucket}\n  keyFormat: models/{ns}/{cm_name}/{{{{workflow.name}}}}\n"
    outside = "s3:\n  keyFormat: models/someone-else/{{workflow.name}}\n"
    async with gateway.client(ns) as c:
        r = await c.post(
            f"/api/v1/namespaces/{ns}/configmaps",
            json={
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": cm_name,
                    "annotations": {"workflows.argoproj.io/default-artifact-repository": "good"},
                },
                "data": {"good": good, "outside": outside, "gcs": "gcs:\n  bucket: b\n"},
            },
        )
        assert r.status_code == 201, r.text
    done = await gateway.run_succeeded(ns, _repo_workflow({"configMap": cm_name}))
    name = done["metadata"]["name"]
    key = done["status"]["nodes"][name]["outputs"]["artifacts"][0]["s3"]["key"]
    assert key == f"models/{ns}/{cm_name}/{name}/r.tgz"
    assert list(await _keys(seaweedfs.config, f"models/{ns}/{cm_name}/")) == [key]

    for ref, expected in (
        ({"configMap": cm_name, "key": "outside"}, "outside namespace"),
        ({"configMap": cm_name, "key": "gcs"}, "only s3 repositories"),
        ({"configMap": cm_name, "key": "nope"}, "has no repository nope"),
        ({"configMap": "no-such-configmap"}, "not found"),
    ):
        failed = await gateway.run(ns, _repo_workflow(ref))
        assert failed["status"]["phase"] == "Error", (ref, failed["status"])
        message = failed["status"]["nodes"][failed["metadata"]["name"]]["message"]
        assert expected in message, (ref, message)


async def test_a_cache_hit_whose_artifacts_were_deleted_runs_again(
    pipeline: PipelineService, namespace: str, seaweedfs: Any
) -> None:
    """Deleting a workflow deletes its artifacts; a memoized step that pointed at them is then
    a miss (it runs again), never a hit that hands the next step a missing object."""
    memo = {"key": f"art-{uuid.uuid4().hex[:6]}", "maxAge": "1h"}
    spec = two_steps(
        "memo-art",
        "date +%s%N > /tmp/o.txt",
        {"path": "/tmp/o.txt"},
        "print(open('/in/x').read().strip())",
        {"path": "/in/x"},
    )
    make = next(t for t in spec["spec"]["templates"] if t["name"] == "make")
    make["memoize"] = memo
    first = await pipeline.run(namespace, spec)
    assert first["status"]["phase"] == "Succeeded", first["status"]
    second = await pipeline.run(namespace, spec)
    assert nodes_by_display(second)["make"]["memoizationStatus"]["hit"] is True
    assert (
        nodes_by_display(second)["use"]["outputs"]["result"]
        == nodes_by_display(first)["use"]["outputs"]["result"]
    )
    name = first["metadata"]["name"]
    async with pipeline.client(namespace) as c:
        r = await c.delete(f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows/{name}")
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while await _keys(seaweedfs.config, f"artifacts/{namespace}/{name}/"):
        assert time.monotonic() < deadline, "the deleted workflow's artifacts are still there"
        await asyncio.sleep(0.1)
    third = await pipeline.run(namespace, spec)
    assert third["status"]["phase"] == "Succeeded", third["status"]
    assert nodes_by_display(third)["make"]["memoizationStatus"]["hit"] is False


async def test_kfp_importer_copies_an_http_url_into_the_store(
    pipeline: PipelineService,
    namespace: str,
    seaweedfs: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``dsl.importer`` of an http(s) URL: the service fetches it (SSRF-checked) into the
    task's output prefix, and the consumer reads the copy by its s3:// uri."""
    from kfp import compiler

    from services.common.fetch import AllowedHosts
    from services.common.safe_yaml import load
    from services.pipeline.kfp_ir import compile_ir
    from tests.pipeline.test_kfp_artifacts import import_pipeline

    files = _Files({"/rows.txt": b"a\nb\nc\n"})
    try:
        url = f"http://127.0.0.1:{files.port}/rows.txt"
        package = tmp_path / "imports.yaml"
        compiler.Compiler().compile(import_pipeline, str(package))
        spec = compile_ir(load(package.read_text()), {"uri": url})
        body = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"generateName": "imp-"},
            "spec": spec,
        }
        refused = await pipeline.run(namespace, body)
        assert refused["status"]["phase"] in ("Failed", "Error")
        messages = " ".join(n.get("message") or "" for n in refused["status"]["nodes"].values())
        assert "127.0.0.1" in messages, messages
        assert files.gets == 0
        repo = pipeline.app.state.ctx.artifacts
        monkeypatch.setattr(repo, "allowed_hosts", AllowedHosts.parse(f"127.0.0.1:{files.port}"))
        done = await pipeline.run_succeeded(namespace, body)
        pods = [n for n in done["status"]["nodes"].values() if n["type"] == "Pod"]
        counted = next(n for n in pods if n["displayName"].startswith("count-rows"))
        output = counted["outputs"]["parameters"][0]["value"]
        rows, uri = output.split(" ", 1)
        assert rows == "3" and uri.startswith(f"s3://{seaweedfs.config.bucket}/v2/artifacts/")
        assert await _get(seaweedfs.config, uri.split("/", 3)[3]) == b"a\nb\nc\n"
    finally:
        files.close()


async def test_an_upload_survives_the_store_going_away(tmp_path: Path) -> None:
    """The store is SIGKILLed in the middle of a step's upload and comes back 5 s later (a
    store of this test's own, on the same ports and data): the wrapper retries, the object is
    complete (every byte), and it reports the upload only once it succeeded."""
    import hashlib
    import signal as signals

    from services.pipeline.artifacts import ArtifactRepository
    from shipyard.children import Child, stop_children
    from shipyard.seaweedfs import running

    with running(tmp_path / "store", "outage") as (embedded, pid):
        async with ObjectStore(embedded.config) as store:

            async def opened() -> ObjectStore:
                return store

            key = "artifacts/outage/wf/pod/big"
            # Sent whole once the store is back; the store is killed within 10 ms of the
            # first bytes, long before 64 MiB are through.
            SIZE_MIB = 64  # noqa: N806
            repo = ArtifactRepository(opened)
            upload = await repo.upload_form(key, 600)
            report_key = f"{key}.report"
            big = tmp_path / "big.bin"
            big.write_bytes(os.urandom(1024 * 1024) * SIZE_MIB)
            digest = hashlib.md5(big.read_bytes()).hexdigest()  # noqa: S324 - a checksum
            plan = {
                "outputArtifacts": [
                    {
                        "name": "big",
                        "path": str(big),
                        "key": key,
                        "archive": "none",
                        "upload": upload,
                    }
                ],
                "report": {"put": await store.presigned_put_url(report_key, 600)},
            }
            step = tmp_path / "step"
            step.mkdir()
            proc = await stepwrap_mid_upload(plan, step)
            os.kill(pid, signals.SIGKILL)
            await asyncio.sleep(5)
            assert proc.returncode is None, "the upload finished before the store went away"
            again = Child(
                "outage-again",
                embedded.argv(),
                dict(os.environ),
                tmp_path / "again.log",
                stop_signal=signals.SIGINT,
            )
            again.start()
            try:
                assert await asyncio.wait_for(proc.wait(), 180) == 0
                outputs = await repo.read_json(report_key)
                assert outputs["errors"] == []
                assert outputs["artifacts"]["big"] == {
                    "key": key,
                    "stored": "file",
                    "size": SIZE_MIB * 1024 * 1024,
                    "path": str(big),
                }
                md5 = hashlib.md5()  # noqa: S324 - a checksum
                async for chunk in store.get_stream(key):
                    md5.update(chunk)
                assert md5.hexdigest() == digest
            finally:
                stop_children([again], timeout=2)
