"""Security suite: forged/invalid bearer tokens, cross-namespace access, CSRF, spoofed headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import cast

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import RSAKey

from gateway.app import create_app
from tests.conftest import free_port
from tests.gateway.conftest import (
    ServedGateway,
    browser_login,
    id_claims,
    trusted_header_settings,
)

NS_A = "kubeflow-user-example-com"
NS_B = "kubeflow-second-example-com"
# One representative path per route family, with {ns} for the namespace.
FAMILIES = [
    "/api/v1/namespaces/{ns}/persistentvolumeclaims",
    "/api/v1/namespaces/{ns}/configmaps",
    "/apis/kubeflow.org/v1/namespaces/{ns}/notebooks",
    "/apis/kubeflow.org/v1beta1/namespaces/{ns}/experiments",
    "/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows",
    "/api/v1/workflows/{ns}",
    "/api/v1/cron-workflows/{ns}",
    "/apis/v2beta1/runs?namespace={ns}",
    "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices",
    "/notebook/{ns}/nb/api/kernels",
    "/serving/{ns}/model/v2/health/ready",
]


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


URL = f"/apis/kubeflow.org/v1/namespaces/{NS_A}/notebooks"


async def test_bearer_valid_token_accepted(client, oidc) -> None:
    r = await client.get(URL, headers=bearer(await oidc.id_token("user@example.com")))
    assert r.status_code == 200
    ident = r.json()["identity"]
    assert ident == {
        "user": "user@example.com",
        "groups": ["ml-team"],
        "namespace": NS_A,
        "role": "admin",
        "cluster_admin": False,
    }


async def test_bearer_alg_none_rejected(client, oidc) -> None:
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(id_claims(oidc.issuer))}."
    r = await client.get(URL, headers=bearer(token))
    assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"


async def test_bearer_hs256_with_public_key_rejected(client, oidc) -> None:
    async with httpx.AsyncClient() as c:
        jwks = (await c.get(f"{oidc.issuer}/jwks")).json()["keys"][0]
    public_pem = RSAKey.import_key(jwks).as_pem(private=False)
    # Forged by hand: joserfc itself refuses to use a public key as an HMAC secret.
    signing_input = f"{b64({'alg': 'HS256', 'kid': jwks['kid']})}.{b64(id_claims(oidc.issuer))}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    r = await client.get(URL, headers=bearer(token))
    assert r.status_code == 401


async def test_bearer_unknown_kid_rejected(client, oidc) -> None:
    key = RSAKey.generate_key(2048)
    token = jwt.encode({"alg": "RS256", "kid": uuid.uuid4().hex}, id_claims(oidc.issuer), key)
    r = await client.get(URL, headers=bearer(token))
    assert r.status_code == 401 and "unknown signing key" in r.json()["message"]


async def test_bearer_tampered_payload_rejected(client, oidc) -> None:
    token = await oidc.id_token("second@example.com")
    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["email"] = "user@example.com"
    r = await client.get(URL, headers=bearer(f"{head}.{b64(data)}.{sig}"))
    assert r.status_code == 401


async def test_bearer_token_from_other_issuer_rejected(client, other_oidc) -> None:
    token = await other_oidc.id_token("user@example.com")
    r = await client.get(URL, headers=bearer(token))
    assert r.status_code == 401 and "wrong issuer" in r.json()["message"]


@pytest.mark.parametrize("family", FAMILIES)
async def test_authz_user_a_denied_namespace_b(client, oidc, gateway, family) -> None:
    gateway.gw.route_table.upsert("notebook", NS_B, "nb", [(gateway.url, 1)])
    gateway.gw.route_table.upsert("inferenceservice", NS_B, "model", [(gateway.url, 1)])
    token = await oidc.id_token("user@example.com")
    r = await client.get(family.format(ns=NS_B), headers=bearer(token))
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Forbidden"
    assert "user@example.com" in body["message"] and NS_B in body["message"]
    assert body["details"]["verb"] == "get" and body["details"]["namespace"] == NS_B


@pytest.mark.parametrize("family", FAMILIES)
async def test_authz_owner_allowed_on_every_family(client, oidc, gateway, upstream, family) -> None:
    gateway.gw.route_table.upsert("notebook", NS_A, "nb", [(upstream.url, 1)])
    gateway.gw.route_table.upsert("inferenceservice", NS_A, "model", [(upstream.url, 1)])
    token = await oidc.id_token("user@example.com")
    r = await client.get(family.format(ns=NS_A), headers=bearer(token))
    assert r.status_code == 200, r.text
    if family.startswith(("/notebook/", "/serving/")):
        # Tenant code (a data plane) is authorized for but never handed an identity.
        assert r.json()["path"] == family.format(ns=NS_A)
        assert r.json()["identity"] is None and r.json()["assertions"] == 0
    else:
        assert r.json()["identity"]["namespace"] == NS_A
        assert r.json()["assertions"] == 1


async def test_authz_view_role_cannot_write(client, oidc, gateway) -> None:
    await gateway.gw.store.add_binding(NS_B, "user@example.com", "view")
    try:
        token = await oidc.id_token("user@example.com")
        path = f"/apis/kubeflow.org/v1/namespaces/{NS_B}/notebooks"
        r = await client.get(path, headers=bearer(token))
        assert r.status_code == 200 and r.json()["identity"]["role"] == "view"
        r = await client.post(path, headers=bearer(token), json={"metadata": {"name": "x"}})
        assert r.status_code == 403 and r.json()["details"]["verb"] == "create"
        r = await client.delete(f"{path}/x", headers=bearer(token))
        assert r.status_code == 403
    finally:
        await gateway.gw.store.remove_binding(NS_B, "user@example.com")


async def test_authz_spoofed_identity_headers_stripped(client, oidc) -> None:
    token = await oidc.id_token("second@example.com")
    r = await client.get(
        f"/apis/kubeflow.org/v1/namespaces/{NS_B}/notebooks",
        headers={
            **bearer(token),
            "kubeflow-userid": "admin@example.com",
            "x-shipyard-identity": "forged",
        },
    )
    assert r.status_code == 200
    assert r.json()["kubeflow_userid"] is None and r.json()["assertions"] == 1
    assert r.json()["identity"]["user"] == "second@example.com"


async def test_serviceaccount_token_scoped_to_namespace(client, oidc, gateway) -> None:
    token = await oidc.id_token("user@example.com")
    r = await client.post(
        f"/api/v1/namespaces/{NS_A}/serviceaccounts/default-editor/token", headers=bearer(token)
    )
    assert r.status_code == 201
    sa = r.json()["status"]["token"]
    r = await client.post(
        f"/apis/kubeflow.org/v1beta1/namespaces/{NS_A}/experiments", headers=bearer(sa), json={}
    )
    assert r.status_code == 200
    assert r.json()["identity"]["user"] == f"system:serviceaccount:{NS_A}:default-editor"
    assert r.json()["identity"]["role"] == "edit"
    r = await client.get(
        f"/apis/kubeflow.org/v1beta1/namespaces/{NS_B}/experiments", headers=bearer(sa)
    )
    assert r.status_code == 403
    # A person may not mint tokens for a namespace they cannot edit.
    r = await client.post(
        f"/api/v1/namespaces/{NS_B}/serviceaccounts/default-editor/token", headers=bearer(token)
    )
    assert r.status_code == 403
    # In-process issuance (what the runtime calls) gives the same scoping.
    other = gateway.gw.sa_tokens.issue(NS_B)
    r = await client.get(
        f"/apis/kubeflow.org/v1/namespaces/{NS_A}/notebooks", headers=bearer(other)
    )
    assert r.status_code == 403


async def test_csrf_cookie_session_unsafe_method_needs_same_origin(gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        await browser_login(c, "user@example.com")
        path = f"/apis/kubeflow.org/v1/namespaces/{NS_A}/notebooks"
        r = await c.post(path, json={}, headers={"origin": "https://evil.example"})
        assert r.status_code == 403 and "cross-site" in r.json()["message"]
        r = await c.post(path, json={})
        assert r.status_code == 403
        r = await c.post(path, json={}, headers={"origin": gateway.url})
        assert r.status_code == 200
        csrf = (await c.get("/oauth2/userinfo")).json()["csrfToken"]
        r = await c.post(path, json={}, headers={"x-csrf-token": csrf})
        assert r.status_code == 200


async def test_trusted_header_only_from_trusted_address(
    gateway_state: Path, upstream, gateway_db
) -> None:
    for trusted, expected in (("10.255.255.1", 401), ("127.0.0.1", 200)):
        settings = trusted_header_settings(
            gateway_state, upstream.url, gateway_db, trusted_proxies=trusted
        )
        server = ServedGateway(create_app(settings), free_port())
        await server.start()
        try:
            await cast(FastAPI, server.server.config.app).state.gw.store.ensure_profile(
                NS_A, "user@example.com"
            )
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
                r = await c.get(
                    URL, headers={"kubeflow-userid": "user@example.com", "kubeflow-groups": "a,b"}
                )
            assert r.status_code == expected, r.text
            if expected == 200:
                assert r.json()["identity"]["groups"] == ["a", "b"]
                assert r.json()["kubeflow_userid"] is None
        finally:
            await server.stop()


async def test_settings_refuse_default_cookie_secret_outside_single_user(gateway_state) -> None:
    from pydantic import ValidationError

    from gateway.settings import Settings

    with pytest.raises(ValidationError):
        Settings(state_dir=gateway_state, auth_mode="oidc", oidc_issuer="http://x/dex")
