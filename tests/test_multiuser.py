"""Several users, several namespaces, through the real gateway (trusted-header mode).

The KFP API names runs and experiments by id, so the gateway cannot tell their namespace:
it asserts every namespace the caller may use, and the pipeline service checks the
object's own namespace against that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.common.objectstore import S3Config
from shipyard.up import Platform
from tests.conftest import TRUSTED_HEADER_ENV, RunningSeaweedFS, fresh_database, running_platform

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
            r = admin.post(
                "/apis/kubeflow.org/v1/profiles",
                json={
                    "apiVersion": "kubeflow.org/v1",
                    "kind": "Profile",
                    "metadata": {"name": team},
                    "spec": {"owner": {"kind": "User", "name": owner}},
                },
            )
            assert r.status_code in (200, 201), r.text
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
