"""`shipyard up` as a real subprocess: it must start its own NATS, come up, and leave nothing.

Most tests run stand-in processes (tests/up_standin.py) in place of the gateway and
services, so they test the supervisor alone and cheaply (each stand-in also leaves a
grandchild to clean up); `test_up_real_platform_*` runs the real modules.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from shipyard.up import DEFAULT_MODULES, Platform, PlatformError, free_port
from tests import specs
from tests.conftest import RunningSeaweedFS

REPO = Path(__file__).resolve().parent.parent
STANDIN = "tests.up_standin"
STANDIN_ARGS = [f"--process-module={name}={STANDIN}" for name in DEFAULT_MODULES]


def _dead_port() -> int:
    """A port nothing listens on, so `shipyard up` must start its own nats-server."""
    return free_port()


def _up_argv(state_dir: Path, *extra: str) -> list[str]:
    """`shipyard up` (this interpreter) on ``state_dir`` and free ports, then ``extra``."""
    return [
        sys.executable,
        "-m",
        "shipyard.up",
        "--state-dir",
        str(state_dir),
        "--free-ports",
        *extra,
    ]


def _spawn_up(
    state_dir: Path, gateway_port: int, *extra: str, s3: RunningSeaweedFS
) -> subprocess.Popen[str]:
    """`shipyard up` with a dead NATS URL (it starts its own) and the session's SeaweedFS as
    SHIPYARD_S3_* (test_platform_runs_embedded_seaweedfs_* covers the embedded one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.pop("NATS_URL", None)
    env.update(s3.config.env())
    env["PYTHONPATH"] = str(REPO)
    argv = _up_argv(
        state_dir,
        "--port",
        str(gateway_port),
        "--nats-url",
        f"nats://127.0.0.1:{_dead_port()}",
        "--ready-timeout",
        "60",
        *extra,
    )
    return subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_healthy(proc: subprocess.Popen[str], url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"shipyard up exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{url} not healthy within {timeout} s")


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _still_running(procs: list[psutil.Process]) -> list[str]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{p.pid} {' '.join(p.cmdline())}")
        except psutil.NoSuchProcess:
            pass
    return alive


def _processes_mentioning(state_dir: Path) -> list[str]:
    """Live processes whose command line or environment names this test's state dir."""
    found = []
    needle = str(state_dir)
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            env = p.environ()
            cmd = " ".join(p.info["cmdline"] or [])
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if needle in cmd or env.get("SHIPYARD_STATE_DIR") == needle:
                found.append(f"{p.pid} {cmd}")
        except (psutil.Error, OSError):
            pass
    return found


def _interrupt(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"shipyard up did not stop within 30 s after SIGINT:\n{out}")
    return out


def _finished(url: str, within: float = 90) -> dict[str, Any]:
    """The Workflow at ``url`` once it has finished (Succeeded, Failed or Error)."""
    deadline = time.monotonic() + within
    while True:
        wf = httpx.get(url, timeout=30).json()
        if wf.get("status", {}).get("phase") in ("Succeeded", "Failed", "Error"):
            return wf  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, wf.get("status")
        time.sleep(0.2)


def test_up_sigint_stops_every_child(tmp_path: Path, seaweedfs: RunningSeaweedFS) -> None:
    state_dir = tmp_path / "state"
    gateway_port = free_port()
    proc = _spawn_up(state_dir, gateway_port, *STANDIN_ARGS, s3=seaweedfs)
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{gateway_port}/healthz")
        time.sleep(0.3)  # let each stand-in spawn its grandchild
        children = _descendants(proc.pid)
        names = " ".join(" ".join(p.cmdline()) for p in children)
    finally:
        out = _interrupt(proc)
    assert proc.returncode == 0, out
    assert "nats-server" in names, "it must start its own NATS when NATS_URL is dead"
    assert names.count(STANDIN) == 5
    # each stand-in has a grandchild: 5 leaders + 5 grandchildren + nats-server
    assert len(children) >= 11
    assert (state_dir / "keys" / "gateway.key").is_file()
    assert (state_dir / "nats").is_dir()
    assert (state_dir / "logs" / "gateway.log").is_file()
    assert f"http://127.0.0.1:{gateway_port}" in out
    assert "SINGLE-USER MODE" in out
    assert _still_running(children) == []
    assert _processes_mentioning(state_dir) == []


def test_up_child_crash_reports_log_and_stops_rest(
    tmp_path: Path, seaweedfs: RunningSeaweedFS
) -> None:
    state_dir = tmp_path / "state"
    args = [a for a in STANDIN_ARGS if not a.startswith("--process-module=notebook=")]
    proc = _spawn_up(
        state_dir,
        free_port(),
        *args,
        "--process-module=notebook=tests.no_such_module",
        s3=seaweedfs,
    )
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 1, out
    assert "notebook exited with code 1" in out
    assert "No module named tests.no_such_module" in out  # the log tail is shown
    assert _processes_mentioning(state_dir) == []


def test_platform_uses_answering_nats(
    tmp_path: Path, nats_url: str, seaweedfs: RunningSeaweedFS
) -> None:
    platform = Platform(
        tmp_path,
        nats_url=nats_url,
        s3=seaweedfs.config,
        ports=Platform.free_ports(),
        modules=dict.fromkeys(DEFAULT_MODULES, STANDIN),
    )
    with platform:
        assert platform.nats_child is None
        assert platform.resolved_nats_url == nats_url
        for url in platform.urls.values():
            assert httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        time.sleep(0.3)
        procs = [psutil.Process(pid) for pid in platform.pids()]
    assert len(procs) >= 10  # 5 stand-ins and their grandchildren
    assert _still_running(procs) == []


def test_platform_port_in_use_fails_clearly(tmp_path: Path, nats_url: str) -> None:
    ports = Platform.free_ports()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["automl"]))
        busy.listen()
        platform = Platform(
            tmp_path,
            nats_url=nats_url,
            ports=ports,
            modules=dict.fromkeys(DEFAULT_MODULES, STANDIN),
        )
        with pytest.raises(PlatformError, match=f"automl: port {ports['automl']}"):
            platform.start()
    assert platform.children == []


