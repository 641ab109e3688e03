"""Several users, several namespaces, through the real gateway (trusted-header mode).

The KFP API names runs and experiments by id, so the gateway cannot tell their namespace:
it asserts every namespace the caller may use, and the pipeline service checks the
object's own namespace against that.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.objectstore import S3Config
from shipyard.up import Platform
from tests import specs
from tests.conftest import (
    TRUSTED_HEADER_ENV,
    RunningSeaweedFS,
    create_profile,
    fresh_database,
    running_platform,
)

ADMIN = "admin@example.com"


def as_user(platform: Platform, user: str) -> httpx.Client:
    return httpx.Client(
        base_url=platform.gateway_url, headers={"kubeflow-userid": user}, timeout=15
    )


@pytest.fixture(scope="module")
def multiuser(
    nats_url: str, seaweedfs: RunningSeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    with fresh_database() as url:
        yield from _multiuser_platform(url, nats_url, tmp_path_factory, seaweedfs.config)


def _multiuser_platform(
    database_url: str,
    nats_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    s3: S3Config | None = None,
) -> Iterator[Platform]:
    with running_platform(
        Path(tmp_path_factory.mktemp("multiuser")),
        database_url=database_url,
        nats_url=nats_url,
        s3=s3,
        auth_mode="trusted-header",
        env=TRUSTED_HEADER_ENV,
    ) as platform:
        admin = as_user(platform, ADMIN)
        for team, owner in (("mu-a", "alice@example.com"), ("mu-b", "bob@example.com")):
            create_profile(admin, team, owner)
        r = as_user(platform, "alice@example.com").post(
            "/kfam/v1/bindings",
            json={
                "user": {"kind": "User", "name": "bob@example.com"},
                "referredNamespace": "mu-a",
                "RoleRef": {"kind": "ClusterRole", "name": "kubeflow-edit"},
            },
        )
        assert r.status_code in (200, 201), r.text
        yield platform


def test_kfp_objects_by_id_follow_their_namespace(multiuser: Platform) -> None:
    alice, bob, carol = (as_user(multiuser, f"{u}@example.com") for u in ("alice", "bob", "carol"))
    created = alice.post(
        "/apis/v2beta1/experiments", json={"display_name": "shared", "namespace": "mu-a"}
    )
    assert created.status_code == 200, created.text
    exp_id = created.json()["experiment_id"]
    # bob's own namespace is mu-b, but he edits mu-a: the experiment is his to read.
    assert bob.get(f"/apis/v2beta1/experiments/{exp_id}").status_code == 200
    refused = carol.get(f"/apis/v2beta1/experiments/{exp_id}")
    assert refused.status_code == 403, refused.text
    assert bob.post(f"/apis/v2beta1/experiments/{exp_id}:archive").status_code == 200
    # Anyone signed in may ask whether the API is up (kfp.Client does, before anything).
    assert carol.get("/apis/v2beta1/healthz").status_code == 200


def test_namespaced_paths_check_the_path_namespace(multiuser: Platform) -> None:
    bob = as_user(multiuser, "bob@example.com")
    carol = as_user(multiuser, "carol@example.com")
    path = "/apis/argoproj.io/v1alpha1/namespaces/mu-a/workflows"
    assert bob.get(path).status_code == 200
    denied = carol.get(path)
    assert denied.status_code == 403
    body = denied.json()
    assert body["kind"] == "Status" and "carol@example.com" in body["message"]
    assert "mu-a" in body["message"]


def _finished(
    api: httpx.Client, base: str, name: str, seen: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The workflow's status once it finished; every status read on the way into ``seen``."""
    deadline, status = time.monotonic() + 90, dict[str, Any]()
    while time.monotonic() < deadline and status.get("phase") not in FINISHED:
        time.sleep(0.2)
        status = api.get(f"{base}/{name}").json().get("status") or {}
        if seen is not None:
            seen.append(status)
    return status


FINISHED = ("Succeeded", "Failed", "Error")


