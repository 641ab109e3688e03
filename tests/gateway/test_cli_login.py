"""``shipyard login`` against the real provider: loopback PKCE, 0600 storage, refresh, logout;
the kubeconfig context it writes, used by the real kubectl against the real platform."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import uvicorn
import yaml

from gateway.app import create_app
from services.common import certs
from shipyard import auth, cli
from tests.conftest import free_port
from tests.gateway.conftest import (
    PASSWORD,
    OIDCServer,
    RunningServer,
    ServedGateway,
    gateway_settings,
)


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


# ---- a kubeconfig context for kubectl (shipyard.kubeconfig) ---------------------------------

NS = "kubeflow-user-example-com"
SEED_PVC = (Path(__file__).resolve().parents[1] / "seed" / "pvc.yaml").read_text()


class PlatformGateway:
    """A gateway in OIDC mode in front of the real platform's services, on plain HTTP (for
    ``shipyard login``) and on HTTPS (kubectl sends credentials over HTTPS only)."""

    def __init__(self, http: RunningServer, https: uvicorn.Server, https_url: str, ca: Path):
        self.http, self.https, self.https_url, self.ca = http, https, https_url, ca


@pytest.fixture
async def oidc_platform_gateway(
    platform: Any, oidc: OIDCServer, gateway_db: str, tmp_path: Path
) -> AsyncIterator[PlatformGateway]:
    """It signs identity assertions with the platform's gateway key, so the services accept
    what it forwards; its HTTPS certificate comes from a CA of its own (services.common.certs)."""
    state = tmp_path / "gateway-state"
    keys = state / "keys"
    keys.mkdir(parents=True, mode=0o700)
    for name in ("gateway.key", "gateway.pub"):
        shutil.copy2(platform.state_dir / "keys" / name, keys / name)
    urls = platform.urls
    settings = gateway_settings(
        state,
        urls["notebook"],
        gateway_db,
        auth_mode="oidc",
        oidc_issuer=oidc.issuer,
        oidc_audiences="shipyard,shipyard-cli",
        automl_url=urls["automl"],
        pipeline_url=urls["pipeline"],
        serving_url=urls["serving"],
    )
    http = ServedGateway(create_app(settings), free_port())
    await http.start()
    gw = http.server.config.app.state.gw  # type: ignore[union-attr]
    await gw.store.ensure_profile(NS, "user@example.com")
    cert = certs.ensure_api_certificate(keys, ["127.0.0.1"], ["localhost"])
    port = free_port()
    https = uvicorn.Server(
        uvicorn.Config(
            http.server.config.app,
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(cert.cert),
            ssl_keyfile=str(cert.key),
            lifespan="off",  # the app started with the HTTP listener
            log_level="warning",
        )
    )
    task = asyncio.create_task(https.serve())
    deadline = time.monotonic() + 15
    while not https.started:
        assert not task.done() and time.monotonic() < deadline, "the https listener did not start"
        await asyncio.sleep(0.02)
    yield PlatformGateway(http, https, f"https://127.0.0.1:{port}", certs.ca_paths(keys).cert)
    https.should_exit = True
    await asyncio.wait_for(task, timeout=10)
    await http.stop()


async def _kubectl(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    """kubectl in a thread: the gateway it talks to runs on this event loop."""
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("kubectl is required (Debian package `kubectl`; `make test` installs it)")
    return await asyncio.to_thread(
        subprocess.run,
        [binary, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )


async def test_login_writes_kubeconfig_kubectl_uses_with_refresh(
    oidc_platform_gateway: PlatformGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = oidc_platform_gateway
    url = gateway.http.url
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr(auth, "_open_browser", drive_login_form)
    config = tmp_path / "kube" / "config"
    config.parent.mkdir()
    config.write_text(  # another cluster's entries stay as they are
        "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {server: https://x}\n"
        "users: []\ncontexts: []\ncurrent-context: ''\n"
    )
    argv = ["--server", url, "login", "--kubeconfig", str(config)]
    argv += ["--api-server", gateway.https_url, "--certificate-authority", str(gateway.ca)]
    args = cli.build_parser().parse_args(argv)
    assert await asyncio.to_thread(auth.run_login, args) == 0

    written = yaml.safe_load(config.read_text())
    context = written["current-context"]
    assert [c["name"] for c in written["clusters"]] == ["other", context]
    cluster = written["clusters"][1]["cluster"]
    assert cluster["server"] == gateway.https_url and cluster["certificate-authority-data"]
    plugin = next(u for u in written["users"] if u["name"] == context)["user"]["exec"]
    assert plugin["apiVersion"] == "client.authentication.k8s.io/v1"
    assert plugin["args"][-1] == "kubectl-credential" and url in plugin["args"]
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    env = dict(
        os.environ, HOME=str(tmp_path), KUBECONFIG=str(config), XDG_CONFIG_HOME=str(tmp_path)
    )
    name = f"oidc-kubectl-{uuid.uuid4().hex[:6]}"
    pvc = SEED_PVC.replace("name: kubeflow-test-pv", f"name: {name}")
    created = await _kubectl(env, "apply", "-f", "-", stdin=pvc)
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == f"persistentvolumeclaim/{name} created"

    # The stored token has expired: the plugin refreshes it, and kubectl goes on working.
    data = auth._load_all()
    before = data[url]["id_token"]
    data[url]["expires_at"] = 0
    auth._save_all(data)
    listed = await _kubectl(env, "get", "pvc", name, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    obj = json.loads(listed.stdout)
    assert obj["metadata"]["name"] == name and obj["metadata"]["namespace"] == NS
    after = auth._load_all()[url]
    assert after["expires_at"] > time.time() and after["id_token"] != before
    deleted = await _kubectl(env, "delete", "pvc", name)
    assert deleted.returncode == 0, deleted.stderr

    # Logged out: the plugin says what to do, and kubectl fails with it.
    assert auth.logout(url) is True
    refused = await _kubectl(env, "get", "pvc")
    assert refused.returncode != 0
    assert "shipyard --server" in refused.stderr and "login" in refused.stderr, refused.stderr
