"""KubernetesRuntime specifics, against an emulated Kubernetes API server.

**There is no kube-apiserver on these machines** (no kind, k3s or Docker engine can be
installed here). The API the runtime talks to is kmock's ``KubernetesEmulator``, extended in
``apiserver.py`` with resourceVersions, resumable watches, 410 Gone, label selectors,
graceful pod deletion and Namespaces; its pods are run by the test-only kubelet of
``kubelet.py``, which runs each pod's container through the LocalRuntime, writes the pod's
status back and serves its log. The same pair runs the whole contract suite
(test_contract.py, ``[kubernetes]`` ids).

What this verifies: every request the runtime makes (paths, verbs, bodies, merge patches,
list and watch parameters) and what it makes of the answers; the objects it creates, field
by field, and that each validates against the Kubernetes 1.37 schemas (kubernetes-validate,
strict: no unknown field); the watch resumed from its resourceVersion, and listed again
after 410 Gone; adoption by labels by a new runtime; deadlines, stop, delete waiting for the
pod's processes, logs and follow, read_file through a reader pod, servers reached through
their Service (see below).

What it does not verify, and only a real cluster can show: admission (Pod Security
"restricted" enforced by the API server, quotas), that images are pulled and that the
container sees only its image's filesystem, GPUs and node placement honoured by a scheduler,
a kubelet's real probes and restarts, projected tokens actually issued and rotated (here a
placeholder token is written), ownerReference garbage collection, NetworkPolicy enforcement,
PVC provisioning and access modes, and Service networking: the emulated kubelet maps a
Service to the local endpoint of the pod it selects (``Kubelet.resolve_service``, given to
the runtime as its ``endpoint_for`` hook) where a cluster would route its DNS name.

Against a real cluster (kind, k3d, or any kubeconfig; the contract suite only, as these
tests inspect the emulator's objects)::

    kind create cluster --name shipyard-test
    export SHIPYARD_TEST_KUBECONFIG=$HOME/.kube/config
    export SHIPYARD_PLATFORM_IMAGE=ghcr.io/shipyard/shipyard:0.1.0  # has python3 and sh
    .venv/bin/pytest -q tests/common/runtime/test_contract.py -k kubernetes

The contract's server tests connect to the Service's DNS name, so run them from inside the
cluster's network: pytest in a pod labelled ``app.kubernetes.io/component: gateway`` in the
namespace ``SHIPYARD_KUBE_PLATFORM_NAMESPACE`` names (the only pods the profile's
NetworkPolicy lets in, where the CNI enforces it); or deselect them with
``-k "kubernetes and not server"``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import kmock
import kubernetes_validate
import pytest

from services.common.runtime import Phase, RuntimeBackendError, WorkloadNotFound
from services.common.runtime.k8s_manifests import (
    MANAGED_BY,
    NOT_RUNNABLE_GATE,
    READER_ROLE,
    ROLE_LABEL,
    TOKEN_DIR,
    WORKLOAD_LABEL,
    PodOptions,
    label_value,
    pod_manifest,
    reader_pod_manifest,
    service_name,
)
from services.common.runtime.k8s_reader import check_path, decode_reader_output
from services.common.runtime.k8s_status import service_endpoint, workload_status
from services.common.runtime.kubernetes import KubernetesRuntime, resolve_settings
from services.common.runtime.models import WorkloadSpec, WorkloadStatus

from .cluster import EmulatedCluster
from .kubelet import init_failure_statuses

pytestmark = pytest.mark.timeout(60)
KUBERNETES_VERSION = "1.37"
RESOURCES = {
    "Pod": kmock.resource("", "v1", "pods"),
    "Service": kmock.resource("", "v1", "services"),
    "Secret": kmock.resource("", "v1", "secrets"),
    "PersistentVolumeClaim": kmock.resource("", "v1", "persistentvolumeclaims"),
    "ServiceAccount": kmock.resource("", "v1", "serviceaccounts"),
    "RoleBinding": kmock.resource("rbac.authorization.k8s.io", "v1", "rolebindings"),
    "NetworkPolicy": kmock.resource("networking.k8s.io", "v1", "networkpolicies"),
    "ResourceQuota": kmock.resource("", "v1", "resourcequotas"),
}


@pytest.fixture(params=["kubernetes"])
async def cluster(tmp_path: Any) -> AsyncIterator[EmulatedCluster]:
    async with EmulatedCluster(tmp_path / "node") as made:
        yield made


@pytest.fixture
async def kube(cluster: EmulatedCluster) -> AsyncIterator[KubernetesRuntime]:
    runtime = cluster.runtime()
    yield runtime
    await runtime.shutdown()


def stored(cluster: EmulatedCluster, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as the emulated API server holds it, or None."""
    key = (RESOURCES[kind], namespace, name)
    if key not in cluster.server.objects or cluster.server.objects[key].deleted:
        return None
    return cluster.server.objects[key].raw


