"""LocalRuntime specifics: surviving its owner's SIGKILL, the sandbox, the supervisor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from services.common.runtime import LocalRuntime, Phase, WorkloadSpec, get_runtime
from services.common.runtime.expansion import expand
from services.common.runtime.kubernetes import KubernetesRuntime
from services.common.runtime.labels import parse_selector
from services.common.runtime.quantity import parse_quantity
from services.common.runtime.supervisor import SandboxError, open_beneath

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[3]

OWNER = textwrap.dedent(
    """
    import asyncio, sys
    from services.common.runtime import LocalRuntime

    def spec(name, script):
        return {
            "namespace": "adopt", "name": name, "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "runs", "mountPath": "/runs"}],
            "volumes": [{"name": "runs", "persistentVolumeClaim": {"claimName": "runs"}}],
        }

    async def main():
        rt = LocalRuntime(sys.argv[1])
        await rt.create_volume("adopt", "runs")
        await rt.apply(spec("slow", "echo slow >> /runs/ran; sleep 2; exit 7"))
        await rt.apply(spec("quick", "echo quick >> /runs/ran; sleep 0.3; exit 3"))
        while (await rt.status("adopt", "slow")).phase != "Running":
            await asyncio.sleep(0.01)
        print("applied", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


def job(name: str, command: list[str], **extra: object) -> dict[str, object]:
    return {"namespace": "local", "name": name, "command": command, **extra}


async def test_adopt_after_owner_sigkill(tmp_path: Path) -> None:
    """The owner dies by SIGKILL mid-run; a new runtime learns both exit codes, nothing reruns."""
    owner = subprocess.Popen(  # noqa: ASYNC220 - must be killable with SIGKILL by pid
        [sys.executable, "-c", OWNER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 20)  # type: ignore[union-attr]
        assert line.strip() == "applied"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
    await asyncio.sleep(0.8)  # "quick" finishes while nobody is watching
    runtime = LocalRuntime(tmp_path)
    quick = await runtime.status("adopt", "quick")
    assert (quick.phase, quick.exit_code) == (Phase.FAILED, 3)
    slow = await runtime.status("adopt", "slow")
    assert slow.phase == Phase.RUNNING  # still running, re-adopted
    await runtime.apply(
        {
            "namespace": "adopt",
            "name": "slow",
            "command": ["sh", "-c", "echo slow >> /runs/ran; sleep 2; exit 7"],
            "volumeMounts": [{"name": "runs", "mountPath": "/runs"}],
            "volumes": [{"name": "runs", "persistentVolumeClaim": {"claimName": "runs"}}],
        }
    )
    slow = await runtime.wait("adopt", "slow", timeout=20)
    assert (slow.phase, slow.exit_code) == (Phase.FAILED, 7)
    runs = (await runtime.resolve_volume("adopt", "runs")) / "ran"
    assert sorted(runs.read_text().split()) == ["quick", "slow"]
    await runtime.shutdown()


async def test_state_file_records_exit(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path)
    await runtime.apply(job("rec", ["sh", "-c", "exit 5"]))
    await runtime.wait("local", "rec", timeout=20)
    state = json.loads((tmp_path / "runtime/workloads/local/rec/state.json").read_text())
    assert state["exitCode"] == 5 and state["phase"] == "Failed" and state["supervisorPid"]


async def test_supervisor_lost_is_reported(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path)
    unique = f"{30 + os.getpid() % 1000 / 1000:.3f}"  # a sleep we can find among processes
    await runtime.apply(job("orphan", ["sleep", unique]))
    state_file = tmp_path / "runtime/workloads/local/orphan/state.json"
    end = time.monotonic() + 10
    while not (state_file.exists() and json.loads(state_file.read_text()).get("pid")):
        await asyncio.sleep(0.01)  # noqa: ASYNC110 - the supervisor writes this file
        assert time.monotonic() < end, "the workload never started"
    pid = json.loads(state_file.read_text())["supervisorPid"]
    os.kill(pid, signal.SIGKILL)
    status = await runtime.wait("local", "orphan", timeout=10)
    assert status.phase == Phase.FAILED and status.reason == "SupervisorLost"
    # The workload did not outlive its supervisor (killed by bwrap or by the runtime).
    await asyncio.sleep(0.1)
    left = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", unique]]
    assert left == []


async def test_missing_bwrap_fails_every_workload_with_install_hint(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path, bwrap_path="/nonexistent/bwrap")
    await runtime.create_volume("local", "data")
    await runtime.apply(
        job(
            "mounts",
            ["true"],
            volumeMounts=[{"name": "d", "mountPath": "/data"}],
            volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
        )
    )
    status = await runtime.wait("local", "mounts", timeout=10)
    assert status.phase == Phase.FAILED and status.reason == "SandboxUnavailable"
    assert "apt-get install bubblewrap" in (status.message or "")
    assert "/nonexistent/bwrap" in (status.message or "")
    # Without mounts too: nothing ever runs unsandboxed (fail closed).
    marker = tmp_path / "ran"
    await runtime.apply(job("plain", ["sh", "-c", f"touch {marker}"]))
    plain = await runtime.wait("local", "plain", timeout=10)
    assert plain.phase == Phase.FAILED and plain.reason == "SandboxUnavailable"
    assert "apt-get install bubblewrap" in (plain.message or "")
    assert not marker.exists()


async def test_sandbox_host_is_read_only_and_tmp_private(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path)
    marker = f"shipyard-{os.getpid()}-{time.monotonic_ns()}"
    script = (
        f"touch /usr/{marker} 2>/dev/null && echo usr-writable; "
        f"echo x > /tmp/{marker} && echo tmp-ok; "
        "echo x > ./here && echo cwd-ok; which python3"
    )
    await runtime.apply(job("ro", ["sh", "-c", script]))
    assert (await runtime.wait("local", "ro", timeout=20)).phase == Phase.SUCCEEDED
    logs = [line async for line in runtime.logs("local", "ro")]
    assert logs == ["tmp-ok", "cwd-ok", str(Path(sys.executable).parent / "python3")]
    assert not os.path.exists(f"/tmp/{marker}")  # noqa: ASYNC240 - a stat, in a test
    assert (tmp_path / f"runtime/workloads/local/ro/tmp/{marker}").exists()


async def test_working_dir_and_empty_dir(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path)
    spec = job(
        "wd",
        ["sh", "-c", "pwd; echo $HOME; echo hi > /scratch/f && cat /scratch/f"],
        workingDir="/app/src",
        volumeMounts=[{"name": "s", "mountPath": "/scratch"}],
        volumes=[{"name": "s", "emptyDir": {}}],
    )
    await runtime.apply(spec)
    assert (await runtime.wait("local", "wd", timeout=20)).phase == Phase.SUCCEEDED
    assert [line async for line in runtime.logs("local", "wd")] == ["/app/src", "/app/src", "hi"]


async def test_host_path_outside_volumes_refused(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path)
    spec = job(
        "hp",
        ["true"],
        volumeMounts=[{"name": "h", "mountPath": "/etcw"}],
        volumes=[{"name": "h", "hostPath": {"path": "/etc"}}],
    )
    await runtime.apply(spec)
    status = await runtime.wait("local", "hp", timeout=10)
    assert status.phase == Phase.FAILED and status.reason == "HostPathNotAllowed"


def test_supervisor_runs_as_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.common.runtime.supervisor"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 2 and "usage" in done.stderr


def test_get_runtime_by_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHIPYARD_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SHIPYARD_RUNTIME", "local")
    runtime = get_runtime()
    assert isinstance(runtime, LocalRuntime) and runtime.root == tmp_path / "runtime"
    monkeypatch.setenv("SHIPYARD_RUNTIME", "kubernetes")
    monkeypatch.setenv("SHIPYARD_PLATFORM_IMAGE", "registry.example/shipyard:1")
    kube = get_runtime()  # the client is made on first use: nothing is contacted here
    assert (
        isinstance(kube, KubernetesRuntime) and kube.platform_image == "registry.example/shipyard:1"
    )
    assert kube.python == "python3"


def test_open_beneath_creates_dirs_and_refuses_links(tmp_path: Path) -> None:
    root = tmp_path / "vol"
    root.mkdir()
    fd = open_beneath(str(root), "a/b", None)
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(root / "a" / "b"))
    finally:
        os.close(fd)
    (root / "a" / "link").symlink_to("/etc")
    with pytest.raises(SandboxError, match="'link' is a symbolic link"):
        open_beneath(str(root), "a/link/x", None)
    with pytest.raises(SandboxError, match="'..' is not allowed"):
        open_beneath(str(root), "a/../../x", None)
    assert not (Path("/etc") / "x").exists()


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "PORT": "8000"}
    assert expand("$(PORT)", env) == "8000"
    assert expand("x$(A)y$(B)", env) == "x1y$(B)"
    assert expand("$$(A) $$ $ $(", env) == "$(A) $ $ $("