def test_a_profiles_quota_holds_against_its_tenants_workloads(multiuser: Platform) -> None:
    """A cluster admin gives carol a profile with ``limits.memory: 1Gi``.

    - Two parallel steps asking 768Mi each both succeed, one after the other: the second waits
      for room, as a pod over quota waits on Kubernetes.
    - A step asking 2Gi and a step naming no memory limit never start, failing with the API
      server's words.
    - She cannot lift the quota herself.
    """
    admin, carol = as_user(multiuser, ADMIN), as_user(multiuser, "carol@example.com")
    quota = {"hard": {"limits.memory": "1Gi"}}
    create_profile(admin, "mu-q", "carol@example.com", resourceQuotaSpec=quota)
    r = carol.patch(
        "/apis/kubeflow.org/v1/profiles/mu-q",
        json={"spec": {"resourceQuotaSpec": {"hard": {"limits.memory": "64Gi"}}}},
    )
    assert r.status_code == 403, r.text

    def step(name: str, memory: str | None, seconds: float = 0) -> dict[str, object]:
        script = (
            f"import time; print('{name} start', time.time(), flush=True); "
            f"time.sleep({seconds}); print('{name} end', time.time())"
        )
        container: dict[str, object] = {
            "image": "python:3.11",
            "command": ["python3", "-c", script],
        }
        if memory:
            container["resources"] = {"limits": {"memory": memory}}
        return {"name": name, "container": container}

    def dag(name: str, *steps: dict[str, object]) -> dict[str, Any]:
        tasks = [{"name": s["name"], "template": s["name"]} for s in steps]
        return specs.workflow(name, [{"name": "main", "dag": {"tasks": tasks}}, *steps])

    base = "/apis/argoproj.io/v1alpha1/namespaces/mu-q/workflows"
    turns = dag("quota-turns", step("first", "768Mi", 2), step("second", "768Mi", 2))
    never = dag("quota-never", step("big", "2Gi"), step("bare", None))
    for workflow in (turns, never):
        r = carol.post(base, json=workflow)
        assert r.status_code == 201, r.text

    seen: list[dict[str, Any]] = []
    status = _finished(carol, base, "quota-turns", seen)
    logs = carol.get(f"{base}/quota-turns/log").text
    assert status.get("phase") == "Succeeded", (status, logs)
    # Meanwhile the waiting step's node was Pending with the quota's words, as Argo shows a pod
    # over quota, beside the running one; each ended Succeeded without a message.
    waiting = [
        (n["displayName"], n.get("message", ""), s["phase"])
        for s in seen
        for n in (s.get("nodes") or {}).values()
        if n["type"] == "Pod" and n["phase"] == "Pending" and "quota" in n.get("message", "")
    ]
    assert waiting, seen
    for display, message, workflow_phase in waiting:
        assert display in ("first", "second") and workflow_phase == "Running"
        assert message == (  # in the API server's words and quantities
            "exceeded quota: kf-resource-quota, requested: limits.memory=768Mi, "
            "used: limits.memory=768Mi, limited: limits.memory=1Gi"
        )
    assert all(
        n["phase"] == "Succeeded" and "message" not in n and "waitingForQuota" not in n
        for n in status["nodes"].values()
        if n["type"] == "Pod"
    ), status["nodes"]
    times = {
        tuple(line.split()[-3:-1]): float(line.split()[-1])
        for line in logs.splitlines()
        if line.split()[-2:-1] in (["start"], ["end"])
    }
    spans = sorted((times[(n, "start")], times[(n, "end")]) for n in ("first", "second"))
    assert spans[0][1] <= spans[1][0], spans  # one after the other, never both at once

    status = _finished(carol, base, "quota-never")
    nodes = {n["displayName"]: n for n in (status.get("nodes") or {}).values()}
    assert status.get("phase") == "Failed", status
    assert nodes["big"]["phase"] == "Error"
    assert re.fullmatch(
        r"exceeded quota: kf-resource-quota, requested: limits\.memory=2Gi, "
        r"used: limits\.memory=(0|768Mi), limited: limits\.memory=1Gi",
        nodes["big"]["message"],
    ), nodes["big"]
    assert nodes["bare"]["phase"] == "Error"
    assert nodes["bare"]["message"] == (
        "failed quota: kf-resource-quota: must specify limits.memory"
    )
    logs = carol.get(f"{base}/quota-never/log").text
    assert "big start" not in logs and "bare start" not in logs


