"""Profiles, KFAM bindings and central-dashboard workgroup endpoints through the gateway."""

from __future__ import annotations


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_create_profile_and_manage_contributors(client, oidc) -> None:
    admin = bearer(await oidc.id_token("admin@example.com"))
    owner = bearer(await oidc.id_token("second@example.com"))
    other = bearer(await oidc.id_token("user@example.com"))
    body = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": "team-x", "labels": {"a": "b"}},
        "spec": {"owner": {"kind": "User", "name": "second@example.com"}},
    }
    r = await client.post("/apis/kubeflow.org/v1/profiles", json=body, headers=other)
    assert r.status_code == 403 and r.json()["kind"] == "Status"
    r = await client.post("/apis/kubeflow.org/v1/profiles", json=body, headers=admin)
    assert r.status_code == 201, r.text
    obj = r.json()
    assert obj["metadata"]["uid"] and obj["metadata"]["resourceVersion"] == "1"
    assert obj["metadata"]["creationTimestamp"].endswith("Z")
    r = await client.post("/apis/kubeflow.org/v1/profiles", json=body, headers=admin)
    assert r.status_code == 409 and r.json()["reason"] == "AlreadyExists"

    # The namespace exists now: the owner can use it, others cannot.
    path = "/apis/kubeflow.org/v1/namespaces/team-x/notebooks"
    assert (await client.post(path, json={}, headers=owner)).status_code == 200
    assert (await client.get(path, headers=other)).status_code == 403

    # KFAM: the owner grants view; non-admins cannot grant.
    binding = {
        "user": {"kind": "User", "name": "user@example.com"},
        "referredNamespace": "team-x",
        "RoleRef": {"kind": "ClusterRole", "name": "kubeflow-view"},
    }
    assert (await client.post("/kfam/v1/bindings", json=binding, headers=other)).status_code == 403
    r = await client.post("/kfam/v1/bindings", json=binding, headers=owner)
    assert r.status_code == 200
    r = await client.get("/kfam/v1/bindings", params={"namespace": "team-x"}, headers=owner)
    names = {(b["user"]["name"], b["RoleRef"]["name"]) for b in r.json()["bindings"]}
    assert names == {
        ("second@example.com", "kubeflow-admin"),
        ("user@example.com", "kubeflow-view"),
    }
    assert (await client.get(path, headers=other)).status_code == 200
    assert (await client.post(path, json={}, headers=other)).status_code == 403

    # Dashboard: contributors and env-info.
    r = await client.get("/api/workgroup/get-contributors/team-x", headers=other)
    assert r.json() == ["user@example.com"]
    r = await client.post(
        "/api/workgroup/add-contributor/team-x",
        json={"contributor": "admin@example.com"},
        headers=other,
    )
    assert r.status_code == 403
    r = await client.get("/api/workgroup/env-info", headers=other)
    env = r.json()
    assert env["user"] == "user@example.com" and env["isClusterAdmin"] is False
    assert {"namespace": "team-x", "role": "contributor", "user": "user@example.com"} in env[
        "namespaces"
    ]
    r = await client.request(
        "DELETE",
        "/api/workgroup/remove-contributor/team-x",
        json={"contributor": "user@example.com"},
        headers=owner,
    )
    assert r.status_code == 200 and r.json() == []
    assert (await client.get(path, headers=other)).status_code == 403

    # Patch and delete: owner may patch labels, not the owner; only owner/admin delete.
    r = await client.patch(
        "/apis/kubeflow.org/v1/profiles/team-x",
        json={"metadata": {"labels": {"c": "d"}}},
        headers=owner,
    )
    assert r.status_code == 200 and r.json()["metadata"]["labels"] == {"a": "b", "c": "d"}
    assert r.json()["metadata"]["resourceVersion"] == "2"
    r = await client.patch(
        "/apis/kubeflow.org/v1/profiles/team-x",
        json={"spec": {"owner": {"name": "user@example.com"}}},
        headers=owner,
    )
    assert r.status_code == 403
    r = await client.get("/apis/kubeflow.org/v1/profiles", headers=other)
    assert "team-x" not in [i["metadata"]["name"] for i in r.json()["items"]]
    r = await client.get("/apis/kubeflow.org/v1/profiles", headers=admin)
    assert "team-x" in [i["metadata"]["name"] for i in r.json()["items"]]
    assert (
        await client.delete("/apis/kubeflow.org/v1/profiles/team-x", headers=other)
    ).status_code == 403
    assert (
        await client.delete("/apis/kubeflow.org/v1/profiles/team-x", headers=owner)
    ).status_code == 200
    assert (
        await client.get("/apis/kubeflow.org/v1/profiles/team-x", headers=admin)
    ).status_code == 404


async def test_workgroup_registration_flow(client, oidc, gateway) -> None:
    third = bearer(await oidc.id_token("admin@example.com"))
    r = await client.get("/api/workgroup/exists", headers=third)
    assert r.json() == {
        "user": "admin@example.com",
        "hasAuth": True,
        "hasWorkgroup": False,
        "registrationFlowAllowed": True,
    }
    r = await client.post("/api/workgroup/create", json={}, headers=third)
    assert r.status_code == 200 and r.json()["namespace"] == "kubeflow-admin-example-com"
    r = await client.get("/api/workgroup/exists", headers=third)
    assert r.json()["hasWorkgroup"] is True
    r = await client.get("/api/workgroup/env-info", headers=third)
    assert r.json()["isClusterAdmin"] is True
    await gateway.gw.store.delete_profile("kubeflow-admin-example-com")


async def test_kfam_rejects_unknown_role(client, oidc) -> None:
    owner = bearer(await oidc.id_token("user@example.com"))
    r = await client.post(
        "/kfam/v1/bindings",
        headers=owner,
        json={
            "user": {"kind": "User", "name": "x@example.com"},
            "referredNamespace": "kubeflow-user-example-com",
            "RoleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
        },
    )
    assert r.status_code == 422 and "RoleRef.name" in r.json()["message"]
