"""A profile's quota (``kf-resource-quota``): what admission decides, the local runtime's
enforcement across services, and the ResourceQuota the Kubernetes runtime makes.

The local cases run real sandboxed workloads. The Kubernetes case runs against the emulated
API server of cluster.py (no kube-apiserver runs on these machines); that emulator stores a
ResourceQuota but does not enforce it: the object is checked, and the runtime's answer to a
refusal the test scripts in the API server's words.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from services.common.runtime import LocalRuntime, Phase, WorkloadSpec
from services.common.runtime.kubernetes import KubernetesRuntime
from services.common.runtime.quota import (
    QuotaRefused,
    Refusal,
    api_refusal,
    hard_of,
    refusal,
    volume_refusal,
    waiting_for_room,
)

from .cluster import EmulatedCluster
from .test_kubernetes import stored

pytestmark = pytest.mark.timeout(90)
REPO = Path(__file__).resolve().parents[3]
NS = "team-q"


def sleeper(name: str, labels: dict[str, str] | None = None, **resources: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"namespace": NS, "name": name, "command": ["sleep", "60"]}
    if labels:
        spec["labels"] = labels
    if resources:
        spec["resources"] = resources
    return spec


def spec_of(name: str, **resources: Any) -> WorkloadSpec:
    return WorkloadSpec.model_validate(sleeper(name, **resources))


# ---- admission, as the API server words it ---------------------------------------------------


def test_refusal_counts_pods_and_compute_like_the_api_server() -> None:
    hard = {"pods": "3", "requests.cpu": "1", "limits.memory": "1Gi", "services": "2"}
    small = {"requests": {"cpu": "250m"}, "limits": {"memory": "256Mi"}}
    live = [spec_of(f"w{i}", **small) for i in range(2)]
    assert refusal(hard, spec_of("new", **small), live) is None
    big = {"requests": {"cpu": "600m"}, "limits": {"memory": "256Mi"}}
    # Refusals that pass once others finish ...
    assert refusal(hard, spec_of("new", **big), live) == Refusal(
        "exceeded quota: kf-resource-quota, requested: requests.cpu=600m, "
        "used: requests.cpu=500m, limited: requests.cpu=1",
        final=False,
    )
    assert refusal(hard, spec_of("new", **small), [*live, spec_of("w3", **small)]) == Refusal(
        "exceeded quota: kf-resource-quota, requested: pods=1, used: pods=3, limited: pods=3",
        final=False,
    )
    # ... and ones that never can: more than the whole quota, or naming no amount (a compute
    # quota needs the workload to say what it uses: leaving it out is no way around it).
    huge = {"requests": {"cpu": "2"}, "limits": {"memory": "256Mi"}}
    assert refusal(hard, spec_of("huge", **huge), []) == Refusal(
        "exceeded quota: kf-resource-quota, requested: requests.cpu=2, "
        "used: requests.cpu=0, limited: requests.cpu=1",
        final=True,
    )
    assert refusal(hard, spec_of("bare"), []) == Refusal(
        "failed quota: kf-resource-quota: must specify limits.memory,requests.cpu", final=True
    )
    # Quantities in the API server's words: binary where the quota's value is.
    memory = {"limits.memory": "1Gi"}
    assert refusal(memory, spec_of("m", limits={"memory": "768Mi"}), live) == Refusal(
        "exceeded quota: kf-resource-quota, requested: limits.memory=768Mi, "
        "used: limits.memory=512Mi, limited: limits.memory=1Gi",
        final=False,
    )
    assert refusal({"limits.memory": "1G"}, spec_of("g", limits={"memory": "2G"}), []) == Refusal(
        "exceeded quota: kf-resource-quota, requested: limits.memory=2G, "
        "used: limits.memory=0, limited: limits.memory=1G",
        final=True,
    )
    # A request defaults to its limit, as in a pod; exact sums of millicores.
    only_limits = {"limits": {"cpu": "100m", "memory": "1Mi"}}
    tenths = [spec_of(f"t{i}", **only_limits) for i in range(9)]
    assert refusal({"cpu": "1"}, spec_of("tenth", **only_limits), tenths) is None
    assert refusal(
        {"cpu": "1"}, spec_of("more", **only_limits), [*tenths, spec_of("x", **only_limits)]
    )
    # Names the local runtime does not count (services, GPUs) refuse nothing.
    assert refusal({"services": "0", "requests.nvidia.com/gpu": "0"}, spec_of("n"), []) is None


def test_hard_of_checks_each_quantity_with_its_field() -> None:
    assert hard_of({"hard": {"cpu": "4", "memory": "8Gi", "pods": 10}}) == {
        "cpu": "4",
        "memory": "8Gi",
        "pods": "10",
    }
    assert hard_of(None) == {} and hard_of({}) == {}
    with pytest.raises(ValueError, match=r"spec.resourceQuotaSpec.hard\[cpu\]: 'lots' is not"):
        hard_of({"hard": {"cpu": "lots"}})
    with pytest.raises(ValueError, match=r"hard\[pods\]: must not be negative"):
        hard_of({"hard": {"pods": "-1"}})
    with pytest.raises(ValueError, match=r"spec.resourceQuotaSpec.hard: must be a map"):
        hard_of({"hard": ["cpu"]})
    with pytest.raises(ValueError, match=r"hard\[memory\]: must be a quantity"):
        hard_of({"hard": {"memory": True}})


# ---- the local runtime ------------------------------------------------------------------------


async def _until_phase(runtime: LocalRuntime, name: str, phase: Phase, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while (status := await runtime.status(NS, name)).phase != phase:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)


async def test_local_runtime_holds_a_workload_over_its_namespaces_quota(tmp_path: Path) -> None:
    """Over the quota for now: Pending, ExceededQuota, started once there is room (a Job's
    pod on Kubernetes waits the same way). Over it for good: Failed at once. Neither runs a
    thing before it is admitted."""
    runtime = LocalRuntime(tmp_path)
    try:
        await runtime.ensure_namespace(
            NS, "owner@example.com", {"pods": "2", "limits.memory": "1Gi"}
        )
        limited = {"limits": {"memory": "256Mi"}}
        for name in ("a", "b"):
            assert (await runtime.apply(sleeper(name, **limited))).phase != Phase.FAILED
        waiting = await runtime.apply(sleeper("c", **limited))
        assert (waiting.phase, waiting.reason) == (Phase.PENDING, "ExceededQuota")
        assert waiting.message == (
            "exceeded quota: kf-resource-quota, requested: pods=1, used: pods=2, limited: pods=2"
        )
        bare = await runtime.apply(sleeper("d"))
        assert (bare.phase, bare.reason) == (Phase.FAILED, "ExceededQuota")
        assert bare.message == "failed quota: kf-resource-quota: must specify limits.memory"
        huge = await runtime.apply(sleeper("e", limits={"memory": "2Gi"}))
        assert (huge.phase, huge.reason) == (Phase.FAILED, "ExceededQuota")
        # Still waiting a while later (it is not lost for want of a supervisor), and applying
        # it again changes nothing.
        await asyncio.sleep(1.5)
        assert (await runtime.apply(sleeper("c", **limited))).reason == "ExceededQuota"
        assert (await runtime.status(NS, "c")).phase == Phase.PENDING
        assert not (runtime.workloads_root / NS / "c" / "launch.json").exists()
        # Room once one is gone: the waiting one starts by itself.
        await runtime.delete(NS, "a")
        await _until_phase(runtime, "c", Phase.RUNNING)
        started = await runtime.status(NS, "c")
        assert started.reason is None and started.message is None
        # Another namespace was never limited; a larger quota, then none, refuse nothing.
        other = {**sleeper("free"), "namespace": "team-other"}
        assert (await runtime.apply(other)).phase != Phase.FAILED
        await runtime.ensure_namespace(NS, "owner@example.com", {"pods": "3"})
        assert (await runtime.apply(sleeper("f"))).phase != Phase.FAILED
        await runtime.delete_namespace(NS)
        assert (await runtime.apply(sleeper("g"))).phase != Phase.FAILED
    finally:
        await runtime.shutdown()
        await runtime.close()


async def test_a_waiting_workload_is_stopped_or_adopted_like_any_other(tmp_path: Path) -> None:
    """An orderly stop marks a waiting workload stopped (it never starts); a restarted
    service's runtime takes over the waiting and starts them when room appears."""
    first = LocalRuntime(tmp_path)
    await first.ensure_namespace(NS, "owner@example.com", {"pods": "1"})
    await first.apply(sleeper("running"))
    assert (await first.apply(sleeper("held"))).phase == Phase.PENDING
    assert (await first.apply(sleeper("kept", labels={"stop": "no"}))).phase == Phase.PENDING
    stopped = await first.stop_all({"stop": "yes"})
    assert stopped == []  # nothing labelled so
    (held,) = [s for s in await first.stop_all("!stop") if s.name == "held"]
    assert (held.phase, held.reason) == (Phase.FAILED, "Stopped")
    await first.close()  # the service goes away; "kept" waits on, recorded

    second = LocalRuntime(tmp_path)
    try:
        assert (await second.status(NS, "kept")).phase == Phase.PENDING
        await second.delete(NS, "running")  # adopts first
        await _until_phase(second, "kept", Phase.RUNNING)
        assert (await second.status(NS, "held")).reason == "Stopped"
    finally:
        await second.shutdown()
        await second.close()