def all_stored(cluster: EmulatedCluster) -> list[dict[str, Any]]:
    objects = [obj.raw for _, obj in cluster.server.objects.items() if not obj.deleted]
    return objects + list(cluster.server.namespaces.values())


def job(name: str, command: list[str], namespace: str = "team", **extra: Any) -> dict[str, Any]:
    return {"kind": "job", "namespace": namespace, "name": name, "command": command, **extra}


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


async def eventually(check: Any, within: float = 20) -> None:
    """Until ``check()`` (test side: the emulator's counters have nothing to await)."""
    end = time.monotonic() + within
    while not check():
        assert time.monotonic() < end, "condition never met"
        await asyncio.sleep(0.02)


# -- the Pod ---------------------------------------------------------------------------------


async def test_pod_carries_image_resources_and_placement(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    await cluster.create_configmap("team", "settings", {"FROM_MAP": "mapped"})
    spec = job(
        "train",
        ["sh", "-c", 'echo "$GREETING $FROM_MAP"'],
        args=["$(GREETING)"],
        image="pytorch/pytorch:2.5.1-cuda12.4",
        env=[{"name": "GREETING", "value": "hello"}],
        envFrom=[{"configMapRef": {"name": "settings"}}],
        workingDir="/work",
        resources={
            "requests": {"cpu": "2", "memory": "4Gi"},
            "limits": {"memory": "8Gi", "nvidia.com/gpu": 1},
        },
        nodeSelector={"accelerator": "nvidia-a100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
        imagePullSecrets=[{"name": "registry"}],
        activeDeadlineSeconds=3600,
        labels={"trial": "t1"},
    )
    await kube.apply(spec)
    pod = stored(cluster, "Pod", "team", "train")
    assert pod is not None
    container = pod["spec"]["containers"][0]
    assert container["image"] == "pytorch/pytorch:2.5.1-cuda12.4"
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"},
    }
    assert container["command"] == ["sh", "-c", 'echo "$GREETING $FROM_MAP"']
    assert container["args"] == ["$(GREETING)"]  # Kubernetes expands it, not the runtime
    assert container["workingDir"] == "/work"
    assert container["envFrom"] == [{"configMapRef": {"name": "settings"}}]
    assert {"name": "GREETING", "value": "hello"} in container["env"]
    assert pod["spec"]["nodeSelector"] == {"accelerator": "nvidia-a100"}
    assert pod["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["spec"]["affinity"] == spec["affinity"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["spec"]["activeDeadlineSeconds"] == 3600
    assert pod["spec"]["restartPolicy"] == "Never"
    labels = pod["metadata"]["labels"]
    assert labels[MANAGED_BY] == "shipyard" and labels[WORKLOAD_LABEL] == "train"
    assert labels["trial"] == "t1"
    status = await kube.wait("team", "train", timeout=20)
    assert status.phase == Phase.SUCCEEDED and status.image == spec["image"]
    assert [line async for line in kube.logs("team", "train")] == ["hello mapped"]


async def test_pod_security_restricted_and_projected_token(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    await kube.apply(job("whoami", ["sh", "-c", f"cat {TOKEN_DIR}/namespace; echo"]))
    pod = stored(cluster, "Pod", "team", "whoami")
    assert pod is not None
    spec = pod["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = spec["containers"][0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "default-editor"
    assert not any("hostPath" in v for v in spec["volumes"])
    identity = next(v for v in spec["volumes"] if "projected" in v)
    sources = identity["projected"]["sources"]
    assert sources[0]["serviceAccountToken"] == {
        "audience": "shipyard",
        "expirationSeconds": 600,
        "path": "token",
    }
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.namespace"
    mount = next(m for m in container["volumeMounts"] if m["name"] == identity["name"])
    assert mount == {"name": identity["name"], "mountPath": TOKEN_DIR, "readOnly": True}
    assert {"name": "SHIPYARD_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"} in container["env"]
    assert (await kube.wait("team", "whoami", timeout=20)).phase == Phase.SUCCEEDED
    assert [line async for line in kube.logs("team", "whoami")] == ["team"]


async def test_settings_shape_the_pod(cluster: EmulatedCluster) -> None:
    runtime = cluster.runtime(
        kube_token_audience="gateway.example",
        kube_run_as_user=2000,
        kube_run_as_group=3000,
        kube_gateway_url="http://gateway.shipyard.svc:8000",
    )
    try:
        await runtime.apply(job("quiet", ["true"]))
        pod = stored(cluster, "Pod", "team", "quiet")
        assert pod is not None
        assert pod["spec"]["securityContext"]["runAsUser"] == 2000
        assert pod["spec"]["securityContext"]["runAsGroup"] == 3000
        identity = next(v for v in pod["spec"]["volumes"] if "projected" in v)
        token = identity["projected"]["sources"][0]["serviceAccountToken"]
        assert token["audience"] == "gateway.example"
        env = pod["spec"]["containers"][0]["env"]
        assert {"name": "SHIPYARD_URL", "value": "http://gateway.shipyard.svc:8000"} in env
    finally:
        await runtime.shutdown()


async def test_default_image_is_the_platform_image(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    status = await kube.apply(job("builtin", ["true"]))
    pod = stored(cluster, "Pod", "team", "builtin")
    assert pod is not None
    assert pod["spec"]["containers"][0]["image"] == kube.platform_image
    assert status.image is None  # the spec named none
    assert kube.python == "python3"


def test_settings_from_environment_and_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_PLATFORM_IMAGE", "registry.example/shipyard:2")
    monkeypatch.setenv("SHIPYARD_KUBE_STORAGE_CLASS", "fast")

    class ServiceSettings:
        kube_platform_namespace = "platform"
        kube_storage_class = None

    config = resolve_settings(ServiceSettings(), {"kube_token_audience": "aud"})
    assert config.platform_image == "registry.example/shipyard:2"
    assert config.kube_storage_class == "fast"  # None on the service: the environment's
    assert config.kube_platform_namespace == "platform"
    assert config.kube_token_audience == "aud"
    assert config.kube_config is None  # in-cluster by default
    with pytest.raises(TypeError, match="unknown settings"):
        KubernetesRuntime(None, no_such_setting=1)


# -- servers and files -----------------------------------------------------------------------


async def test_server_gets_a_service_and_its_endpoint(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    spec = {
        "kind": "server",
        "namespace": "team",
        "name": "web",
        "command": ["python3", "-m", "http.server", "$(PORT)", "--bind", "0.0.0.0"],
        "readinessProbe": {"httpGet": {"path": "/"}},
    }
    await kube.apply(spec)
    pod = stored(cluster, "Pod", "team", "web")
    service = stored(cluster, "Service", "team", "web")
    assert pod is not None and service is not None
    container = pod["spec"]["containers"][0]
    assert pod["spec"]["restartPolicy"] == "Always"
    assert container["ports"] == [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]
    assert {"name": "PORT", "value": "8080"} in container["env"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/", "port": 8080, "scheme": "HTTP"}
    assert service["spec"]["selector"] == {MANAGED_BY: "shipyard", WORKLOAD_LABEL: "web"}
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}
    ]
    owners = service["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
        ("Pod", "web", pod["metadata"]["uid"])
    ]
    status = await kube.wait("team", "web", timeout=20, ready=True)
    assert status.endpoint == cluster.kubelet.resolve_service("team", "web", 8080)  # type: ignore[union-attr]
    # Without the emulated networking, the endpoint is the Service's cluster DNS name.
    ready_pod = stored(cluster, "Pod", "team", "web")
    assert ready_pod is not None
    assert workload_status(ready_pod).endpoint == "http://web.team.svc:8080"
    await kube.delete("team", "web")
    assert stored(cluster, "Service", "team", "web") is None
    assert stored(cluster, "Pod", "team", "web") is None


async def test_files_become_a_secret_owned_by_the_pod(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    files = {
        "/var/run/shipyard/step/plan.json": '{"a": 1}',
        "/var/run/shipyard/step/my script.py": "print(1)",
        "/opt/tools/t.txt": "t",
    }
    await kube.apply(job("step", ["cat", "/opt/tools/t.txt"], files=files))
    pod = stored(cluster, "Pod", "team", "step")
    secret = stored(cluster, "Secret", "team", "step-files")
    assert pod is not None and secret is not None
    assert len(secret["data"]) == 3
    assert all(
        key.replace("-", "").replace(".", "").replace("_", "").isalnum() for key in secret["data"]
    )
    assert secret["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    volumes = [v for v in pod["spec"]["volumes"] if "secret" in v]
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    by_dir = {mounts[v["name"]]["mountPath"]: v["secret"]["items"] for v in volumes}
    assert sorted(by_dir) == ["/opt/tools", "/var/run/shipyard/step"]
    assert sorted(i["path"] for i in by_dir["/var/run/shipyard/step"]) == [
        "my script.py",
        "plan.json",
    ]
    assert all(mounts[v["name"]]["readOnly"] for v in volumes)
    assert (await kube.wait("team", "step", timeout=20)).phase == Phase.SUCCEEDED
    await kube.delete("team", "step")
    assert stored(cluster, "Secret", "team", "step-files") is None


async def test_init_containers_share_the_pods_mounts_and_run_first(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    """An init step becomes an init container with the main container's mounts (the emptyDir
    and the files' secret volume), environment, resources and security context, its own
    image (default: the workload's) and extra env; the pod validates and the command reads
    what the step wrote (run by the emulated kubelet, see the module docstring)."""
    init: list[dict[str, Any]] = [
        {
            "name": "storage-initializer",
            "image": "ghcr.io/shipyard/shipyard:test",
            "command": ["sh", "-c", "cp /var/run/shipyard/model/plan.txt /mnt/models/m.txt"],
            "env": [{"name": "STEP", "value": "1"}],
        },
        {"name": "check", "command": ["test", "-s", "/mnt/models/m.txt"]},
    ]
    spec = job(
        "initialized",
        ["cat", "/mnt/models/m.txt"],
        image="example/own-server:1",
        env=[{"name": "OWN", "value": "x"}],
        files={"/var/run/shipyard/model/plan.txt": "the model"},
        resources={"limits": {"memory": "512Mi"}},
        volumeMounts=[{"name": "kserve-provision-location", "mountPath": "/mnt/models"}],
        volumes=[{"name": "kserve-provision-location", "emptyDir": {}}],
        initContainers=init,
    )
    await kube.apply(spec)
    pod = stored(cluster, "Pod", "team", "initialized")
    assert pod is not None
    validate(pod)
    main = pod["spec"]["containers"][0]
    first, second = pod["spec"]["initContainers"]
    assert (first["name"], first["image"]) == ("storage-initializer", init[0]["image"])
    assert first["command"] == init[0]["command"] and "args" not in first
    assert (second["name"], second["image"]) == ("check", "example/own-server:1")
    for step in (first, second):
        assert step["volumeMounts"] == main["volumeMounts"]
        mounts = {m["mountPath"] for m in step["volumeMounts"]}
        assert {"/mnt/models", "/var/run/shipyard/model", TOKEN_DIR} <= mounts
        assert step["securityContext"] == main["securityContext"]
        assert step["resources"] == {"limits": {"memory": "512Mi"}}
        assert "readinessProbe" not in step and "ports" not in step
    assert first["env"] == [*main["env"], {"name": "STEP", "value": "1"}]
    assert {"name": "OWN", "value": "x"} in second["env"]
    status = await kube.wait("team", "initialized", timeout=20)
    assert status.phase == Phase.SUCCEEDED, status
    done = stored(cluster, "Pod", "team", "initialized")
    assert done is not None
    validate(done)  # the emulated kubelet's status is a valid one too
    steps = done["status"]["initContainerStatuses"]
    assert [(s["name"], s["image"], s["ready"]) for s in steps] == [
        ("storage-initializer", init[0]["image"], True),
        ("check", "example/own-server:1", True),
    ]
    assert [line async for line in kube.logs("team", "initialized")] == ["the model"]
    # Without init steps a pod has no initContainers field at all.
    plain = pod_manifest(WorkloadSpec.model_validate(job("plain", ["true"])), kube.options)
    assert "initContainers" not in plain["spec"]


def test_init_failure_words_follow_the_local_runtime() -> None:
    """A failed init container reads as the local runtime says it: InitError when the pod
    failed, InitCrashLoopBackOff (with its restarts counted) while it is retried."""
    terminated = {"exitCode": 1, "reason": "Error", "message": "cannot download model: 403"}
    waiting_main = [{"name": "workload", "state": {"waiting": {"reason": "PodInitializing"}}}]
    failed = pod_with(
        {
            "phase": "Failed",
            "initContainerStatuses": [
                {"name": "storage-initializer", "state": {"terminated": terminated}}
            ],
            "containerStatuses": waiting_main,
        }
    )
    status = workload_status(failed)
    assert (status.phase, status.reason, status.exit_code) == (Phase.FAILED, "InitError", 1)
    assert status.message == (
        "init step 'storage-initializer' exited with code 1; "
        "last output: cannot download model: 403"
    )
    retried = pod_with(
        {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "storage-initializer",
                    "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": terminated},
                }
            ],
            "containerStatuses": waiting_main,
        }
    )
    status = workload_status(retried)
    assert (status.phase, status.reason, status.restart_count) == (
        Phase.PENDING,
        "InitCrashLoopBackOff",
        2,
    )
    assert "init step 'storage-initializer' exited with code 1" in (status.message or "")


@pytest.mark.parametrize("reason", ["InitError", "InitCrashLoopBackOff"])
def test_emulated_kubelet_writes_valid_init_failures(reason: str) -> None:
    """The emulated kubelet's status for a failed init step is a valid pod status (every
    field the schema requires), and it reads back as the local runtime's words."""
    words = "init step 'storage-initializer' exited with code 1; last output: 403"
    local = WorkloadStatus(
        namespace="team",
        name="p",
        phase=Phase.PENDING,
        reason=reason,
        message=words,
        restart_count=2,
    )
    init = init_failure_statuses(local, {"storage-initializer": "img"})
    waiting = [
        {
            "name": "workload",
            "image": "img",
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "PodInitializing"}},
        }
    ]
    phase = "Failed" if reason == "InitError" else "Pending"
    pod = pod_with({"phase": phase, "initContainerStatuses": init, "containerStatuses": waiting})
    validate(pod)
    status = workload_status(pod)
    assert status.reason == reason
    assert (status.message or "").endswith(words)


# -- volumes ---------------------------------------------------------------------------------


async def test_volume_is_a_pvc(cluster: EmulatedCluster) -> None:
    runtime = cluster.runtime(kube_storage_class="fast-ssd")
    try:
        info = await runtime.create_volume("team", "data", size="5Gi", labels={"owner": "a"})
        pvc = stored(cluster, "PersistentVolumeClaim", "team", "data")
        assert pvc is not None
        assert pvc["spec"] == {
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": "5Gi"}},
            "storageClassName": "fast-ssd",
        }
        assert pvc["metadata"]["labels"] == {"owner": "a", MANAGED_BY: "shipyard"}
        assert (info.size, info.labels) == ("5Gi", {"owner": "a"})
        assert info.created_at is not None
        await runtime.create_volume("team", "plain")
        plain = stored(cluster, "PersistentVolumeClaim", "team", "plain")
        assert plain is not None and plain["spec"]["resources"]["requests"]["storage"] == "1Gi"
    finally:
        await runtime.shutdown()


async def test_unknown_claim_pod_is_held_and_never_runs(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    spec = job(
        "orphan",
        ["true"],
        volumeMounts=[{"name": "d", "mountPath": "/d"}],
        volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "later"}}],
    )
    status = await kube.apply(spec)
    assert (status.phase, status.reason) == (Phase.FAILED, "PersistentVolumeClaimNotFound")
    pod = stored(cluster, "Pod", "team", "orphan")
    assert pod is not None and pod["spec"]["schedulingGates"] == [{"name": NOT_RUNNABLE_GATE}]
    await kube.create_volume("team", "later")  # appears afterwards: still never runs
    await asyncio.sleep(0.3)
    assert ("team", "orphan") not in cluster.kubelet.runs  # type: ignore[union-attr]
    assert (await kube.status("team", "orphan")).phase == Phase.FAILED


async def test_read_file_leaves_no_reader_pod(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    await kube.create_volume("team", "out")
    write = job(
        "writer",
        ["sh", "-c", "echo 42 > /out/answer"],
        volumeMounts=[{"name": "o", "mountPath": "/out"}],
        volumes=[{"name": "o", "persistentVolumeClaim": {"claimName": "out"}}],
    )
    await kube.apply(write)
    await kube.wait("team", "writer", timeout=20)
    assert await kube.read_file("team", "out", "answer") == b"42\n"
    readers = [
        o
        for o in all_stored(cluster)
        if o.get("kind") == "Pod" and (o["metadata"].get("labels") or {}).get(ROLE_LABEL)
    ]
    assert readers == []
    assert [s.name for s in await kube.list(namespace="team")] == ["writer"]
    manifest = reader_pod_manifest("team", "r", "out", "answer", 10, kube.options)
    claim = manifest["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert claim == {"claimName": "out", "readOnly": True}
    assert manifest["metadata"]["labels"][ROLE_LABEL] == READER_ROLE


# -- the watch -------------------------------------------------------------------------------


async def test_watch_resumes_from_its_resource_version(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    await kube.apply(job("later", ["sh", "-c", "sleep 0.5"]))
    cache = kube.pod_cache
    assert cache is not None
    relists, watches = cache.relists, cache.watches
    selector = f"{MANAGED_BY}=shipyard"
    with cluster.server.hold_watches(selector):
        cluster.server.drop_watches(selector)
        # While the runtime is cut off, the job ends (the kubelet's own watch goes on).
        await eventually(
            lambda: (
                (stored(cluster, "Pod", "team", "later") or {}).get("status", {}).get("phase")
                == "Succeeded"
            )
        )
    status = await kube.wait("team", "later", timeout=10)
    assert status.phase == Phase.SUCCEEDED
    assert cache.watches > watches and cache.relists == relists  # resumed, not listed again


async def test_watch_lists_again_after_410_gone(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    await kube.apply(job("before", ["sh", "-c", "sleep 0.5"]))
    cache = kube.pod_cache
    assert cache is not None
    relists = cache.relists
    selector = f"{MANAGED_BY}=shipyard"
    with cluster.server.hold_watches(selector):
        cluster.server.drop_watches(selector)
        await eventually(
            lambda: (
                (stored(cluster, "Pod", "team", "before") or {}).get("status", {}).get("phase")
                == "Succeeded"
            )
        )
        cluster.server.compact()  # the version the runtime resumes from is gone
    await eventually(lambda: cache.relists > relists)
    assert (await kube.wait("team", "before", timeout=10)).phase == Phase.SUCCEEDED
    await kube.apply(job("after", ["true"]))  # and the new watch carries on
    assert (await kube.wait("team", "after", timeout=20)).phase == Phase.SUCCEEDED


# -- adoption, stop, delete ------------------------------------------------------------------


async def test_adoption_by_labels_after_restart(cluster: EmulatedCluster) -> None:
    first = cluster.runtime()
    await first.apply(job("long", ["sleep", "30"], labels={"exp": "e1"}, owner={"kind": "Trial"}))
    await first.apply(job("short", ["true"]))
    await first.wait("team", "short", timeout=20)
    await first.close()
    # A pod someone else made in the same namespace is not ours to adopt.
    await cluster.create_foreign_pod("team", "foreign")
    second = cluster.runtime()
    try:
        adopted = {s.name: s for s in await second.adopt()}
        assert sorted(adopted) == ["long", "short"]
        assert adopted["long"].labels == {"exp": "e1"}
        assert adopted["long"].owner == {"kind": "Trial"}
        assert adopted["short"].phase == Phase.SUCCEEDED
        assert [s.name for s in await second.list({"exp": "e1"})] == ["long"]
        with pytest.raises(WorkloadNotFound):
            await second.status("team", "foreign")
        with pytest.raises(RuntimeBackendError, match="not made by shipyard"):
            await second.apply(job("foreign", ["true"]))
        await second.delete("team", "foreign")  # not ours: left alone
        assert stored(cluster, "Pod", "team", "foreign") is not None
        await second.delete("team", "long")
        assert stored(cluster, "Pod", "team", "long") is None
    finally:
        await second.shutdown()


async def test_stop_all_brings_the_deadline_forward(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    await kube.apply(job("sleeper", ["sleep", "30"], labels={"group": "x"}))
    await eventually(lambda: ("team", "sleeper") in cluster.kubelet.runs)  # type: ignore[union-attr]
    stopped = await kube.stop_all({"group": "x"})
    assert [(s.name, s.phase, s.reason) for s in stopped] == [("sleeper", Phase.FAILED, "Stopped")]
    pod = stored(cluster, "Pod", "team", "sleeper")
    assert pod is not None and pod["spec"]["activeDeadlineSeconds"] == 1
    assert [s.name for s in await kube.list(namespace="team")] == ["sleeper"]  # still listed


async def test_deadline_is_whole_seconds(cluster: EmulatedCluster, kube: KubernetesRuntime) -> None:
    await kube.apply(job("slow", ["sleep", "30"], activeDeadlineSeconds=0.5))
    pod = stored(cluster, "Pod", "team", "slow")
    assert pod is not None and pod["spec"]["activeDeadlineSeconds"] == 1
    status = await kube.wait("team", "slow", timeout=20)
    assert (status.phase, status.reason) == (Phase.FAILED, "DeadlineExceeded")
    assert "activeDeadlineSeconds=1" in (status.message or "")


async def test_delete_waits_for_the_pod_to_go(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    await kube.apply(job("busy", ["sleep", "30"], terminationGracePeriodSeconds=2))
    await eventually(lambda: ("team", "busy") in cluster.kubelet.runs)  # type: ignore[union-attr]
    await kube.delete("team", "busy")
    assert stored(cluster, "Pod", "team", "busy") is None
    assert ("team", "busy") not in cluster.kubelet.runs  # type: ignore[union-attr]
    with pytest.raises(WorkloadNotFound):
        await cluster.kubelet.local.status("team", "busy")  # type: ignore[union-attr]


async def test_run_is_live_follows_the_pod(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    await kube.apply(job("brief", ["sh", "-c", "sleep 0.5"]))
    pod = stored(cluster, "Pod", "team", "brief")
    assert pod is not None
    binding = f"team/brief/{pod['metadata']['uid']}"
    assert await kube.run_is_live(binding)
    assert not await kube.run_is_live("team/brief/another-uid")
    assert not await kube.run_is_live("nonsense")
    await kube.wait("team", "brief", timeout=20)
    assert not await kube.run_is_live(binding)


async def test_follow_waits_for_the_container_to_start(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    await kube.apply(job("chatty", ["sh", "-c", "echo one; sleep 0.3; echo two"]))
    lines = [line async for line in kube.logs("team", "chatty", follow=True)]
    assert lines == ["one", "two"]
    assert (await kube.status("team", "chatty")).phase == Phase.SUCCEEDED
    assert [line async for line in kube.logs("team", "chatty", tail=1)] == ["two"]


# -- profiles --------------------------------------------------------------------------------


async def test_ensure_namespace_makes_a_profile(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    await kube.ensure_namespace("team-a", "alice@example.com")
    await kube.ensure_namespace("team-a", "alice@example.com")  # idempotent
    namespace = cluster.server.namespaces["team-a"]
    profile_labels = {
        "app.kubernetes.io/part-of": "kubeflow-profile",
        "katib.kubeflow.org/metrics-collector-injection": "enabled",
        "pod-security.kubernetes.io/enforce": "restricted",
    }
    assert namespace["metadata"]["labels"].items() >= profile_labels.items()
    assert namespace["metadata"]["annotations"]["owner"] == "alice@example.com"
    for account in ("default-editor", "default-viewer"):
        assert stored(cluster, "ServiceAccount", "team-a", account) is not None
    bindings = {
        name: stored(cluster, "RoleBinding", "team-a", name)
        for name in ("namespaceAdmin", "default-editor", "default-viewer")
    }
    admin = bindings["namespaceAdmin"]
    assert admin is not None and admin["roleRef"]["name"] == "kubeflow-admin"
    assert admin["subjects"] == [
        {"kind": "User", "name": "alice@example.com", "apiGroup": "rbac.authorization.k8s.io"}
    ]
    editor, viewer = bindings["default-editor"], bindings["default-viewer"]
    assert editor is not None and editor["roleRef"]["name"] == "kubeflow-edit"
    assert editor["subjects"][0] == {
        "kind": "ServiceAccount",
        "name": "default-editor",
        "namespace": "team-a",
    }
    assert viewer is not None and viewer["roleRef"]["name"] == "kubeflow-view"
    policy = stored(cluster, "NetworkPolicy", "team-a", "shipyard-gateway-only")
    assert policy is not None
    assert policy["spec"]["podSelector"] == {"matchLabels": {MANAGED_BY: "shipyard"}}
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "shipyard"}
                    },
                    "podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}},
                }
            ]
        }
    ]
    await kube.delete_namespace("team-a")
    await kube.delete_namespace("team-a")  # idempotent
    assert "team-a" not in cluster.server.namespaces


# -- names and statuses ----------------------------------------------------------------------


async def test_invalid_label_is_refused_with_its_name(kube: KubernetesRuntime) -> None:
    with pytest.raises(ValueError, match=r"labels\['exp'\]"):
        await kube.apply(job("bad", ["true"], labels={"exp": "not ok!"}))
    with pytest.raises(ValueError, match="label key"):
        await kube.create_volume("team", "v", labels={"/x": "y"})
    assert await kube.list() == []


def test_reader_output_is_decoded_or_refused() -> None:
    ok = "noise\nSHIPYARD-READ OK 5\naGVsbG8=\nSHIPYARD-READ END\n"
    assert decode_reader_output(ok, "f", 10) == b"hello"
    with pytest.raises(FileNotFoundError, match="f: a link"):
        decode_reader_output("SHIPYARD-READ ERR notfound a link\n", "f", 10)
    with pytest.raises(ValueError, match="larger than 10 bytes"):
        decode_reader_output("SHIPYARD-READ ERR toolarge 10\n", "f", 10)
    with pytest.raises(RuntimeBackendError, match="cut short"):
        decode_reader_output("SHIPYARD-READ OK 5\naGVs\n", "f", 10)
    with pytest.raises(RuntimeBackendError, match="cut short"):
        decode_reader_output("SHIPYARD-READ OK 9\naGVsbG8=\nSHIPYARD-READ END\n", "f", 10)
    assert check_path("/a/./b//c") == "a/b/c"
    for bad in ("", "/", "a/../b", "..", "a\0b"):
        with pytest.raises(ValueError):
            check_path(bad)


def test_names_fit_kubernetes_limits() -> None:
    long_name = "trial-" + "x" * 100
    assert len(label_value(long_name)) <= 63 and label_value("short") == "short"
    assert service_name("web") == "web"
    for name in ("1st.server", long_name, "a.b"):
        svc = service_name(name)
        assert len(svc) <= 63 and svc[0].isalpha() and "." not in svc
    assert service_endpoint("ns", "svc", 80) == "http://svc.ns.svc:80"


def pod_with(status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    spec = WorkloadSpec(namespace="team", name="p", command=["true"])
    pod = pod_manifest(spec, PodOptions(platform_image="img"))
    pod["metadata"].update(meta)
    pod["status"] = status
    return pod


def test_status_words_follow_the_local_runtime() -> None:
    crash = pod_with(
        {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "workload",
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                }
            ],
        }
    )
    status = workload_status(crash)
    assert (status.phase, status.reason, status.restart_count) == (
        Phase.RUNNING,
        "CrashLoopBackOff",
        3,
    )
    pulling = pod_with(
        {
            "phase": "Pending",
            "containerStatuses": [
                {"name": "workload", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
            ],
        }
    )
    assert workload_status(pulling).reason == "ImagePullBackOff"
    oom = pod_with(
        {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "workload",
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ],
        }
    )
    assert (workload_status(oom).reason, workload_status(oom).exit_code) == ("OOMKilled", 137)
    evicted = pod_with({"phase": "Failed", "reason": "Evicted", "message": "node low on memory"})
    assert (workload_status(evicted).reason, workload_status(evicted).message) == (
        "Evicted",
        "node low on memory",
    )
    unscheduled = pod_with(
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "no GPU",
                }
            ],
        }
    )
    assert workload_status(unscheduled).reason == "Unschedulable"