def test_up_real_platform_healthy_then_clean_stop(
    tmp_path: Path, seaweedfs: RunningSeaweedFS
) -> None:
    """The quickstart path: SQLite under the state dir, our own nats-server, real modules."""
    state_dir = tmp_path / "state"
    gateway_port = free_port()
    proc = _spawn_up(state_dir, gateway_port, s3=seaweedfs)
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{gateway_port}/healthz")
        children = _descendants(proc.pid)
    finally:
        out = _interrupt(proc)
    assert proc.returncode == 0, out
    assert _still_running(children) == []
    assert _processes_mentioning(state_dir) == []


def test_up_says_when_workloads_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a working bubblewrap, `shipyard up` says at start that every workload will fail
    and how to fix it; with one, it says what the sandbox enforces here."""
    from shipyard.up import _check_sandbox

    monkeypatch.setenv("SHIPYARD_BWRAP_PATH", "/nonexistent/bwrap")
    with caplog.at_level("INFO", logger="shipyard.up"):
        _check_sandbox(tmp_path / "state")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, caplog.text
    assert "workloads cannot run" in errors[0] and "SandboxUnavailable" in errors[0]
    assert "/nonexistent/bwrap" in errors[0] and "apt-get install bubblewrap" in errors[0]
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    caplog.clear()
    monkeypatch.setenv("SHIPYARD_BWRAP_PATH", "bwrap")
    with caplog.at_level("INFO", logger="shipyard.up"):
        _check_sandbox(tmp_path / "state")
    infos = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("workload sandbox: ") and "seccomp" in m for m in infos), infos


def test_platform_runs_embedded_seaweedfs_and_passes_s3_settings(tmp_path: Path) -> None:
    """Without SHIPYARD_S3_*, the platform runs SeaweedFS on loopback ports of its own, keeps
    its data and credentials (0600) under the state dir, creates the bucket, and gives every
    process the store as SHIPYARD_S3_*; stopping the platform stops it."""
    import asyncio

    from services.common.objectstore import ObjectStore

    platform = Platform(
        tmp_path,
        ports=Platform.free_ports(),
        modules=dict.fromkeys(DEFAULT_MODULES, STANDIN),
    )
    with platform:
        store = platform.resolved_s3
        assert platform.s3_child is not None and store is not None
        assert store.endpoint.startswith("http://127.0.0.1:") and store.bucket == "mlpipeline"
        for child in platform.children:
            env = psutil.Process(child.pid).environ()
            assert env["SHIPYARD_S3_ENDPOINT"] == store.endpoint, child.name
            assert env["SHIPYARD_S3_ACCESS_KEY_ID"] == store.access_key_id
            assert env["SHIPYARD_S3_SECRET_ACCESS_KEY"] == store.secret_access_key
            assert env["SHIPYARD_S3_BUCKET"] == "mlpipeline"
            assert env["SHIPYARD_S3_REGION"] == "us-east-1"

        async def bucket_exists() -> bool:
            async with ObjectStore(store) as client:
                return await client.ensure_bucket() is False

        assert asyncio.run(bucket_exists())
        weed = psutil.Process(platform.s3_child.pid)
        assert (tmp_path / "s3" / "identities.json").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "s3" / "data").is_dir()
    assert not weed.is_running() or weed.status() == psutil.STATUS_ZOMBIE


def test_platform_store_refusing_credentials_fails_clearly(
    tmp_path: Path, nats_url: str, seaweedfs: RunningSeaweedFS
) -> None:
    from dataclasses import replace

    config = replace(seaweedfs.config, secret_access_key="wrong")
    platform = Platform(
        tmp_path,
        nats_url=nats_url,
        s3=config,
        ports=Platform.free_ports(),
        modules=dict.fromkeys(DEFAULT_MODULES, STANDIN),
    )
    with pytest.raises(PlatformError) as info:
        platform.start()
    message = str(info.value)
    assert message.startswith("object store (SHIPYARD_S3_*): ")
    assert config.endpoint in message and "refused the credentials" in message
    assert "SHIPYARD_S3_SECRET_ACCESS_KEY" in message
    assert platform.children == [] and platform.s3_child is None  # the services were stopped


def test_up_unreachable_store_says_which_and_what_to_check(tmp_path: Path) -> None:
    """`shipyard up` with SHIPYARD_S3_ENDPOINT pointing nowhere: one clear line, exit 1, no
    traceback, nothing left running."""
    state_dir = tmp_path / "state"
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        PYTHONPATH=str(REPO),
        SHIPYARD_S3_ENDPOINT=endpoint,
        SHIPYARD_S3_ACCESS_KEY_ID="key",
        SHIPYARD_S3_SECRET_ACCESS_KEY="secret",
    )
    out = subprocess.run(
        _up_argv(state_dir, *STANDIN_ARGS),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert f"does not answer at S3 endpoint {endpoint}" in out.stderr
    assert "Check SHIPYARD_S3_ENDPOINT" in out.stderr
    assert "Traceback" not in out.stderr
    assert _processes_mentioning(state_dir) == []


def test_real_platform_on_the_embedded_store_passes_artifacts(
    tmp_path: Path, nats_url: str
) -> None:
    """Without SHIPYARD_S3_*, the whole platform (real services) works on the SeaweedFS it
    starts: an Argo output artifact passes between two steps and lands in the embedded
    bucket under the workflow's name, and nothing of it listens on a fixed port."""
    import asyncio

    from services.common.objectstore import ObjectStore
    from tests.conftest import fresh_database

    workflow = specs.workflow(
        "embedded-",
        [
            {
                "name": "main",
                "steps": [
                    [{"name": "make", "template": "make"}],
                    [
                        {
                            "name": "use",
                            "template": "use",
                            "arguments": {
                                "artifacts": [
                                    {
                                        "name": "in",
                                        "from": "{{steps.make.outputs.artifacts.out}}",
                                    }
                                ]
                            },
                        }
                    ],
                ],
            },
            {
                "name": "make",
                "container": {"image": "alpine", "command": ["sh", "-c", "echo hi > /tmp/o"]},
                "outputs": {"artifacts": [{"name": "out", "path": "/tmp/o"}]},
            },
            {
                "name": "use",
                "inputs": {"artifacts": [{"name": "in", "path": "/tmp/i"}]},
                "container": {"image": "alpine", "command": ["cat", "/tmp/i"]},
            },
        ],
        generate_name=True,
    )
    with (
        fresh_database("shipyard_test_embedded") as db_url,
        Platform(
            tmp_path,
            database_url=db_url,
            nats_url=nats_url,
            ports=Platform.free_ports(),
            auth_mode="single-user",
        ) as platform,
    ):
        store = platform.resolved_s3
        assert platform.s3_child is not None and store is not None
        ns = "kubeflow-user-example-com"
        base = f"{platform.gateway_url}/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows"
        created = httpx.post(base, json=workflow, timeout=30)
        assert created.status_code == 201, created.text
        name = created.json()["metadata"]["name"]
        wf = _finished(f"{base}/{name}")
        assert wf["status"]["phase"] == "Succeeded", wf["status"]
        logs = httpx.get(f"{base}/{name}/log", params={"logOptions.container": "main"}, timeout=30)
        assert "hi" in logs.text, logs.text

        async def keys() -> list[str]:
            async with ObjectStore(store) as client:
                return [o.key async for o in client.list(f"artifacts/{ns}/{name}/")]

        stored = asyncio.run(keys())
        # The artifact, and each wrapped step's report of its outputs (runner.py's state key).
        artifacts = [k for k in stored if "/.shipyard/" not in k]
        assert len(artifacts) == 1 and artifacts[0].endswith("/out.tgz"), stored
        reports = [k for k in stored if "/.shipyard/" in k]
        assert reports and all(k.endswith("/.shipyard/result.json") for k in reports), stored
        listening = {
            c.laddr.port
            for c in psutil.Process(platform.s3_child.pid).net_connections()
            if c.status == psutil.CONN_LISTEN
        }
        assert not listening & {8080, 8181, 8111, 8333, 8888, 9333, 6060, 7333, 2022}, listening