async def test_a_finished_workload_frees_its_share(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path)
    try:
        await runtime.ensure_namespace(NS, "owner@example.com", {"count/pods": "1"})
        done = {"namespace": NS, "name": "once", "command": ["true"]}
        await runtime.apply(done)
        assert (await runtime.wait(NS, "once", timeout=30)).phase == Phase.SUCCEEDED
        assert (await runtime.apply(sleeper("next"))).phase != Phase.FAILED
    finally:
        await runtime.shutdown()
        await runtime.close()


RACER = textwrap.dedent(
    """
    import asyncio, sys
    from services.common.runtime import LocalRuntime

    async def main():
        rt = LocalRuntime(sys.argv[1])
        print("ready", flush=True)
        for i in range(6):
            spec = {"namespace": sys.argv[2], "name": f"{sys.argv[3]}-{i}",
                    "command": ["sleep", "60"]}
            await rt.apply(spec)
            await asyncio.sleep(0)
        print("done", flush=True)

    asyncio.run(main())
    """
)


async def _racer(state: Path, name: str) -> asyncio.subprocess.Process:
    racer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RACER, str(state), NS, name, cwd=REPO, stdout=subprocess.PIPE
    )  # fmt: skip
    assert racer.stdout is not None
    assert await asyncio.wait_for(racer.stdout.readline(), 30) == b"ready\n"
    return racer


