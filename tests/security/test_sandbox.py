"""A hostile tenant inside a real workload of the local runtime tries to get out; it must fail.

Each test runs tests/security/escape_probe.py inside a sandboxed workload (real bubblewrap,
real namespaces, the real supervisor) and reads its report. Positive controls prove the probe
could have succeeded where access is meant to work (the API address, its own volume), so a
"blocked" is the sandbox's doing, not a broken probe.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from services.common.identity import ensure_gateway_keys
from services.common.runtime import LocalRuntime, Phase, Runtime
from services.common.runtime.endpoint import connect, parse
from services.common.runtime.netns import local_socket_name
from services.common.runtime.sandbox import API_ADDRESS, cgroup_layout
from tests.security.conftest import PROBE, escape_reports, escapes

pytestmark = pytest.mark.timeout(90)

#: A server on its port and on the abstract unix socket ``$SHIPYARD_HTTP_SOCKET`` names.
LOCAL_SOCKET_SERVER = """
import os, socket, time
local = socket.socket(socket.AF_UNIX)
local.bind("\\0" + os.environ["SHIPYARD_HTTP_SOCKET"][1:])
local.listen(8)
tcp = socket.create_server(("0.0.0.0", int(os.environ["PORT"])))
time.sleep(3600)
"""


async def run_probe(
    runtime: Runtime, namespace: str, name: str, targets: dict[str, Any], **spec: Any
) -> dict[str, Any]:
    await runtime.apply(
        {
            "namespace": namespace,
            "name": name,
            "command": ["python3", "-c", PROBE, json.dumps(targets)],
            **spec,
        }
    )
    status = await runtime.wait(namespace, name, timeout=60)
    lines = [line async for line in runtime.logs(namespace, name)]
    reports = escape_reports(lines)
    assert status.phase == Phase.SUCCEEDED and reports, (status, lines)
    return reports[0]


async def test_workload_cannot_reach_secrets_other_tenants_or_the_host(
    tmp_path: Path, host_service: int
) -> None:
    state = tmp_path / "state"
    gateway_key, _ = ensure_gateway_keys(state)
    database = state / "automl.db"
    database.write_bytes(b"SQLite format 3\0")
    api_port = host_service
    runtime = LocalRuntime(
        state,
        workload_env=lambda ns: {"SHIPYARD_URL": f"http://127.0.0.1:{api_port}"},
    )
    host_socket = socket.socket(socket.AF_UNIX)
    try:
        # Tenant A: a volume with a secret in it, and a server listening in its sandbox.
        await runtime.create_volume("team-a", "data")
        secret = (await runtime.resolve_volume("team-a", "data")) / "secret.txt"
        secret.write_text("team-a's secret")
        await runtime.apply(
            {
                "kind": "server",
                "namespace": "team-a",
                "name": "web",
                "command": ["python3", "-m", "http.server", "$(PORT)", "--bind", "0.0.0.0"],
            }
        )
        await runtime.wait("team-a", "web", timeout=30, ready=True)
        # And a server on the abstract unix socket its endpoint connects to first (netns.py),
        # as shipyard's model server listens; the host has one of its own.
        await runtime.apply(
            {
                "kind": "server",
                "namespace": "team-a",
                "name": "model",
                "command": ["python3", "-c", LOCAL_SOCKET_SERVER],
            }
        )
        await runtime.wait("team-a", "model", timeout=30, ready=True)
        host_name = f"shipyard-escape-host-{os.getpid()}"
        host_socket.bind("\0" + host_name)
        host_socket.listen(1)
        unix_names = [local_socket_name(8080)[1:], host_name]
        # Tenant B, with a volume of its own, tries everything.
        await runtime.create_volume("team-b", "mine")
        targets = {
            "secret_files": [
                str(gateway_key),
                str(state / "keys" / "serviceaccounts.key"),
                str(database),
                str(secret),
                str(runtime.root / "uids.json"),
                "/etc/shadow",
                f"/proc/{os.getpid()}/environ",
            ],
            "listable_dirs": [str(state), str(state / "keys"), str(runtime.root)],
            "write_paths": [
                "/usr/tenant-was-here",
                "/etc/tenant-was-here",
                "/tenant-was-here",
                str(state / "keys" / "tenant-was-here"),
                str(secret),
            ],
            "tcp": [
                ["127.0.0.1", api_port],  # a service's own port on the host
                ["127.0.0.1", 5432],  # Postgres
                ["127.0.0.1", 4222],  # NATS
                ["127.0.0.1", 8080],  # team-a's server, were the network shared
            ],
            # team-a's model server's unix socket, and one on the host.
            "unix": unix_names,
        }
        report = await run_probe(
            runtime,
            "team-b",
            "probe",
            targets,
            volumeMounts=[{"name": "mine", "mountPath": "/data"}],
            volumes=[{"name": "mine", "persistentVolumeClaim": {"claimName": "mine"}}],
        )
        assert escapes(report) == {}
        for name in unix_names:
            assert report[f"connect @{name}"].startswith("blocked: ECONNREFUSED"), report
        assert report["uid"] != 0 and report["euid"] != 0
        assert int(report["CapEff"], 16) == 0 and int(report["CapPrm"], 16) == 0
        assert int(report["CapBnd"], 16) == 0
        assert report["NoNewPrivs"] == "1" and report["Seccomp"] == "2"
        # Its own pid namespace: the host's processes (this test among them) are not there.
        assert os.getpid() not in report["pids visible"] and max(report["pids visible"]) < 50
        assert secret.read_text() == "team-a's secret"
        assert not os.path.exists("/usr/tenant-was-here")  # noqa: ASYNC240 - a stat, in a test

        # Positive controls: the API address inside leads to the platform; its own volume
        # is writable.
        allowed = await run_probe(
            runtime,
            "team-b",
            "control",
            {
                "tcp": [list(API_ADDRESS)],
                "write_paths": ["/data/mine.txt", "/tmp/t.txt", "/dev/shm/t.txt"],
                "unix_own": "its-own",
            },
            volumeMounts=[{"name": "mine", "mountPath": "/data"}],
            volumes=[{"name": "mine", "persistentVolumeClaim": {"claimName": "mine"}}],
        )
        assert allowed[f"connect {API_ADDRESS[0]}:{API_ADDRESS[1]}"].startswith("ESCAPED")
        assert allowed["write /data/mine.txt"].startswith("ESCAPED")
        assert allowed["write /dev/shm/t.txt"].startswith("ESCAPED")  # multiprocessing needs it
        assert allowed["connect @its-own"].startswith("ESCAPED")  # the probe's unix connect works
        mine = (await runtime.resolve_volume("team-b", "mine")) / "mine.txt"
        assert mine.read_text() == "tenant was here"
        if os.geteuid() == 0:  # each namespace writes as its own host uid
            assert mine.stat().st_uid == allowed["uid"] != 0
            assert allowed["uid"] != runtime.uids.uid_for("team-a")
    finally:
        host_socket.close()
        await runtime.shutdown()


async def test_workload_reaches_the_api_through_its_address(
    tmp_path: Path, host_service: int
) -> None:
    runtime = LocalRuntime(
        tmp_path, workload_env=lambda ns: {"SHIPYARD_URL": f"http://127.0.0.1:{host_service}"}
    )
    code = "import os, urllib.request as u; print(u.urlopen(os.environ['SHIPYARD_URL']).read())"
    try:
        await runtime.apply({"namespace": "ns", "name": "api", "command": ["python3", "-c", code]})
        status = await runtime.wait("ns", "api", timeout=30)
        logs = [line async for line in runtime.logs("ns", "api")]
        assert status.phase == Phase.SUCCEEDED, logs
        assert logs == ["b'the platform api'"]
    finally:
        await runtime.shutdown()


async def test_subpath_symlink_planted_by_a_job_is_refused(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "host-secret").write_text("not for tenants")
    claim = {
        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "shared"}}],
    }
    try:
        await runtime.create_volume("team-a", "shared")
        # Step 1: a tenant's job plants links in its own volume.
        await runtime.apply(
            {
                "namespace": "team-a",
                "name": "plant",
                "command": ["sh", "-c", f"ln -s {other} /v/out && ln -s / /v/root"],
                "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                **claim,
            }
        )
        assert (await runtime.wait("team-a", "plant", timeout=30)).phase == Phase.SUCCEEDED
        # Step 2: the next workload mounts a subPath through the link: refused, not followed.
        for name, sub in (("via-link", "out"), ("via-root", "root/etc")):
            await runtime.apply(
                {
                    "namespace": "team-a",
                    "name": name,
                    "command": ["sh", "-c", "cat /m/host-secret; ls /m"],
                    "volumeMounts": [{"name": "v", "mountPath": "/m", "subPath": sub}],
                    **claim,
                }
            )
            status = await runtime.wait("team-a", name, timeout=30)
            assert status.phase == Phase.FAILED and status.reason == "InvalidSubPath", status
            assert "symbolic link" in (status.message or "")
            assert [line async for line in runtime.logs("team-a", name)] == []
    finally:
        await runtime.shutdown()


async def test_host_path_volume_is_refused(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path)
    await runtime.create_volume("team-a", "data")
    other_teams_volume = await runtime.resolve_volume("team-a", "data")
    try:
        await runtime.apply(
            {
                "namespace": "team-b",
                "name": "hp",
                "command": ["cat", "/x/anything"],
                "volumeMounts": [{"name": "h", "mountPath": "/x"}],
                "volumes": [{"name": "h", "hostPath": {"path": str(other_teams_volume)}}],
            }
        )
        status = await runtime.wait("team-b", "hp", timeout=10)
        assert status.phase == Phase.FAILED and status.reason == "HostPathNotAllowed"
        assert "hostPath" in (status.message or "")
    finally:
        await runtime.shutdown()


async def test_server_endpoint_is_only_the_brokers(tmp_path: Path) -> None:
    """A server in a sandbox is reached through its endpoint broker and nowhere else."""
    runtime = LocalRuntime(tmp_path)
    try:
        await runtime.apply(
            {
                "kind": "server",
                "namespace": "team-a",
                "name": "web",
                "command": ["python3", "-m", "http.server", "$(PORT)", "--bind", "0.0.0.0"],
            }
        )
        status = await runtime.wait("team-a", "web", timeout=30, ready=True)
        assert status.endpoint and status.endpoint.startswith("http+sandbox://")
        sock = await asyncio.to_thread(connect, status.endpoint)
        with sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            head = sock.recv(64)
        assert head.startswith(b"HTTP/1.0 200")
        _, broker, _ = parse(status.endpoint)
        assert os.stat(broker).st_mode & 0o077 == 0  # only the platform's user may ask
    finally:
        await runtime.shutdown()


async def test_process_and_file_size_limits(tmp_path: Path) -> None:
    """RLIMIT_NPROC caps a namespace's processes (a fork bomb stalls); ephemeral-storage caps a
    file's size (RLIMIT_FSIZE)."""
    runtime = LocalRuntime(tmp_path, max_processes=30)
    if os.geteuid() == 0:  # a uid of this test's own, so no other workload counts against it
        (runtime.root / "uids.json").write_text(json.dumps({"bomb": 1_900_000 + os.getpid()}))
    bomb = "n=0; for i in $(seq 100); do sleep 5 & n=$((n+1)); done 2>/dev/null; wait; echo done"
    count = "ps -e -o uid= | grep -vc '^ *0$'"  # the workload's own; bubblewrap's init is root
    try:
        await runtime.apply(
            {
                "namespace": "bomb",
                "name": "fork",
                "command": ["sh", "-c", f"({bomb}) & sleep 1; {count}; kill -9 -1"],
            }
        )
        await runtime.apply(
            {
                "namespace": "files",
                "name": "big",
                "command": ["sh", "-c", "exec head -c 3000000 /dev/zero > /tmp/big"],
                "resources": {"limits": {"ephemeral-storage": "1Mi"}},
            }
        )
        await runtime.wait("bomb", "fork", timeout=30)
        processes = [line async for line in runtime.logs("bomb", "fork")]
        assert processes and int(processes[-1]) <= 30, processes
        big = await runtime.wait("files", "big", timeout=30)
        assert big.phase == Phase.FAILED and big.exit_code == 128 + 25, big  # SIGXFSZ
        written = runtime.root / "workloads" / "files" / "big" / "tmp" / "big"
        assert written.stat().st_size == 1024 * 1024
    finally:
        await runtime.shutdown()