def _service_pid(up_pid: int, module: str) -> int:
    for p in _descendants(up_pid):
        try:
            if p.cmdline()[-2:] == ["-m", module]:
                return p.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no {module} under shipyard up")


def test_up_restarts_killed_services_and_the_workflow_finishes_once(
    tmp_path: Path, seaweedfs: RunningSeaweedFS
) -> None:
    """SIGKILL of the pipeline and automl services while a two-step workflow runs: `shipyard
    up` starts both again by itself, the API answers, the workflow Succeeds, and each step
    ran exactly once (each appends a line to a file in a volume)."""
    import asyncio

    from services.common.runtime import LocalRuntime

    state_dir = tmp_path / "state"
    gateway_port = free_port()
    proc = _spawn_up(state_dir, gateway_port, s3=seaweedfs)
    gw = f"http://127.0.0.1:{gateway_port}"
    ns = "kubeflow-user-example-com"
    try:
        _wait_healthy(proc, f"{gw}/healthz")
        claim = specs.claim("marks", "1Mi")
        r = httpx.post(f"{gw}/api/v1/namespaces/{ns}/persistentvolumeclaims", json=claim)
        assert r.status_code == 201, r.text

        workflow = specs.counted_workflow(
            "restarted-", "marks", {"a": "sleep 4", "b": "true"}, generate_name=True
        )
        base = f"{gw}/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows"
        created = httpx.post(base, json=workflow, timeout=30)
        assert created.status_code == 201, created.text
        name = created.json()["metadata"]["name"]
        deadline = time.monotonic() + 30
        while (
            httpx.get(f"{base}/{name}", timeout=10).json().get("status", {}).get("phase")
            != "Running"
        ):
            assert time.monotonic() < deadline, "the workflow never started"
            time.sleep(0.1)
        killed = {m: _service_pid(proc.pid, m) for m in ("services.pipeline", "services.automl")}
        for pid in killed.values():
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:  # both come back by themselves, as new processes
            try:
                again = {m: _service_pid(proc.pid, m) for m in killed}
            except AssertionError:
                again = {}
            if again and all(again[m] != killed[m] for m in killed):
                try:
                    if (
                        httpx.get(f"{base}/{name}", timeout=5).status_code == 200
                        and httpx.get(
                            f"{gw}/apis/kubeflow.org/v1beta1/namespaces/{ns}/experiments", timeout=5
                        ).status_code
                        == 200
                    ):
                        break
                except httpx.HTTPError:
                    pass
            assert time.monotonic() < deadline, "the killed services did not come back in 60 s"
            time.sleep(0.2)
        wf = _finished(f"{base}/{name}")
        assert wf["status"]["phase"] == "Succeeded", wf["status"]
        marks = asyncio.run(LocalRuntime(state_dir).resolve_volume(ns, "marks"))
        assert (marks / "a").read_text() == "ran\n"
        assert (marks / "b").read_text() == "ran\n"
    finally:
        out = _interrupt(proc)
    assert "pipeline exited with code -9" in out and "automl exited with code -9" in out, out
    assert "pipeline restarted (restart 1)" in out, out
    assert proc.returncode == 0, out


def test_a_child_started_from_a_thread_outlives_the_thread(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG fires when the thread that forked a child exits: a service restarted
    by a supervision loop in a thread (the chaos tests run ``Platform.supervise`` so) was
    stopped when that thread ended. Children are now forked by a thread that lives as long
    as the process; this one, started from a thread that then ends, is still running."""
    import threading

    from shipyard.children import Child, stop_children

    child = Child(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        dict(os.environ),
        tmp_path / "sleeper.log",
    )
    starter = threading.Thread(target=child.start)
    starter.start()
    starter.join()
    try:
        assert child.pid is not None
        time.sleep(1.0)  # the parent-death signal, if any, arrives at once
        assert child.exit_code() is None, child.exit_code()
    finally:
        stop_children([child], timeout=5)
    assert child.exit_code() is not None  # and stopping it still works
