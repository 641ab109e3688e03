"""Browser login through the real OIDC provider's form (authorization code + PKCE)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.gateway.conftest import browser_login


async def test_login_browser_flow_sets_session(gateway, oidc) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        r = await c.get("/oauth2/start", params={"rd": "/notebook/x/y/lab"})
        q = parse_qs(urlsplit(r.headers["location"]).query)
        assert r.headers["location"].startswith(f"{oidc.issuer}/auth")
        assert q["code_challenge_method"] == ["S256"] and q["code_challenge"][0]
        final = await browser_login(c, "user@example.com", rd="/hub/home?x=1")
        assert final.status_code == 302 and final.headers["location"] == "/hub/home?x=1"
        cookie = final.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
        info = (await c.get("/oauth2/userinfo")).json()
        assert info["user"] == "user@example.com" and info["groups"] == ["ml-team"]
        r = await c.get("/apis/kubeflow.org/v1/namespaces/kubeflow-user-example-com/notebooks")
        assert r.status_code == 200
        assert r.json()["identity"]["user"] == "user@example.com"


@pytest.mark.parametrize(
    "rd",
    ["https://evil.example", "//evil.example", "/\\evil.example", "http:/evil.example", "/\tevil"],
)
async def test_login_rejects_open_redirect(gateway, rd: str) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        final = await browser_login(c, "user@example.com", rd=rd)
        assert final.status_code == 302 and final.headers["location"] == "/"


async def test_unauthenticated_api_gets_401_browser_gets_302(client) -> None:
    r = await client.get("/apis/kubeflow.org/v1/namespaces/kubeflow-user-example-com/notebooks")
    assert r.status_code == 401
    assert r.json()["kind"] == "Status" and r.json()["reason"] == "Unauthorized"
    r = await client.get("/notebook/kubeflow-user-example-com/nb/lab?a=b")
    assert r.status_code == 302
    assert r.headers["location"].startswith("/oauth2/start?rd=%2Fnotebook%2F")


async def test_sign_out_clears_cookie_and_ends_provider_session(gateway, oidc) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        await browser_login(c, "user@example.com")
        csrf = (await c.get("/oauth2/userinfo")).json()["csrfToken"]
        r = await c.post("/oauth2/sign_out", headers={"x-csrf-token": csrf})
        assert r.status_code == 303
        assert r.headers["location"].startswith(f"{oidc.issuer}/session/end")
        assert "id_token_hint" in r.headers["location"]
        assert (await c.get("/oauth2/userinfo")).status_code == 401


async def test_callback_rejects_state_mismatch(client) -> None:
    r = await client.get("/oauth2/callback", params={"code": "x", "state": "forged"})
    assert r.status_code == 400


async def test_session_refresh_after_key_rotation(gateway, oidc) -> None:
    """Live cookie session survives provider key rotation: refresh yields a new-kid token."""
    import asyncio

    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        await browser_login(c, "second@example.com")
        before = c.cookies.get("shipyard_session")
        oidc.rotate()
        await asyncio.sleep(1.1)  # session_refresh_seconds=1 in the fixture
        r = await c.get("/apis/kubeflow.org/v1/namespaces/kubeflow-second-example-com/notebooks")
        assert r.status_code == 200, r.text
        assert c.cookies.get("shipyard_session") != before
        assert r.json()["identity"]["user"] == "second@example.com"
        token = await oidc.id_token("second@example.com", fresh=True)
        r = await c.get(
            "/apis/kubeflow.org/v1beta1/namespaces/kubeflow-second-example-com/trials",
            headers={"authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