def test_a_profiles_quota_holds_against_its_tenants_claims(multiuser: Platform) -> None:
    """A cluster admin gives carol a profile with ``persistentvolumeclaims: 2`` and
    ``requests.storage: 3Gi``.

    - Her claims are refused past it, a 403 in the API server's words, as on Kubernetes.
    - A Workflow's ``volumeClaimTemplates`` claim waits, the workflow ``Pending`` with Argo's
      "Waiting for a PVC to be created." and the refusal, and runs once a claim is deleted;
      one larger than the whole quota ends the workflow ``Error``.
    """
    admin, carol = as_user(multiuser, ADMIN), as_user(multiuser, "carol@example.com")
    quota = {"hard": {"persistentvolumeclaims": "2", "requests.storage": "3Gi"}}
    create_profile(admin, "mu-v", "carol@example.com", resourceQuotaSpec=quota)
    pvcs = "/api/v1/namespaces/mu-v/persistentvolumeclaims"

    def claim(name: str, size: str) -> httpx.Response:
        spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
        return carol.post(pvcs, json={"metadata": {"name": name}, "spec": spec})

    assert claim("a", "2Gi").status_code == 201
    r = claim("b", "2Gi")
    assert r.status_code == 403, r.text
    assert r.json()["message"] == (
        'persistentvolumeclaims "b" is forbidden: exceeded quota: kf-resource-quota, '
        "requested: requests.storage=2Gi, used: requests.storage=2Gi, "
        "limited: requests.storage=3Gi"
    )
    assert carol.get(f"{pvcs}/b").status_code == 404
    assert claim("c", "1Gi").status_code == 201

    def with_claim(name: str, size: str) -> dict[str, Any]:
        step = {
            "name": "main",
            "container": {
                "image": "alpine",
                "command": ["sh", "-c", "echo kept > /work/out && cat /work/out"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            },
        }
        template = {
            "metadata": {"name": "work"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}},
            },
        }
        return specs.workflow(name, [step], volumeClaimTemplates=[template])

    base = "/apis/argoproj.io/v1alpha1/namespaces/mu-v/workflows"
    waits = ("claims-wait", "1Gi"), ("claims-stopped", "1Gi"), ("claims-never", "4Gi")
    for name, size in waits:
        assert carol.post(base, json=with_claim(name, size)).status_code == 201

    def pending(name: str) -> dict[str, Any]:
        deadline, status = time.monotonic() + 30, dict[str, Any]()
        while time.monotonic() < deadline and status.get("phase") != "Pending":
            time.sleep(0.2)
            status = carol.get(f"{base}/{name}").json().get("status") or {}
        return status

    # One stopped while it waits for its claim ends as a stopped workflow does.
    assert "Waiting for a PVC" in pending("claims-stopped").get("message", "")
    r = carol.put("/api/v1/workflows/mu-v/claims-stopped/terminate")
    assert r.status_code == 200, r.text
    stopped = _finished(carol, base, "claims-stopped")
    assert stopped.get("phase") == "Failed", stopped

    status = pending("claims-wait")
    assert status.get("message") == (
        'Waiting for a PVC to be created. persistentvolumeclaims "claims-wait-work" is '
        "forbidden: exceeded quota: kf-resource-quota, requested: persistentvolumeclaims=1,"
        "requests.storage=1Gi, used: persistentvolumeclaims=2,requests.storage=3Gi, "
        "limited: persistentvolumeclaims=2,requests.storage=3Gi"
    ), status
    assert carol.delete(f"{pvcs}/c").status_code == 200
    status = _finished(carol, base, "claims-wait")
    assert status.get("phase") == "Succeeded", status
    assert "message" not in status or "PVC" not in status["message"], status

    never = _finished(carol, base, "claims-never")
    assert never.get("phase") == "Error", never
    assert never["message"].startswith(
        'pvc create error: persistentvolumeclaims "claims-never-work" is forbidden: '
        "exceeded quota: kf-resource-quota, requested: "
    ), never