async def test_services_racing_for_the_last_places_never_overrun_the_quota(
    tmp_path: Path,
) -> None:
    """Two services (two processes, each its own LocalRuntime over one state directory) start
    twelve workloads at once against room for five: exactly five run. Admission holds the
    namespace's lock across processes: while another holds it, a service admits nothing."""
    runtime = LocalRuntime(tmp_path)
    try:
        await runtime.ensure_namespace(NS, "owner@example.com", {"pods": "5"})
        with runtime.quotas.admitting(NS):
            racers = [await _racer(tmp_path, side) for side in ("notebooks", "pipelines")]
            await asyncio.sleep(1.0)
            assert not list((runtime.workloads_root / NS).glob("*/spec.json"))
        for racer in racers:
            out, _ = await asyncio.wait_for(racer.communicate(), 60)
            assert out.strip() == b"done"
        statuses = await runtime.list(namespace=NS)
        assert len(statuses) == 12
        refused = [s for s in statuses if s.reason == "ExceededQuota"]
        admitted = [s for s in statuses if s.reason != "ExceededQuota"]
        assert len(admitted) == 5, [(s.name, s.phase, s.reason) for s in statuses]
        assert {s.phase for s in admitted} <= {Phase.PENDING, Phase.RUNNING}
        assert len(refused) == 7 and {s.phase for s in refused} == {Phase.PENDING}
    finally:
        await runtime.shutdown()
        await runtime.close()


def test_api_refusal_reads_the_api_servers_words() -> None:
    over = (
        'pods "p" is forbidden: exceeded quota: kf-resource-quota, requested: '
        "limits.memory=768Mi,pods=1, used: limits.memory=512Mi,pods=1, limited: "
        "limits.memory=1Gi,pods=4"
    )
    assert api_refusal(over) == Refusal(over, final=False)  # fits once the 512Mi finish
    never = over.replace("requested: limits.memory=768Mi", "requested: limits.memory=2Gi")
    assert api_refusal(never) == Refusal(never, final=True)  # more than the whole quota
    bare = 'pods "p" is forbidden: failed quota: kf-resource-quota: must specify limits.memory'
    assert api_refusal(bare) == Refusal(bare, final=True)
    odd = "exceeded quota: q, requested: widgets=a-lot, used: widgets=1, limited: widgets=2"
    assert api_refusal(odd) == Refusal(odd, final=False)  # words it cannot read: wait
    assert api_refusal('pods "p" is forbidden: violates PodSecurity "restricted"') is None


def test_volume_refusal_counts_claims_and_their_storage() -> None:
    hard = {"persistentvolumeclaims": "3", "requests.storage": "3Gi", "pods": "1"}
    assert volume_refusal(hard, "1Gi", ["1Gi", None]) is None  # a sizeless claim counts none
    assert volume_refusal(hard, "2Gi", ["1Gi", "512Mi"]) == Refusal(
        "exceeded quota: kf-resource-quota, requested: requests.storage=2Gi, "
        "used: requests.storage=1536Mi, limited: requests.storage=3Gi",
        final=False,
    )
    assert volume_refusal(hard, "1Gi", ["1Gi", None, None]) == Refusal(
        "exceeded quota: kf-resource-quota, requested: persistentvolumeclaims=1, "
        "used: persistentvolumeclaims=3, limited: persistentvolumeclaims=3",
        final=False,
    )
    never = volume_refusal(hard, "4Gi", [])
    assert never is not None and never.final  # more than the whole quota
    assert volume_refusal({"pods": "1"}, "100Ti", ["100Ti"]) is None  # no claim names: no say


