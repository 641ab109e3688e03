"""Workload networks (``WorkloadSpec.network``): the members of a group reach one another.

Locally (real sandboxes): members share one network namespace and resolve the group's names
to its loopback; a workload outside the group reaches none of them. On Kubernetes (the
emulated API server, as in test_kubernetes.py; no cluster can run here): a member with a
hostname gets the headless Service the Training Operator would make, and the group one
NetworkPolicy letting its members in to each other, owned by every member's pod.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from services.common.runtime import LocalRuntime
from services.common.runtime.k8s_manifests import MANAGED_BY, NETWORK_LABEL, WORKLOAD_LABEL
from services.common.runtime.kubernetes import KubernetesRuntime

from .cluster import EmulatedCluster
from .test_kubernetes import cluster, kube, stored, validate  # noqa: F401 - fixtures

LISTEN = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7777))
s.listen()
s.settimeout(30)
conn, _ = s.accept()
print("got", conn.recv(64).decode(), flush=True)
"""
CONNECT = """
import socket, time
end = time.monotonic() + 30
while True:
    try:
        conn = socket.create_connection(("box-a", 7777), timeout=2)
        break
    except OSError as exc:
        if time.monotonic() > end:
            raise
        time.sleep(0.1)
conn.sendall(b"hello from b")
print("sent", flush=True)
"""
OUTSIDER = """
import socket
try:
    socket.create_connection(("box-a", 7777), timeout=2)
    print("reached")
except OSError as exc:
    print("unreachable:", type(exc).__name__)
"""


def member(name: str, code: str, hostname: str | None, group: str | None = "g") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kind": "job",
        "namespace": "team",
        "name": name,
        "command": [sys.executable, "-c", code],
    }
    if group is not None:
        spec["network"] = {"group": group, "hostname": hostname, "peers": ["box-a"]}
    return spec


async def logs(runtime: LocalRuntime, name: str) -> str:
    return "\n".join([line async for line in runtime.logs("team", name)])


async def test_local_group_members_reach_each_other_by_name(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path / "state")
    try:
        await runtime.apply(member("a", LISTEN, "box-a"))
        await runtime.apply(member("b", CONNECT, "box-b"))
        await runtime.apply(member("c", OUTSIDER, None, group=None))
        for name in ("a", "b", "c"):
            status = await runtime.wait("team", name, timeout=60)
            assert status.phase.value == "Succeeded", (name, status, await logs(runtime, name))
        assert "got hello from b" in await logs(runtime, "a")
        assert "sent" in await logs(runtime, "b")
        # Outside the group the name does not resolve, and nothing else would connect.
        assert "unreachable: gaierror" in await logs(runtime, "c")
    finally:
        await runtime.shutdown()


async def test_kubernetes_group_gets_hostname_services_and_a_policy(
    cluster: EmulatedCluster,  # noqa: F811 - the fixture
    kube: KubernetesRuntime,  # noqa: F811
) -> None:
    await kube.apply(member("a", "pass", "box-a"))
    await kube.apply(member("b", "pass", "box-b"))
    pod_a, pod_b = stored(cluster, "Pod", "team", "a"), stored(cluster, "Pod", "team", "b")
    assert pod_a is not None and pod_b is not None
    assert pod_a["metadata"]["labels"][NETWORK_LABEL] == "g"
    service = stored(cluster, "Service", "team", "box-a")
    assert service is not None
    validate(service)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {MANAGED_BY: "shipyard", WORKLOAD_LABEL: "a"}
    assert [o["uid"] for o in service["metadata"]["ownerReferences"]] == [pod_a["metadata"]["uid"]]
    policy = stored(cluster, "NetworkPolicy", "team", "shipyard-network-g")
    assert policy is not None
    validate(policy)
    members = {MANAGED_BY: "shipyard", NETWORK_LABEL: "g"}
    assert policy["spec"]["podSelector"] == {"matchLabels": members}
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": members}}]}]
    owners = {o["uid"] for o in policy["metadata"]["ownerReferences"]}
    assert owners == {pod_a["metadata"]["uid"], pod_b["metadata"]["uid"]}


def test_ended_groups_directories_are_pruned(tmp_path: Path) -> None:
    """A group's directory goes once its members ended and it sat untouched for a while;
    a live member's group, a fresh one and the group being planned stay."""
    import json
    import os
    import time

    from services.common.runtime import local_network

    old = time.time() - 2 * local_network.PRUNE_AFTER_SECONDS
    dirs = {}
    for group, pid in (("ended", 2**22 + 7), ("live", os.getpid()), ("fresh", 2**22 + 7)):
        path = local_network.network_dir(tmp_path, "team", group)
        start = local_network.proc_start_time(pid) if group == "live" else 12345
        (path / "members.json").write_text(json.dumps([{"pid": pid, "start": start}]))
        dirs[group] = path
    planned = local_network.network_dir(tmp_path, "team", "planned")
    for path in (dirs["ended"], dirs["live"], planned):  # untouched for long
        for entry in (path / "members.json", path):
            if entry.exists():
                os.utime(entry, (old, old))
    assert local_network.prune(tmp_path, "team", keep="planned") == 1
    assert sorted(p.name for p in (tmp_path / "networks" / "team").iterdir()) == [
        "fresh",
        "live",
        "planned",
    ]


SERVE = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7777))
s.listen()
s.settimeout(60)
while True:
    conn, _ = s.accept()
    message = conn.recv(64).decode()
    print("got", message, flush=True)
    if message == "done":
        break
"""
SEND = CONNECT.replace('b"hello from b"', "MESSAGE.encode()")
INTRUDER = """
import socket
try:
    conn = socket.create_connection(("box-a", 7777), timeout=2)
    conn.sendall(b"intruder")
    print("reached", flush=True)
except OSError as exc:
    print("unreachable:", type(exc).__name__, flush=True)
"""


async def test_same_group_name_in_another_namespace_is_another_network(tmp_path: Path) -> None:
    """A hostile tenant names another namespace's group (and its member's hostname): it gets a
    network of its own, where nothing listens; the group's server never hears from it."""
    runtime = LocalRuntime(tmp_path / "state")

    def spec(ns: str, name: str, code: str, hostname: str) -> dict[str, Any]:
        return {
            "kind": "job",
            "namespace": ns,
            "name": name,
            "command": [sys.executable, "-c", code],
            "network": {"group": "g", "hostname": hostname, "peers": ["box-a"]},
        }

    async def out(ns: str, name: str) -> str:
        status = await runtime.wait(ns, name, timeout=60)
        text = "\n".join([line async for line in runtime.logs(ns, name)])
        assert status.phase.value == "Succeeded", (ns, name, status, text)
        return text

    try:
        await runtime.apply(spec("team", "a", SERVE, "box-a"))
        # A member's message arriving proves the server listens before the intruder tries.
        await runtime.apply(spec("team", "b", "MESSAGE = 'hello'\n" + SEND, "box-b"))
        assert "sent" in await out("team", "b")
        await runtime.apply(spec("other", "x", INTRUDER, "box-x"))
        assert "unreachable: ConnectionRefusedError" in await out("other", "x")
        await runtime.apply(spec("team", "c", "MESSAGE = 'done'\n" + SEND, "box-c"))
        assert "sent" in await out("team", "c")
        served = await out("team", "a")
        assert "got hello" in served and "got done" in served
        assert "intruder" not in served
    finally:
        await runtime.shutdown()