# -- every manifest, against the schemas -----------------------------------------------------


async def test_every_object_validates_against_kubernetes_1_37(
    cluster: EmulatedCluster, kube: KubernetesRuntime
) -> None:
    await kube.ensure_namespace("team", "alice@example.com")
    await kube.create_volume("team", "data", size="2Gi", labels={"app": "x"})
    mounted: dict[str, Any] = {
        "volumeMounts": [
            {"name": "d", "mountPath": "/data"},
            {"name": "scratch", "mountPath": "/s"},
        ],
        "volumes": [
            {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "scratch", "emptyDir": {}},
        ],
    }
    await kube.apply(
        job(
            "full",
            ["sh", "-c", "echo ok > /data/x"],
            files={"/var/run/shipyard/plan.json": "{}"},
            resources={"limits": {"nvidia.com/gpu": "1", "memory": "1Gi"}},
            tolerations=[{"key": "gpu", "operator": "Exists"}],
            readinessProbe={"httpGet": {"path": "/"}},
            **mounted,
        )
    )
    await kube.apply(
        {
            "kind": "server",
            "namespace": "team",
            "name": "srv",
            "command": ["python3", "-m", "http.server", "$(PORT)"],
            "ports": [{"containerPort": 9000, "name": "web"}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 9000}, "periodSeconds": 0.5},
        }
    )
    await kube.apply(
        job(
            "held",
            ["true"],
            volumeMounts=[{"name": "h", "mountPath": "/h"}],
            volumes=[{"name": "h", "persistentVolumeClaim": {"claimName": "none"}}],
        )
    )
    await kube.wait("team", "full", timeout=20)
    await kube.wait("team", "srv", timeout=20, ready=True)
    assert await kube.read_file("team", "data", "x") == b"ok\n"
    objects = all_stored(cluster)
    kinds = {o["kind"] for o in objects}
    assert kinds >= {
        "Pod",
        "Service",
        "Secret",
        "PersistentVolumeClaim",
        "Namespace",
        "ServiceAccount",
        "RoleBinding",
        "NetworkPolicy",
    }
    for obj in objects:
        validate(obj)
    validate(reader_pod_manifest("team", "reader", "data", "x", 1024, kube.options))