def workload_cgroups(parent: str) -> list[str]:
    try:
        return [d for d in os.listdir(parent) if os.path.isdir(f"{parent}/{d}")]
    except FileNotFoundError:
        return []


@pytest.mark.skipif(
    cgroup_layout() is None, reason="no cgroups to delegate on this host (rlimits only)"
)
async def test_cgroup_limits_cpu_memory_and_processes(tmp_path: Path) -> None:
    """With cgroups (v2, or v1 as on this workplace's machines), resources.limits.cpu throttles,
    memory ends the workload as OOMKilled, and its processes are capped; the cgroups are
    removed with the workload."""
    runtime = LocalRuntime(tmp_path, max_processes=40)
    spin = (
        "import os, time\n"
        "end = time.monotonic() + 1.0\n"
        "while time.monotonic() < end: pass\n"
        "print(round(os.times().user + os.times().system, 2))\n"
    )
    hog = "x = bytearray(512 * 1024 * 1024); print('allocated')"
    # Counted with shell builtins only: at the limit, ps could not be started.
    forks = (
        "(for i in $(seq 80); do sleep 3 & done) 2>/dev/null; sleep 0.5; "
        "n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n"
    )
    try:
        await runtime.apply(
            {
                "namespace": "limits",
                "name": "cpu",
                "command": ["python3", "-c", spin],
                "resources": {"limits": {"cpu": "200m"}},
            }
        )
        await runtime.apply(
            {
                "namespace": "limits",
                "name": "mem",
                "command": ["python3", "-c", hog],
                "resources": {"limits": {"memory": "128Mi"}},
            }
        )
        await runtime.apply(
            {
                "namespace": "pids",
                "name": "forks",
                "command": ["sh", "-c", forks],
                "resources": {"limits": {"memory": "1Gi"}},  # a cgroup, whose pids.max holds
            }
        )
        cpu = await runtime.wait("limits", "cpu", timeout=30)
        used = [line async for line in runtime.logs("limits", "cpu")]
        assert cpu.phase == Phase.SUCCEEDED, (cpu, used)
        assert float(used[-1]) < 0.5, used  # 1 s of wall time at 0.2 CPU
        mem = await runtime.wait("limits", "mem", timeout=30)
        assert mem.phase == Phase.FAILED and mem.reason == "OOMKilled", mem
        assert "allocated" not in [line async for line in runtime.logs("limits", "mem")]
        forked = await runtime.wait("pids", "forks", timeout=30)
        counted = [line async for line in runtime.logs("pids", "forks")]
        assert forked.phase == Phase.SUCCEEDED and int(counted[-1]) <= 40, counted
        layout = cgroup_layout()
        assert layout is not None
        ours = {
            hashlib.sha256(str(runtime.root / "workloads" / ns / name).encode()).hexdigest()[:16]
            for ns, name in (("limits", "cpu"), ("limits", "mem"), ("pids", "forks"))
        }
        for root in layout["roots"].values():  # type: ignore[attr-defined]
            left = await asyncio.to_thread(workload_cgroups, f"{root}/shipyard")
            assert ours.isdisjoint(left), left
    finally:
        await runtime.shutdown()
