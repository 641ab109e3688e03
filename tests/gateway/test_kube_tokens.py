"""With the Kubernetes runtime, a pod's projected service-account token calls the gateway.

There is no kube-apiserver on these machines, so the ``TokenReview`` endpoint here is a
stand-in (a FAKE: it answers from a table, as the API server would after checking the token's
signature, expiry, audience and bound pod). What is real: the gateway, its routing of a token
by issuer, its TokenReview request (checked field by field), its caching, and what the
principal it makes may do (edit on its own namespace only, through the real authorizer).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from gateway.app import create_app
from tests.conftest import free_port
from tests.gateway.conftest import RunningServer, ServedGateway

NS_A = "kubeflow-user-example-com"
NS_B = "kubeflow-second-example-com"
ISSUER = "https://kubernetes.default.svc.cluster.local"
GATEWAY_OWN_TOKEN = "the-gateway-pods-own-token"


def projected(name: str, issuer: str = ISSUER) -> str:
    """A token shaped like a projected one (the gateway only peeks at ``iss`` to route it;
    the fake API server below is what vouches for it)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"iss": issuer, "aud": ["shipyard"], "sub": name, "exp": 4102444800}
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


#: What the fake API server says of each token (by the name inside it).
REVIEWS: dict[str, dict[str, Any]] = {
    "editor-a": {
        "authenticated": True,
        "user": {"username": f"system:serviceaccount:{NS_A}:default-editor"},
        "audiences": ["shipyard"],
    },
    "viewer-a": {
        "authenticated": True,
        "user": {"username": f"system:serviceaccount:{NS_A}:default-viewer"},
        "audiences": ["shipyard"],
    },
    "other-audience": {
        "authenticated": True,
        "user": {"username": f"system:serviceaccount:{NS_A}:default-editor"},
        "audiences": ["vault"],
    },
    "pod-gone": {"authenticated": False, "error": "pod kubeflow-user-example-com/x not found"},
}


def fake_api_server(seen: list[dict[str, Any]]) -> FastAPI:
    """FAKE kube-apiserver: only ``POST .../tokenreviews``, answered from ``REVIEWS``."""
    app = FastAPI()

    @app.post("/apis/authentication.k8s.io/v1/tokenreviews", status_code=201)
    async def review(request: Request) -> dict[str, Any]:
        body = await request.json()
        seen.append({"auth": request.headers.get("authorization"), "body": body})
        token = body["spec"]["token"]
        sub = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))["sub"]
        return {**body, "status": REVIEWS.get(sub, {"authenticated": False})}

    return app


@pytest.fixture
async def kube_gateway(
    tmp_path: Path, oidc_settings: Callable[..., Any]
) -> AsyncIterator[tuple[RunningServer, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    api = RunningServer(fake_api_server(seen), free_port())
    await api.start()
    token_file = tmp_path / "token"
    token_file.write_text(GATEWAY_OWN_TOKEN + "\n")
    settings = oidc_settings(
        runtime="kubernetes",
        kube_api_url=api.url,
        kube_api_token_file=str(token_file),
    )
    port = free_port()
    server = ServedGateway(create_app(settings), port)
    await server.start()
    gw = server.server.config.app.state.gw  # type: ignore[union-attr]
    await gw.store.ensure_profile(NS_A, "user@example.com")
    await gw.store.ensure_profile(NS_B, "second@example.com")
    try:
        yield server, seen
    finally:
        await server.stop()
        await api.stop()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_pods_token_edits_its_own_namespace_only(kube_gateway: Any) -> None:
    server, seen = kube_gateway
    token = projected("editor-a")
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
        r = await c.post(
            f"/apis/kubeflow.org/v1beta1/namespaces/{NS_A}/experiments",
            headers=bearer(token),
            json={},
        )
        assert r.status_code == 200, r.text
        identity = r.json()["identity"]
        assert identity["user"] == f"system:serviceaccount:{NS_A}:default-editor"
        assert identity["role"] == "edit"
        r = await c.get(
            f"/apis/kubeflow.org/v1beta1/namespaces/{NS_B}/experiments", headers=bearer(token)
        )
        assert r.status_code == 403
    # The review asked for our audience, with the gateway's own (re-read) token; and the
    # second request was answered from the cache.
    assert len(seen) == 1
    assert seen[0]["auth"] == f"Bearer {GATEWAY_OWN_TOKEN}"
    assert seen[0]["body"]["spec"] == {"token": token, "audiences": ["shipyard"]}


@pytest.mark.parametrize(
    "name,message",
    [
        ("viewer-a", "only a namespace's default-editor service account is accepted"),
        ("other-audience", "not meant for audience 'shipyard'"),
        ("pod-gone", "pod kubeflow-user-example-com/x not found"),
        ("unknown", "the cluster did not accept this token"),
    ],
)
async def test_a_token_the_cluster_does_not_vouch_for_is_refused(
    kube_gateway: Any, name: str, message: str
) -> None:
    server, _ = kube_gateway
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
        r = await c.get(
            f"/apis/kubeflow.org/v1beta1/namespaces/{NS_A}/experiments",
            headers=bearer(projected(name)),
        )
    assert r.status_code == 401, r.text
    assert message in r.json()["message"]
    assert "identity" not in r.json()


async def test_a_token_of_another_issuer_is_not_sent_to_the_cluster(kube_gateway: Any) -> None:
    """Routing is by issuer: a token claiming some other issuer never reaches TokenReview
    (it goes to the OIDC provider's verification, which refuses it)."""
    server, seen = kube_gateway
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
        r = await c.get(
            f"/apis/kubeflow.org/v1beta1/namespaces/{NS_A}/experiments",
            headers=bearer(projected("editor-a", issuer="https://evil.example")),
        )
    assert r.status_code == 401
    assert seen == []
