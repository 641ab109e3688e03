"""The Runtime contract: every implementation (see conftest.RUNTIME_FACTORIES) must pass it.

Only the public interface is used here, and only observations that every runtime can make
(exit codes, logs, files read back with ``read_file``), never host process tables, host
paths or loopback addresses: a server listens on ``$(PORT)`` on 0.0.0.0 and is reached
through its opaque endpoint. Test ids carry the runtime's name (``[local]``,
``[kubernetes]``); the kubernetes runs use an emulated API server (see conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pytest

from services.common.runtime import Phase, Runtime, VolumeNotFound, WorkloadNotFound
from tests.endpoints import assert_endpoint, endpoint_client
from tests.specs import http_server_workload

from .conftest import Backend

pytestmark = pytest.mark.timeout(60)


def job(namespace: str, name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {"kind": "job", "namespace": namespace, "name": name, "command": command, **extra}


def server(namespace: str, name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {**job(namespace, name, command, **extra), "kind": "server"}


def with_claim(claim: str, mount_path: str) -> dict[str, Any]:
    return {
        "volumeMounts": [{"name": "data", "mountPath": mount_path}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
    }


async def read_logs(runtime: Runtime, namespace: str, name: str, **kw: Any) -> list[str]:
    return [line async for line in runtime.logs(namespace, name, **kw)]


async def test_run_job_success(runtime: Runtime, namespace: str) -> None:
    await runtime.apply(job(namespace, "ok", ["sh", "-c", "exit 0"], image="busybox:1.36"))
    status = await runtime.wait(namespace, "ok", timeout=20)
    assert status.phase == Phase.SUCCEEDED
    assert status.exit_code == 0
    assert status.start_time is not None and status.finish_time is not None
    assert status.start_time <= status.finish_time
    assert status.image == "busybox:1.36"


async def test_run_job_failure_exit_code(runtime: Runtime, namespace: str) -> None:
    await runtime.apply(job(namespace, "bad", ["sh", "-c", "echo boom >&2; exit 3"]))
    status = await runtime.wait(namespace, "bad", timeout=20)
    assert status.phase == Phase.FAILED
    assert status.exit_code == 3
    assert status.reason == "Error"
    assert "3" in (status.message or "") and "boom" in (status.message or "")


async def test_logs_stdout_and_stderr(runtime: Runtime, namespace: str) -> None:
    script = "echo out-1; echo err-1 >&2; echo out-2"
    await runtime.apply(job(namespace, "logs", ["sh", "-c", script]))
    await runtime.wait(namespace, "logs", timeout=20)
    assert await read_logs(runtime, namespace, "logs") == ["out-1", "err-1", "out-2"]
    assert await read_logs(runtime, namespace, "logs", tail=1) == ["out-2"]
    assert await read_logs(runtime, namespace, "logs", tail=2) == ["err-1", "out-2"]


async def test_logs_follow_streams_until_job_ends(runtime: Runtime, namespace: str) -> None:
    script = "echo first; sleep 0.6; echo second; sleep 0.6; echo third"
    await runtime.apply(job(namespace, "follow", ["sh", "-c", script]))
    seen: list[tuple[str, bool]] = []
    async for line in runtime.logs(namespace, "follow", follow=True):
        finished = (await runtime.status(namespace, "follow")).finished
        seen.append((line, finished))
    assert [line for line, _ in seen] == ["first", "second", "third"]
    # Streaming, not collected at the end: the first lines arrive while the job still runs.
    assert seen[0][1] is False and seen[1][1] is False
    # The iterator ended on its own, because the job ended.
    assert (await runtime.status(namespace, "follow")).phase == Phase.SUCCEEDED


async def test_apply_env_and_args_exactly(
    runtime: Runtime, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_TEST_SECRET", "must-not-leak")
    tricky = [
        "two words",
        'it\'s "quoted"',
        "$(echo pwned)",
        "a; rm -rf /tmp/x",
        "true && false",
        "`id`",
        "$HOME",
        "$(GREETING) world",
        "$$(GREETING)",
        "",
    ]
    code = (
        "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], "
        "'env': {k: os.environ.get(k) for k in "
        "['GREETING', 'EMPTY', 'DERIVED', 'PYTHONUNBUFFERED', 'SHIPYARD_TEST_SECRET']}}))"
    )
    env = [
        {"name": "GREETING", "value": "hello; $(not) `a`"},
        {"name": "EMPTY", "value": ""},
        {"name": "DERIVED", "value": "<$(GREETING)>"},
    ]
    await runtime.apply(job(namespace, "argv", ["python3", "-c", code], args=tricky, env=env))
    status = await runtime.wait(namespace, "argv", timeout=20)
    assert status.phase == Phase.SUCCEEDED, status
    out = json.loads((await read_logs(runtime, namespace, "argv"))[-1])
    expected = list(tricky)
    expected[7] = "hello; $(not) `a` world"
    expected[8] = "$(GREETING)"
    assert out["argv"] == expected
    assert out["env"] == {
        "GREETING": "hello; $(not) `a`",
        "EMPTY": "",
        "DERIVED": "<hello; $(not) `a`>",
        "PYTHONUNBUFFERED": "1",
        "SHIPYARD_TEST_SECRET": None,
    }


async def test_apply_env_as_dict(runtime: Runtime, namespace: str) -> None:
    await runtime.apply(
        job(namespace, "envdict", ["sh", "-c", 'echo "$A|$B"'], env={"A": "1", "B": "x y"})
    )
    await runtime.wait(namespace, "envdict", timeout=20)
    assert await read_logs(runtime, namespace, "envdict") == ["1|x y"]


async def test_volume_shared_between_workloads(runtime: Runtime, namespace: str) -> None:
    await runtime.create_volume(namespace, "workdir", size="1Gi")
    mount = "/gotest/outputs/output_text"
    writer = ["sh", "-c", f"mkdir -p {mount} && echo 'hello volume' > {mount}/data"]
    await runtime.apply(job(namespace, "writer", writer, **with_claim("workdir", mount)))
    assert (await runtime.wait(namespace, "writer", timeout=20)).phase == Phase.SUCCEEDED
    reader = ["cat", "/read/here/data"]
    await runtime.apply(job(namespace, "reader", reader, **with_claim("workdir", "/read/here")))
    status = await runtime.wait(namespace, "reader", timeout=20)
    assert status.phase == Phase.SUCCEEDED, status
    assert await read_logs(runtime, namespace, "reader") == ["hello volume"]


async def test_volume_read_only_mount(runtime: Runtime, namespace: str) -> None:
    await runtime.create_volume(namespace, "ro")
    spec = job(namespace, "rojob", ["sh", "-c", "echo x > /ro/file"], **with_claim("ro", "/ro"))
    spec["volumeMounts"][0]["readOnly"] = True
    await runtime.apply(spec)
    assert (await runtime.wait(namespace, "rojob", timeout=20)).phase == Phase.FAILED


async def test_apply_unknown_claim_fails(runtime: Runtime, namespace: str) -> None:
    spec = job(namespace, "noclaim", ["true"], **with_claim("missing", "/data"))
    await runtime.apply(spec)
    status = await runtime.wait(namespace, "noclaim", timeout=20)
    assert status.phase == Phase.FAILED
    assert status.message == f"PersistentVolumeClaim missing not found in namespace {namespace}"


async def test_server_ready_endpoint(runtime: Runtime, namespace: str) -> None:
    first = await runtime.apply(http_server_workload(namespace, "web"))
    # Python needs far longer than apply() to start listening: not ready, no endpoint yet.
    assert first.ready is False and first.endpoint is None
    status = await runtime.wait(namespace, "web", timeout=20, ready=True)
    assert status.phase == Phase.RUNNING and status.ready
    url = assert_endpoint(status.endpoint)  # opaque: http:// or a sandbox's broker, either
    async with endpoint_client() as client:
        response = await client.get(url + "/", timeout=5)
    assert response.status_code == 200
    await runtime.delete(namespace, "web")
    with pytest.raises(WorkloadNotFound):
        await runtime.status(namespace, "web")


async def test_server_restart_with_backoff(runtime: Runtime, namespace: str) -> None:
    await runtime.apply(
        server(namespace, "crashy", ["sh", "-c", "echo starting; exit 1"], restartPolicy="Always")
    )
    end = time.monotonic() + 30
    status = await runtime.status(namespace, "crashy")
    while status.restart_count < 2 and time.monotonic() < end:
        await asyncio.sleep(0.1)
        status = await runtime.status(namespace, "crashy")
    assert status.restart_count >= 2
    assert status.phase == Phase.RUNNING and not status.ready
    # Kubernetes keeps the current and the previous container's log, not every run's.
    assert (await read_logs(runtime, namespace, "crashy")).count("starting") >= 1


async def test_server_never_restart_fails(runtime: Runtime, namespace: str) -> None:
    await runtime.apply(server(namespace, "once", ["sh", "-c", "exit 4"], restartPolicy="Never"))
    status = await runtime.wait(namespace, "once", timeout=20)
    assert (status.phase, status.exit_code, status.restart_count) == (Phase.FAILED, 4, 0)


async def test_job_backoff_limit(runtime: Runtime, namespace: str) -> None:
    spec = job(
        namespace,
        "retry",
        ["sh", "-c", "echo try; exit 2"],
        restartPolicy="OnFailure",
        backoffLimit=1,
    )
    await runtime.apply(spec)
    status = await runtime.wait(namespace, "retry", timeout=30)
    assert (status.phase, status.reason) == (Phase.FAILED, "BackoffLimitExceeded")
    assert status.exit_code not in (None, 0)
    assert (await read_logs(runtime, namespace, "retry")).count("try") >= 1


async def test_deadline_exceeded(runtime: Runtime, namespace: str) -> None:
    started = time.monotonic()
    await runtime.apply(job(namespace, "slow", ["sleep", "30"], activeDeadlineSeconds=0.5))
    status = await runtime.wait(namespace, "slow", timeout=20)
    assert status.phase == Phase.FAILED
    assert status.reason == "DeadlineExceeded"
    assert time.monotonic() - started < 15


async def test_memory_limit_enforced(runtime: Runtime, namespace: str) -> None:
    hog = ["python3", "-c", "x = bytearray(1024 * 1024 * 1024); print('allocated')"]
    await runtime.apply(job(namespace, "hog", hog, resources={"limits": {"memory": "256Mi"}}))
    status = await runtime.wait(namespace, "hog", timeout=20)
    assert status.phase == Phase.FAILED
    assert "allocated" not in await read_logs(runtime, namespace, "hog")


async def test_delete_kills_process_tree(runtime: Runtime, namespace: str) -> None:
    """A background child writes heartbeats into a volume; after delete they must stop."""
    await runtime.create_volume(namespace, "beats")
    script = "(while true; do echo beat >> /beats/log; sleep 0.05; done) & sleep 1000"
    await runtime.apply(
        job(namespace, "tree", ["sh", "-c", script], **with_claim("beats", "/beats"))
    )
    await eventually_readable(runtime, namespace, "beats", "log")
    await runtime.delete(namespace, "tree")
    size = len(await runtime.read_file(namespace, "beats", "log"))
    await asyncio.sleep(0.5)
    assert len(await runtime.read_file(namespace, "beats", "log")) == size, (
        "a child of the deleted workload is still running"
    )
    with pytest.raises(WorkloadNotFound):
        await runtime.status(namespace, "tree")
    await runtime.delete(namespace, "tree")  # idempotent


async def eventually_readable(
    runtime: Runtime,
    namespace: str,
    claim: str,
    path: str,
    containing: bytes = b"",
    within: float = 20,
) -> bytes:
    """The file once a workload has written into it (``containing``, if given): a file
    another process writes has nothing to await but the file itself."""
    end = time.monotonic() + within
    while True:
        try:
            data = await runtime.read_file(namespace, claim, path)
        except FileNotFoundError:
            data = b""
        if (data and containing in data) or time.monotonic() > end:
            assert data and containing in data, f"{path} in {claim}: {data!r}"
            return data
        await asyncio.sleep(0.1)


async def test_apply_twice_creates_one_workload(runtime: Runtime, namespace: str) -> None:
    await runtime.create_volume(namespace, "count")
    spec = job(
        namespace,
        "once",
        ["sh", "-c", "echo ran >> /count/runs; sleep 0.3"],
        **with_claim("count", "/count"),
    )
    await asyncio.gather(runtime.apply(spec), runtime.apply(spec))
    await runtime.apply(spec)
    status = await runtime.wait(namespace, "once", timeout=20)
    assert status.phase == Phase.SUCCEEDED
    await runtime.apply(spec)  # after completion too: no second run
    await asyncio.sleep(0.3)
    assert await runtime.read_file(namespace, "count", "runs") == b"ran\n"
    assert [s.name for s in await runtime.list(namespace=namespace)] == ["once"]


async def test_list_label_selector(runtime: Runtime, namespace: str) -> None:
    labels = {
        "a": {"app": "trial", "exp": "e1"},
        "b": {"app": "trial", "exp": "e2"},
        "c": {"app": "step"},
    }
    for name, lbl in labels.items():
        await runtime.apply(job(namespace, name, ["true"], labels=lbl, owner={"kind": "Trial"}))

    async def names(selector: Any) -> list[str]:
        return sorted(s.name for s in await runtime.list(selector, namespace=namespace))

    assert await names(None) == ["a", "b", "c"]
    assert await names({"app": "trial"}) == ["a", "b"]
    assert await names("app=trial,exp!=e1") == ["b"]
    assert await names("app!=trial") == ["c"]
    assert await names("exp in (e1, e2)") == ["a", "b"]
    assert await names("!exp") == ["c"]
    assert await names("exp") == ["a", "b"]
    status = (await runtime.list({"exp": "e1"}, namespace=namespace))[0]
    assert status.labels == labels["a"] and status.owner == {"kind": "Trial"}


async def test_status_unknown_raises(runtime: Runtime, namespace: str) -> None:
    with pytest.raises(WorkloadNotFound):
        await runtime.status(namespace, "nope")
    await runtime.delete(namespace, "nope")  # deleting the unknown is fine


async def test_volumes_lifecycle(runtime: Runtime, namespace: str) -> None:
    first = await runtime.create_volume(namespace, "v1", size="1Gi", labels={"team": "a"})
    again = await runtime.create_volume(namespace, "v1", size="2Gi")
    assert again.created_at == first.created_at and again.size == "1Gi"
    await runtime.create_volume(namespace, "v2")
    assert [v.name for v in await runtime.list_volumes(namespace)] == ["v1", "v2"]
    assert [v.name for v in await runtime.list_volumes(namespace, {"team": "a"})] == ["v1"]
    assert await runtime.volume_exists(namespace, "v1")
    await runtime.delete_volume(namespace, "v1")
    await runtime.delete_volume(namespace, "v1")
    assert [v.name for v in await runtime.list_volumes(namespace)] == ["v2"]
    assert not await runtime.volume_exists(namespace, "v1")
    with pytest.raises(KeyError, match="PersistentVolumeClaim v1 not found"):
        await runtime.read_file(namespace, "v1", "anything")


async def test_stop_all_by_label(runtime: Runtime, namespace: str) -> None:
    for name, group in (("s1", "x"), ("s2", "y")):
        await runtime.apply(job(namespace, name, ["sleep", "30"], labels={"group": group}))
    stopped = await runtime.stop_all({"group": "x"})
    assert [s.name for s in stopped] == ["s1"]
    assert stopped[0].phase == Phase.FAILED and stopped[0].reason == "Stopped"
    assert (await runtime.status(namespace, "s2")).phase in (Phase.PENDING, Phase.RUNNING)


async def test_apply_invalid_spec_names_the_field(runtime: Runtime, namespace: str) -> None:
    with pytest.raises(ValueError, match="volumeMounts"):
        await runtime.apply(
            job(namespace, "x", ["true"], volumeMounts=[{"name": "nope", "mountPath": "/d"}])
        )
    with pytest.raises(ValueError, match="name"):
        await runtime.apply(job(namespace, "../escape", ["true"]))
    assert os.sep not in namespace


async def test_volume_users_lists_unfinished_mounters(runtime: Runtime, namespace: str) -> None:
    await runtime.create_volume(namespace, "shared")
    await runtime.apply(
        job(namespace, "holder", ["sh", "-c", "sleep 30"], **with_claim("shared", "/data"))
    )
    await runtime.apply(job(namespace, "quick", ["true"], **with_claim("shared", "/data")))
    await runtime.wait(namespace, "quick", timeout=20)
    await runtime.apply(job(namespace, "unrelated", ["sh", "-c", "sleep 30"]))
    assert await runtime.volume_users(namespace, "shared") == ["holder"]
    await runtime.delete(namespace, "holder")
    assert await runtime.volume_users(namespace, "shared") == []
    await runtime.delete(namespace, "unrelated")


async def test_files_are_placed_read_only(runtime: Runtime, namespace: str) -> None:
    files = {
        "/var/run/shipyard/step/plan.json": '{"step": 1}',
        "/var/run/shipyard/step/script": "print('from the script')",
        "/opt/shipyard-tools/tool.txt": "tool\nwith two lines",
    }
    script = (
        "cat /var/run/shipyard/step/plan.json; echo; "
        "python3 /var/run/shipyard/step/script; "
        "cat /opt/shipyard-tools/tool.txt; echo; "
        "if echo x > /var/run/shipyard/step/plan.json; then echo WRITABLE; fi 2> /dev/null"
    )
    await runtime.apply(job(namespace, "files", ["sh", "-c", script], files=files))
    status = await runtime.wait(namespace, "files", timeout=20)
    assert status.phase == Phase.SUCCEEDED, status
    assert await read_logs(runtime, namespace, "files") == [
        '{"step": 1}',
        "from the script",
        "tool",
        "with two lines",
    ]


# An emptyDir the init steps fill and the command reads, as KServe's storage initializer
# fills /mnt/models before the model server starts.
SCRATCH = {
    "volumeMounts": [{"name": "scratch", "mountPath": "/mnt/models"}],
    "volumes": [{"name": "scratch", "emptyDir": {}}],
}


async def test_init_steps_fill_an_emptydir_before_the_command(
    runtime: Runtime, namespace: str
) -> None:
    """Init steps run in order, each to its end, with the workload's mounts, files and
    environment plus their own; the command then finds what they wrote."""
    init = [
        {
            "name": "fetch",
            "command": ["sh", "-c"],
            "args": ['cat /var/run/shipyard/plan/plan.txt > /mnt/models/model.txt; echo "$(WHO)"'],
            "env": [{"name": "WHO", "value": "fetched by $(OWNER)"}],
        },
        {"name": "check", "command": ["sh", "-c", "echo checked $(wc -c < /mnt/models/model.txt)"]},
    ]
    spec = job(
        namespace,
        "inits",
        ["sh", "-c", 'echo "serving $(cat /mnt/models/model.txt) for $OWNER, WHO=${WHO:-unset}"'],
        env=[{"name": "OWNER", "value": "alice"}],
        files={"/var/run/shipyard/plan/plan.txt": "weights-7"},
        initContainers=init,
        **SCRATCH,
    )
    await runtime.apply(spec)
    status = await runtime.wait(namespace, "inits", timeout=30)
    assert status.phase == Phase.SUCCEEDED, status
    assert await read_logs(runtime, namespace, "inits") == [
        "fetched by alice",
        "checked 9",
        "serving weights-7 for alice, WHO=unset",  # a step's own env is its alone
    ]


async def test_init_step_failure_fails_the_workload(runtime: Runtime, namespace: str) -> None:
    """A failed init step of a workload that is not restarted fails it with the step's name,
    exit code and last output; the command never runs."""
    init = [{"name": "fetch", "command": ["sh", "-c", "echo no model at the URL >&2; exit 4"]}]
    await runtime.apply(
        job(namespace, "init-fails", ["sh", "-c", "echo MAIN RAN"], initContainers=init, **SCRATCH)
    )
    status = await runtime.wait(namespace, "init-fails", timeout=30)
    assert status.phase == Phase.FAILED, status
    assert (status.reason, status.exit_code) == ("InitError", 4)
    assert "init step 'fetch' exited with code 4" in (status.message or "")
    assert "no model at the URL" in (status.message or "")
    logs = await read_logs(runtime, namespace, "init-fails")
    assert "no model at the URL" in logs and "MAIN RAN" not in logs


async def test_init_step_is_retried_under_on_failure(runtime: Runtime, namespace: str) -> None:
    """With restartPolicy OnFailure a failed init step is tried again (with back-off) before
    the command runs; here it fails once, then finds what its first try left."""
    once = "if [ -e /mnt/models/tried ]; then echo ok; else touch /mnt/models/tried; exit 2; fi"
    init = [{"name": "flaky", "command": ["sh", "-c", once]}]
    spec = job(
        namespace,
        "init-retry",
        ["sh", "-c", "echo main after init"],
        initContainers=init,
        restartPolicy="OnFailure",
        **SCRATCH,
    )
    await runtime.apply(spec)
    status = await runtime.wait(namespace, "init-retry", timeout=30)
    assert status.phase == Phase.SUCCEEDED, status
    assert status.restart_count == 1
    assert await read_logs(runtime, namespace, "init-retry") == ["ok", "main after init"]


async def test_init_steps_are_validated(runtime: Runtime, namespace: str) -> None:
    step = {"name": "fetch", "command": ["true"]}
    with pytest.raises(ValueError, match="initContainers.*'fetch' is used twice"):
        await runtime.apply(job(namespace, "x", ["true"], initContainers=[step, step]))
    with pytest.raises(ValueError, match=r"initContainers\.0\.name"):
        await runtime.apply(
            job(namespace, "x", ["true"], initContainers=[{"name": "Bad_Name", "args": ["x"]}])
        )
    with pytest.raises(ValueError, match="command or args"):
        await runtime.apply(job(namespace, "x", ["true"], initContainers=[{"name": "empty"}]))
    with pytest.raises(ValueError, match="workload's own container"):
        await runtime.apply(
            job(namespace, "x", ["true"], initContainers=[{"name": "workload", "args": ["x"]}])
        )
    assert await runtime.list(namespace=namespace) == []


async def test_read_file(runtime: Runtime, namespace: str) -> None:
    await runtime.create_volume(namespace, "metrics")
    script = (
        "mkdir -p /data/out && printf 'accuracy=0.9\\nloss=0.1\\n' > /data/out/metrics.txt"
        " && head -c 3000 /dev/zero > /data/big && mkdir -p /data/adir"
    )
    await runtime.apply(job(namespace, "w", ["sh", "-c", script], **with_claim("metrics", "/data")))
    assert (await runtime.wait(namespace, "w", timeout=20)).phase == Phase.SUCCEEDED
    data = await runtime.read_file(namespace, "metrics", "out/metrics.txt")
    assert data == b"accuracy=0.9\nloss=0.1\n"
    assert await runtime.read_file(namespace, "metrics", "/out/./metrics.txt") == data
    assert len(await runtime.read_file(namespace, "metrics", "big", max_bytes=3000)) == 3000
    with pytest.raises(ValueError, match="larger than"):
        await runtime.read_file(namespace, "metrics", "big", max_bytes=2999)
    with pytest.raises(FileNotFoundError):
        await runtime.read_file(namespace, "metrics", "out/missing.txt")
    with pytest.raises(FileNotFoundError):
        await runtime.read_file(namespace, "metrics", "adir")
    with pytest.raises(ValueError, match=r"'\.\.'"):
        await runtime.read_file(namespace, "metrics", "../metrics/out/metrics.txt")
    with pytest.raises(VolumeNotFound):
        await runtime.read_file(namespace, "no-such-claim", "out/metrics.txt")


async def test_read_file_refuses_links(runtime: Runtime, namespace: str) -> None:
    """A workload plants links in its volume pointing out of it: read_file follows none."""
    await runtime.create_volume(namespace, "planted")
    script = (
        "echo inside > /data/real && ln -s /etc/passwd /data/leak && ln -s / /data/root"
        " && ln -s real /data/inner"
    )
    await runtime.apply(
        job(namespace, "plant", ["sh", "-c", script], **with_claim("planted", "/data"))
    )
    assert (await runtime.wait(namespace, "plant", timeout=20)).phase == Phase.SUCCEEDED
    assert await runtime.read_file(namespace, "planted", "real") == b"inside\n"
    for path in ("leak", "root/etc/passwd", "inner"):
        with pytest.raises(FileNotFoundError):
            await runtime.read_file(namespace, "planted", path)


async def test_adopt_after_restart(backend: Backend, runtime: Runtime, namespace: str) -> None:
    """The service restarts mid-run: a new runtime finds both workloads, reruns nothing."""
    await runtime.create_volume(namespace, "runs")
    slow = "echo slow >> /runs/ran; echo slow-out; sleep 3; exit 7"
    quick = "echo quick >> /runs/ran; exit 3"
    await runtime.apply(job(namespace, "slow", ["sh", "-c", slow], **with_claim("runs", "/runs")))
    await runtime.apply(job(namespace, "quick", ["sh", "-c", quick], **with_claim("runs", "/runs")))
    await eventually_readable(runtime, namespace, "runs", "ran", containing=b"slow")
    assert not (await runtime.status(namespace, "slow")).finished
    await runtime.close()  # a rolling restart: workloads keep running

    again = await backend.open()
    adopted = {s.name: s for s in await again.adopt()}
    assert set(adopted) >= {"slow", "quick"}
    assert len(await again.adopt()) == len(adopted)  # idempotent
    slow_end = await again.wait(namespace, "slow", timeout=20)
    assert (slow_end.phase, slow_end.exit_code) == (Phase.FAILED, 7)
    quick_end = await again.wait(namespace, "quick", timeout=20)
    assert (quick_end.phase, quick_end.exit_code) == (Phase.FAILED, 3)
    assert await read_logs(again, namespace, "slow") == ["slow-out"]
    await again.apply(job(namespace, "slow", ["sh", "-c", slow], **with_claim("runs", "/runs")))
    ran = sorted((await again.read_file(namespace, "runs", "ran")).decode().split())
    assert ran == ["quick", "slow"]
    await again.delete(namespace, "slow")
    with pytest.raises(WorkloadNotFound):
        await again.status(namespace, "slow")
