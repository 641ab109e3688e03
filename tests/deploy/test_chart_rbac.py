"""The chart's ClusterRole against the requests the Kubernetes runtime really sends.

``KubernetesRuntime`` runs a day of a platform's work (a profile's namespace, a volume, jobs
with files and a claim, logs and follow, a file read back, a server, adoption by a second
runtime, stop_all, deletes) against the emulated API server of tests/common/runtime (kmock's
``KubernetesEmulator`` plus a test-only kubelet; no kube-apiserver runs on these machines).
Every request it sends is recorded at its API client and turned into the attributes the RBAC
authorizer decides on (tests/deploy/rbac.py): each must be allowed by the chart's role, and
each verb the role grants must have been used, so the role is the runtime's, no more and no
less. The emulator does not authorize; this is the check a real cluster's authorizer would
make, done here on paper. The gateway's own use of the role (a TokenReview per workload
token, gateway/kube_tokens.py) is the one grant this scenario cannot exercise.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.common.runtime import Phase, Runtime, WorkloadSpec
from services.common.runtime.k8s_manifests import service_manifest
from services.common.runtime.kubernetes import KubernetesRuntime
from tests.common.runtime.cluster import EmulatedCluster
from tests.deploy import rbac
from tests.deploy.test_chart import NAMESPACE, RELEASE, _by_kind, _grants, _render_chart, _values
from tests.specs import http_server_workload

pytestmark = pytest.mark.timeout(120)

#: Granted for the gateway, not the runtime: reviewing a workload's projected token.
GATEWAY_ONLY = {("authentication.k8s.io", "tokenreviews", "create")}


class RecordingClient:
    """A kubernetes-asyncio ``ApiClient`` that notes every call (method, path, query)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: builtins.list[tuple[str, str, builtins.list[tuple[str, str]]]] = []

    async def call_api(self, path: str, method: str, *args: Any, **kwargs: Any) -> Any:
        query = [(str(k), str(v)) for k, v in kwargs.get("query_params") or []]
        self.calls.append((method.upper(), path, query))
        return await self.inner.call_api(path, method, *args, **kwargs)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmulatedCluster]:
    async with EmulatedCluster(tmp_path / "node") as made:
        yield made


def _runtime(cluster: EmulatedCluster, client: RecordingClient) -> KubernetesRuntime:
    assert cluster.kubelet is not None
    return KubernetesRuntime(
        api_client=client,
        endpoint_for=cluster.kubelet.resolve_service,
        platform_image="ghcr.io/shipyard/shipyard:test",
    )


async def _work(cluster: EmulatedCluster, runtime: Runtime, client: RecordingClient) -> None:
    ns = "team-rbac"
    await runtime.ensure_namespace(ns, "owner@example.com")
    await runtime.ensure_namespace(ns, "owner@example.com")  # a gateway start: it exists
    # The profile's quota: made, edited, then taken off.
    await runtime.ensure_namespace(ns, "owner@example.com", {"pods": "10", "cpu": "4"})
    await runtime.ensure_namespace(ns, "owner@example.com", {"pods": "20"})
    await runtime.ensure_namespace(ns, "owner@example.com")
    await runtime.create_volume(ns, "data")
    assert await runtime.volume_exists(ns, "data")
    assert [v.name for v in await runtime.list_volumes(ns)] == ["data"]

    mounts = {
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    }
    files = {"/var/run/shipyard/step/plan.json": '{"step": 1}'}
    script = "cat /var/run/shipyard/step/plan.json; echo; echo 0.9 > /data/metrics"
    job = {"kind": "job", "namespace": ns, "name": "step", "command": ["sh", "-c", script]}
    await runtime.apply({**job, **mounts, "files": files, "labels": {"group": "g"}})
    await runtime.apply({**job, **mounts, "files": files, "labels": {"group": "g"}})  # resync
    assert (await runtime.wait(ns, "step", timeout=30)).phase == Phase.SUCCEEDED
    assert [line async for line in runtime.logs(ns, "step")] == ['{"step": 1}']
    assert [line async for line in runtime.logs(ns, "step", tail=1, follow=True)]
    assert await runtime.read_file(ns, "data", "metrics") == b"0.9\n"
    assert await runtime.volume_users(ns, "data") == []

    server = http_server_workload(ns, "web", labels={"group": "g"})
    # The server's Service is there already (left behind when its pod was deleted by hand):
    # the runtime takes it over.
    leftover = service_manifest(WorkloadSpec.model_validate(server), None)
    await cluster.create(f"/api/v1/namespaces/{ns}/services", leftover)
    await runtime.apply(server)
    assert (await runtime.wait(ns, "web", timeout=30, ready=True)).ready
    assert {s.name for s in await runtime.list({"group": "g"})} == {"step", "web"}
    # A workload network (a PyTorchJob's replicas): a hostname Service each, and the group's
    # NetworkPolicy, whose owners the second member's pod joins (get, patch).
    for rank in ("rank-0", "rank-1"):
        network = {"group": "ranks", "hostname": f"{rank}-host"}
        await runtime.apply({**job, "name": rank, "command": ["true"], "network": network})

    again = _runtime(cluster, client)  # the service restarted
    try:
        assert {s.name for s in await again.adopt()} >= {"step", "web"}
        await again.stop_all({"group": "g"})
        await again.delete(ns, "web")
        await again.delete(ns, "step")
        for rank in ("rank-0", "rank-1"):
            await again.delete(ns, rank)
        await again.delete_volume(ns, "data")
        await again.delete_namespace(ns)
    finally:
        await again.close()


async def test_runtime_requests_match_the_charts_cluster_role(cluster: EmulatedCluster) -> None:
    docs = _render_chart(_values())
    rules = _by_kind(docs, "ClusterRole")[f"{NAMESPACE}-{RELEASE}-runtime"]["rules"]
    client = RecordingClient(cluster.api_client())
    runtime = _runtime(cluster, client)
    try:
        await _work(cluster, runtime, client)
    finally:
        await runtime.close()

    requests = [rbac.attributes(m, p, q) for m, p, q in client.calls]
    assert len(requests) > 20
    refused = sorted({str(r) for r in requests if not rbac.allowed(rules, r)})
    assert not refused, "the chart's ClusterRole lacks:\n" + "\n".join(refused)

    used = {(r.group, r.resource, r.verb) for r in requests}
    granted = {
        (group, resource, verb)
        for (group, resource, name), verbs in _grants(rules).items()
        for verb in verbs
        if name is None  # `bind` on named ClusterRoles is checked in test_chart
    }
    assert granted - used - GATEWAY_ONLY == set(), "granted, never used by the runtime"