async def test_local_runtime_admits_a_claim_against_its_namespaces_quota(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path)
    try:
        await runtime.ensure_namespace(NS, "q@example.com", {"requests.storage": "3Gi"})
        await runtime.create_volume(NS, "a", size="2Gi")
        with pytest.raises(QuotaRefused) as refused:
            await runtime.create_volume(NS, "b", size="2Gi")
        assert refused.value.message == (
            'persistentvolumeclaims "b" is forbidden: exceeded quota: kf-resource-quota, '
            "requested: requests.storage=2Gi, used: requests.storage=2Gi, "
            "limited: requests.storage=3Gi"
        )
        assert not refused.value.final
        assert [v.name for v in await runtime.list_volumes(NS)] == ["a"]
        again = await runtime.create_volume(NS, "a", size="2Gi")  # an existing one: as it is
        assert again.size == "2Gi"
        await runtime.delete_volume(NS, "a")
        assert (await runtime.create_volume(NS, "b", size="2Gi")).name == "b"  # room again
    finally:
        await runtime.close()


# ---- Kubernetes: the ResourceQuota -------------------------------------------------------------


async def test_kubernetes_runtime_keeps_the_profiles_resource_quota(tmp_path: Path) -> None:
    async with EmulatedCluster(tmp_path / "node") as cluster:
        kube: KubernetesRuntime = cluster.runtime()
        try:
            await kube.ensure_namespace("team-k", "k@example.com", {"pods": "10", "cpu": "4"})
            made = stored(cluster, "ResourceQuota", "team-k", "kf-resource-quota")
            assert made is not None and made["spec"] == {"hard": {"pods": "10", "cpu": "4"}}
            await kube.ensure_namespace("team-k", "k@example.com", {"pods": "20"})
            edited = stored(cluster, "ResourceQuota", "team-k", "kf-resource-quota")
            assert edited is not None and edited["spec"] == {"hard": {"pods": "20"}}
            await kube.ensure_namespace("team-k", "k@example.com")
            assert stored(cluster, "ResourceQuota", "team-k", "kf-resource-quota") is None
        finally:
            await kube.close()


async def test_kubernetes_runtime_says_a_quota_refusal_and_leaves_nothing(tmp_path: Path) -> None:
    """The API server refuses the pod (scripted in its words: the emulator has no admission):
    QuotaRefused, final or not as the words say, and the files Secret made for the pod is gone;
    a later try makes the workload."""
    async with EmulatedCluster(tmp_path / "node") as cluster:
        kube: KubernetesRuntime = cluster.runtime()
        over = "exceeded quota: kf-resource-quota, requested: pods=1, used: pods=2, limited: pods=2"
        cluster.server.refuse(
            "pods", "team-k", over, over.replace("limited: pods=2", "limited: pods=0")
        )
        step = {
            "namespace": "team-k",
            "name": "step",
            "command": ["cat", "/var/run/shipyard/plan.json"],
            "files": {"/var/run/shipyard/plan.json": "{}"},
        }
        try:
            with pytest.raises(QuotaRefused) as waits:
                await kube.apply(step)
            assert waits.value.message == f'pods "step" is forbidden: {over}'
            assert not waits.value.final
            assert stored(cluster, "Secret", "team-k", "step-files") is None
            with pytest.raises(QuotaRefused) as never:
                await kube.apply(step)
            assert never.value.final
            assert stored(cluster, "Pod", "team-k", "step") is None
            made = await kube.apply(step)  # no more refusals: made
            assert made.phase == Phase.PENDING and waiting_for_room(made) is None
            assert stored(cluster, "Pod", "team-k", "step") is not None
        finally:
            await kube.close()


async def test_kubernetes_runtime_says_a_claims_quota_refusal(tmp_path: Path) -> None:
    async with EmulatedCluster(tmp_path / "node") as cluster:
        kube: KubernetesRuntime = cluster.runtime()
        words = (
            "exceeded quota: kf-resource-quota, requested: requests.storage=5Gi, "
            "used: requests.storage=0, limited: requests.storage=4Gi"
        )
        cluster.server.refuse("persistentvolumeclaims", "team-k", words)
        try:
            with pytest.raises(QuotaRefused) as refused:
                await kube.create_volume("team-k", "data", size="5Gi")
            assert refused.value.message == f'persistentvolumeclaims "data" is forbidden: {words}'
            assert refused.value.final  # more than the whole quota
            assert stored(cluster, "PersistentVolumeClaim", "team-k", "data") is None
            assert (await kube.create_volume("team-k", "data", size="1Gi")).name == "data"
        finally:
            await kube.close()