def test_parse_selector_and_quantity() -> None:
    match = parse_selector("a=1,b!=2,c in (x, y),!d")
    assert match({"a": "1", "c": "x"}) and not match({"a": "1", "c": "x", "d": ""})
    with pytest.raises(ValueError):
        parse_selector("=x")
    assert parse_quantity("512Mi") == 512 * 2**20
    assert parse_quantity("1G") == 1e9 and parse_quantity("250m") == 0.25
    with pytest.raises(ValueError, match="resources.limits.memory"):
        parse_quantity("lots", "resources.limits.memory")


async def test_adopt_starts_workload_whose_launch_was_lost(tmp_path: Path) -> None:
    """The service died after recording the spec but before starting the supervisor."""
    crashed = LocalRuntime(tmp_path)

    async def no_launch(wdir: Path, spec: WorkloadSpec) -> None:  # stands in for the crash window
        return None

    crashed._launch = no_launch  # type: ignore[method-assign]
    await crashed.apply(job("lost", ["sh", "-c", "echo started"]))
    assert (await crashed.status("local", "lost")).phase == Phase.PENDING
    runtime = LocalRuntime(tmp_path)
    await runtime.adopt()
    status = await runtime.wait("local", "lost", timeout=20)
    assert status.phase == Phase.SUCCEEDED
    assert [line async for line in runtime.logs("local", "lost")] == ["started"]


