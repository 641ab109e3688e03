"""``shipyard login`` against the real provider: loopback PKCE, 0600 storage, refresh, logout."""

from __future__ import annotations

import asyncio
import stat
from urllib.parse import urljoin, urlsplit

import httpx

from shipyard import auth
from tests.gateway.conftest import PASSWORD


def drive_login_form(url: str) -> None:
    """Plays the user's browser: submits the provider's login form, follows to the loopback."""
    with httpx.Client(timeout=10) as c:
        r = c.get(url)
        for _ in range(12):
            if r.status_code in (302, 303):
                nxt = urljoin(str(r.url), r.headers["location"])
                r = c.get(nxt)
                if urlsplit(nxt).path == "/callback":
                    assert r.status_code == 200, (nxt, r.status_code, r.text[:200])
                    return
                continue
            if 'name="password"' in r.text:
                r = c.post(str(r.url), data={"login": "user@example.com", "password": PASSWORD})
                continue
            raise AssertionError(f"unexpected {r.status_code}: {r.text[:200]}")


async def test_cli_login_stores_refreshes_and_logs_out(gateway, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    entry = await asyncio.to_thread(auth.login, gateway.url, open_url=drive_login_form, timeout=30)
    path = tmp_path / "shipyard" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert entry["client_id"] == "shipyard-cli"
    headers = await asyncio.to_thread(auth.bearer_headers, gateway.url)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as c:
        r = await c.get(
            "/apis/kubeflow.org/v1/namespaces/kubeflow-user-example-com/notebooks", headers=headers
        )
        assert r.status_code == 200 and r.json()["identity"]["user"] == "user@example.com"
    # Force expiry: bearer_headers refreshes with the refresh token.
    data = auth._load_all()
    data[gateway.url]["expires_at"] = 0
    auth._save_all(data)
    fresh = await asyncio.to_thread(auth.bearer_headers, gateway.url)
    assert fresh["Authorization"].startswith("Bearer ")
    assert auth._load_all()[gateway.url]["expires_at"] > 0
    assert auth.logout(gateway.url) is True
    assert auth.bearer_headers(gateway.url) == {}