def test_sandbox_mounts_shallowest_first_with_plain_parents(tmp_path: Path) -> None:
    """A virtualenv under /tmp (a CI checkout) stays visible over the workload's own /tmp, and
    the directories leading to it are traversable (bubblewrap would make them 0700)."""
    from services.common.runtime.supervisor import build_sandbox_argv

    (tmp_path / "tmp").mkdir()
    box = {
        "base": ["bwrap"],
        "symlinks": [],
        "roBinds": [["/tmp/ci/.venv", "/tmp/ci/.venv"], ["/usr", "/usr"]],
        "binds": [{"src": str(tmp_path / "tmp"), "dst": "/tmp", "ro": False}],
        "files": [],
        "seccomp": "/dev/null",
        "cwd": "/",
    }
    argv, keep, _ = build_sandbox_argv(box, ["true"])
    for fd in keep:
        os.close(fd)
    tmp_bind = argv.index("/tmp")
    parent = argv.index("/tmp/ci")
    venv = argv.index("--ro-bind", parent)
    assert tmp_bind < parent < venv and argv[parent - 3 : parent] == ["--perms", "0755", "--dir"]
    assert argv[venv : venv + 3] == ["--ro-bind", "/tmp/ci/.venv", "/tmp/ci/.venv"]


async def test_racing_creators_of_one_volume_all_get_it_whole(tmp_path: Path) -> None:
    """Services (or one service's threads) creating the same claim at once: every one gets
    the volume, its metadata whole (a shared temporary file once left it half-written: the
    PBT restart test of a CI run found it), made by whichever linked it first."""
    runtime = LocalRuntime(tmp_path)
    try:
        for round_ in range(5):
            name = f"shared-{round_}"
            made = await asyncio.gather(
                *(runtime.create_volume("team", name, size="1Gi") for _ in range(16))
            )
            assert {(v.name, v.size, v.created_at) for v in made} == {
                (name, "1Gi", made[0].created_at)
            }
            vdir = runtime.volumes.root / "team" / name
            assert sorted(p.name for p in vdir.iterdir()) == ["data", "volume.json"]
            json.loads((vdir / "volume.json").read_text())
    finally:
        await runtime.close()
