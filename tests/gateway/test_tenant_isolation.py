"""Tenant isolation at the gateway (issue 10): what tenant code receives from a visitor, who
may claim a user, who may register a namespace, and what signing out ends.

Each test fails without its fix: the data plane used to forward the visitor's cookie and a
signed assertion, trusted-header mode trusted 127.0.0.1, a deleted profile's name was free for
anyone, and sign-out was a GET that left a copied cookie working.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from websockets.exceptions import InvalidStatus

from gateway.app import create_app
from gateway.revocations import SessionRevocations
from gateway.settings import Settings
from services.common import dataplane
from services.notebook.app import create_app as create_notebook_app
from services.notebook.settings import Settings as NotebookSettings
from tests import specs
from tests.conftest import InProcessService, free_port, service_in_process
from tests.gateway.conftest import (
    COOKIE_SECRET,
    RunningServer,
    ServedGateway,
    browser_login,
    notebook_host,
    notebook_sign_in,
    trusted_header_settings,
    ws_connect_host,
)

NS = "kubeflow-user-example-com"
API = f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks"
SESSION = "shipyard_session"
NOTEBOOK_SESSION = "shipyard_notebook_session"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# ---- a fake tenant server that records what it is sent ------------------------------------


class Recorder:
    """A real HTTP and WebSocket server standing in for tenant code (Jupyter, a model server):
    it answers everything and keeps every request's raw headers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[tuple[bytes, bytes]]]] = []
        app = FastAPI()

        @app.websocket("/{path:path}")
        async def record_websocket(ws: WebSocket, path: str) -> None:
            self.seen.append((ws.url.path, list(ws.headers.raw)))
            await ws.accept()
            await ws.send_text("hello from tenant code")
            await ws.receive_text()
            await ws.close()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        async def record(request: Request, path: str) -> JSONResponse:
            await request.body()
            self.seen.append((request.url.path, list(request.headers.raw)))
            return JSONResponse({"tenant": "answered", "path": request.url.path})

        self.server = RunningServer(app, free_port())

    def last(self, path: str) -> dict[str, list[str]]:
        """The headers of the last request for ``path``, by lower-case name."""
        for seen_path, raw in reversed(self.seen):
            if seen_path == path:
                out: dict[str, list[str]] = {}
                for k, v in raw:
                    out.setdefault(k.decode().lower(), []).append(v.decode("latin-1"))
                return out
        raise AssertionError(f"the tenant server never saw {path}; it saw {self.seen}")


@pytest.fixture
async def tenant(gateway: RunningServer) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    await recorder.server.start()
    table = gateway.gw.route_table  # type: ignore[attr-defined]
    table.upsert("notebook", NS, "rec", [(recorder.server.url, 1)])
    table.upsert("inferenceservice", NS, "rec", [(recorder.server.url, 1)])
    yield recorder
    table.remove("notebook", NS, "rec")
    table.remove("inferenceservice", NS, "rec")
    await recorder.server.stop()


@pytest.fixture
async def notebook_service(
    own_db: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory, gateway_state: Path
) -> AsyncIterator[InProcessService]:
    """The real notebook service, with the gateway's data-plane key (as on one platform)."""
    async with service_in_process(
        create_notebook_app,
        NotebookSettings,
        database_url=own_db,
        nats_url=nats_url,
        state_dir=Path(tmp_path_factory.mktemp("iso-notebook")),
        namespace=NS,
        dataplane_key_file=gateway_state / "keys" / "dataplane.key",
    ) as service:
        yield service


def jupyter_token(gateway_state: Path, name: str) -> str:
    """What the notebook service starts Jupyter with: same key file, same derivation."""
    key = dataplane.load_or_create_key(gateway_state / "keys" / "dataplane.key")
    return dataplane.notebook_token(key, NS, name)


def assert_nothing_of_the_visitor(headers: dict[str, list[str]], visitor_token: str) -> None:
    cookies = "; ".join(headers.get("cookie", []))
    assert SESSION not in cookies and NOTEBOOK_SESSION not in cookies, cookies
    assert "x-shipyard-identity" not in headers, headers
    assert "kubeflow-userid" not in headers and "kubeflow-groups" not in headers, headers
    assert "x-csrf-token" not in headers, headers
    assert all(visitor_token not in v for values in headers.values() for v in values), headers


async def test_data_plane_hands_tenant_code_nothing_of_the_visitor(
    gateway: RunningServer,
    gateway_state: Path,
    oidc: Any,
    tenant: Recorder,
    notebook_service: InProcessService,
) -> None:
    nb_path = f"/notebook/{NS}/rec/api/contents"
    isvc_path = f"/serving/{NS}/rec/v2/models/m/infer"
    ws_path = f"/notebook/{NS}/rec/api/kernels/k1/channels"
    forged = {
        "x-shipyard-identity": "forged",
        "kubeflow-userid": "admin@example.com",
        "kubeflow-groups": "platform-admins",
    }
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        await browser_login(c, "user@example.com")
        session = c.cookies[SESSION]
        csrf = (await c.get("/oauth2/userinfo")).json()["csrfToken"]
    # A browser visitor on the notebook's own origin: its cookie there beside Jupyter's own
    # cookies (and the session cookie, which a browser would not even send there).
    nb_cookie = await notebook_sign_in(gateway, session, NS, "rec")
    host = notebook_host(gateway, NS, "rec")
    cookie_header = (
        f"_xsrf=jupyter-xsrf-value; {SESSION}={session}; {NOTEBOOK_SESSION}={nb_cookie}; "
        "username-nb=tenant-cookie"
    )
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        r = await c.post(
            nb_path,
            json={"type": "notebook"},
            headers={
                **forged,
                "host": host,
                "cookie": cookie_header,
                "x-csrf-token": csrf,
                "origin": f"http://{host}",
            },
        )
        assert r.status_code == 200 and r.json() == {"tenant": "answered", "path": nb_path}
        seen_nb = tenant.last(nb_path)
        assert_nothing_of_the_visitor(seen_nb, session)
        assert nb_cookie not in seen_nb["cookie"][0]
        # Jupyter's own cookies pass; the Jupyter server's token is the only Authorization.
        cookie = seen_nb["cookie"][0]
        assert "_xsrf=jupyter-xsrf-value" in cookie and "username-nb=tenant-cookie" in cookie
        assert seen_nb["authorization"] == [f"token {jupyter_token(gateway_state, 'rec')}"]

        # The WebSocket path, same visitor.
        async with ws_connect_host(
            gateway, host, ws_path, {**forged, "cookie": cookie_header, "origin": f"http://{host}"}
        ) as ws:
            assert await asyncio.wait_for(ws.recv(), 5) == "hello from tenant code"
            await ws.send("bye")
        seen_ws = tenant.last(ws_path)
        assert_nothing_of_the_visitor(seen_ws, session)
        assert nb_cookie not in seen_ws["cookie"][0]
        assert "_xsrf=jupyter-xsrf-value" in seen_ws["cookie"][0]
        assert seen_ws["authorization"] == [f"token {jupyter_token(gateway_state, 'rec')}"]

    # A bearer visitor on a model's data plane: the token goes nowhere, and none is added.
    token = await oidc.id_token("user@example.com")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        r = await c.post(isvc_path, json={"inputs": []}, headers={**bearer(token), **forged})
        assert r.status_code == 200 and r.json() == {"tenant": "answered", "path": isvc_path}
    seen_isvc = tenant.last(isvc_path)
    assert_nothing_of_the_visitor(seen_isvc, token)
    assert "authorization" not in seen_isvc, seen_isvc

    # Replaying everything tenant code received gets nowhere: not at the gateway's API,
    # not at a service reached directly.
    replays = [seen_nb, seen_ws, seen_isvc]
    hop = {"host", "content-length", "connection", "upgrade", "transfer-encoding"}
    async with httpx.AsyncClient(timeout=15) as raw:
        for seen in replays:
            headers = [
                (k, v)
                for k, values in seen.items()
                if k not in hop and not k.startswith("sec-websocket")
                for v in values
            ]
            for path in (API, "/oauth2/userinfo"):
                r = await raw.get(gateway.url + path, headers=headers)
                assert r.status_code == 401, (path, r.text)
                if path == API:
                    assert r.json()["reason"] == "Unauthorized", r.text
            r = await raw.get(notebook_service.url + API, headers=headers)
            assert r.status_code == 401, r.text
            assert r.json()["kind"] == "Status"
            assert "missing identity assertion" in r.json()["message"], r.text
        # The same requests with a valid assertion succeed: the 401s were the replays' own.
        r = await raw.get(notebook_service.url + API, headers=notebook_service.headers())
        assert r.status_code == 200 and r.json()["kind"] == "NotebookList", r.text
        r = await raw.get(gateway.url + API, headers=bearer(token))
        assert r.status_code == 200 and r.json()["identity"]["user"] == "user@example.com"


async def test_gateway_token_opens_real_jupyter_server(
    gateway: RunningServer, oidc: Any, notebook_service: InProcessService
) -> None:
    """The two halves agree: the notebook service starts Jupyter with the token the gateway
    injects, so a visitor reaches the server through the gateway and only through it."""
    name = "through-gw"
    notebooks = f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks"
    body = specs.notebook(name)
    table = gateway.gw.route_table  # type: ignore[attr-defined]
    async with httpx.AsyncClient(
        base_url=notebook_service.url, timeout=20, headers=notebook_service.headers()
    ) as api:
        created = await api.post(notebooks, json=body)
        assert created.status_code == 201, created.text
        nb: dict[str, Any] = {}
        deadline = asyncio.get_running_loop().time() + 90
        while asyncio.get_running_loop().time() < deadline:
            nb = (await api.get(f"{notebooks}/{name}")).json()
            if (nb.get("status") or {}).get("readyReplicas") == 1:
                break
            await asyncio.sleep(0.3)
        assert (nb.get("status") or {}).get("readyReplicas") == 1, nb.get("status")
        table.upsert("notebook", NS, name, [(nb["status"]["endpoint"], 1)])
        try:
            token = await oidc.id_token("user@example.com")
            async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as c:
                kernels = f"/notebook/{NS}/{name}/api/kernels"
                r = await c.get(kernels, headers=bearer(token))
                assert r.status_code == 200 and r.json() == [], r.text
                r = await c.post(kernels, json={"name": "python3"}, headers=bearer(token))
                assert r.status_code == 201 and r.json()["name"] == "python3", r.text
                kernel = r.json()["id"]
                r = await c.delete(f"{kernels}/{kernel}", headers=bearer(token))
                assert r.status_code == 204, r.text
                # A visitor without access to the namespace gets no further than the gateway.
                other = await oidc.id_token("second@example.com")
                r = await c.get(kernels, headers=bearer(other))
                assert r.status_code == 403 and r.json()["reason"] == "Forbidden"
        finally:
            table.remove("notebook", NS, name)
            assert (await api.delete(f"{notebooks}/{name}")).status_code == 200


# ---- trusted-header mode --------------------------------------------------------------------


async def test_trusted_header_from_loopback_not_trusted_by_default(
    gateway_state: Path, upstream: RunningServer, gateway_db: str
) -> None:
    settings = trusted_header_settings(gateway_state, upstream.url, gateway_db, trusted_proxies="")
    server = ServedGateway(create_app(settings), free_port())
    await server.start()
    try:
        gw = cast(FastAPI, server.server.config.app).state.gw
        await gw.store.ensure_profile(NS, "user@example.com")
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            r = await c.get(API, headers={"kubeflow-userid": "user@example.com"})
            assert r.status_code == 401, r.text
            assert r.json()["reason"] == "Unauthorized"
            assert r.json()["message"] == "authentication required"
            r = await c.get("/api/workgroup/env-info", headers={"kubeflow-userid": "x@example.com"})
            assert r.status_code == 401, r.text
    finally:
        await server.stop()


@pytest.mark.parametrize("runtime", [None, "local"])
def test_trusted_header_refuses_to_start_with_local_runtime(
    tmp_path: Path, runtime: str | None
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        SHIPYARD_AUTH_MODE="trusted-header",
        SHIPYARD_COOKIE_SECRET=COOKIE_SECRET,
        SHIPYARD_STATE_DIR=str(tmp_path),
        SHIPYARD_GATEWAY_PORT=str(free_port()),
        SHIPYARD_TRUSTED_PROXIES="127.0.0.1",
    )
    if runtime is not None:
        env["SHIPYARD_RUNTIME"] = runtime
    proc = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode != 0
    assert "refusing to start" in proc.stderr, proc.stderr
    assert "local runtime" in proc.stderr and "claim any user" in proc.stderr, proc.stderr
    assert "SHIPYARD_TRUSTED_HEADER_ALLOW_LOCAL_RUNTIME=true" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_trusted_header_allowed_with_kubernetes_runtime_or_explicitly(tmp_path: Path) -> None:
    base: dict[str, Any] = dict(
        state_dir=tmp_path, auth_mode="trusted-header", cookie_secret=COOKIE_SECRET
    )
    assert Settings(**base, runtime="kubernetes").auth_mode == "trusted-header"
    allowed = Settings(**base, trusted_header_allow_local_runtime=True)
    assert allowed.runtime == "local" and allowed.trusted_proxy_addresses == set()


# ---- profiles -------------------------------------------------------------------------------


PROFILES = "/apis/kubeflow.org/v1/profiles"


def profile(name: str, owner: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": name},
        "spec": {"owner": {"kind": "User", "name": owner}},
    }


async def test_profile_non_admin_registers_only_own_namespace(
    client: httpx.AsyncClient, oidc: Any
) -> None:
    second = bearer(await oidc.id_token("second@example.com"))
    admin = bearer(await oidc.id_token("admin@example.com"))
    for name in ("team-claimed", NS):
        r = await client.post(PROFILES, json=profile(name, "second@example.com"), headers=second)
        assert r.status_code == 403, r.text
        body = r.json()
        assert body["reason"] == "Forbidden" and body["details"]["name"] == name
        assert 'may only register namespace "kubeflow-second-example-com"' in body["message"]
        r = await client.post(
            "/kfam/v1/profiles", json=profile(name, "second@example.com"), headers=second
        )
        assert r.status_code == 403 and r.json()["details"]["name"] == name, r.text
        r = await client.post("/api/workgroup/create", json={"namespace": name}, headers=second)
        assert r.status_code == 403 and r.json()["details"]["name"] == name, r.text
    r = await client.get(f"{PROFILES}/team-claimed", headers=admin)
    assert r.status_code == 404 and r.json()["reason"] == "NotFound"
    # A cluster admin may register any namespace, for anyone.
    r = await client.post(
        PROFILES, json=profile("team-claimed", "second@example.com"), headers=admin
    )
    assert r.status_code == 201 and r.json()["spec"]["owner"]["name"] == "second@example.com"
    r = await client.delete(f"{PROFILES}/team-claimed", headers=second)
    assert r.status_code == 200 and r.json()["status"] == "Success"


async def test_profile_deleted_name_stays_reserved(
    client: httpx.AsyncClient, oidc: Any, gateway: RunningServer
) -> None:
    owner = bearer(await oidc.id_token("user@example.com"))
    second = bearer(await oidc.id_token("second@example.com"))
    admin = bearer(await oidc.id_token("admin@example.com"))
    r = await client.post(PROFILES, json=profile("team-gone", "user@example.com"), headers=admin)
    assert r.status_code == 201, r.text
    r = await client.delete(f"{PROFILES}/team-gone", headers=owner)
    assert r.status_code == 200 and r.json()["details"]["name"] == "team-gone"
    # The namespace's data remains; nobody else may take the name, not even via an admin.
    r = await client.post(PROFILES, json=profile("team-gone", "second@example.com"), headers=admin)
    assert r.status_code == 409, r.text
    assert r.json()["reason"] == "Conflict" and "is reserved" in r.json()["message"]
    r = await client.post(PROFILES, json=profile("team-gone", "second@example.com"), headers=second)
    assert r.status_code == 403, r.text
    r = await client.get("/apis/kubeflow.org/v1/namespaces/team-gone/notebooks", headers=second)
    assert r.status_code == 403 and r.json()["details"]["namespace"] == "team-gone"
    # Its last owner gets it back (through an admin: it is not the namespace they map to).
    r = await client.post(PROFILES, json=profile("team-gone", "user@example.com"), headers=admin)
    assert r.status_code == 201 and r.json()["spec"]["owner"]["name"] == "user@example.com"
    await gateway.gw.store.delete_profile("team-gone")  # type: ignore[attr-defined]


async def test_profile_same_mapped_namespace_not_inherited(
    gateway_state: Path, upstream: RunningServer, gateway_db: str
) -> None:
    """Two users whose addresses map to one namespace (``a.b@`` and ``a-b@``): the second
    cannot register it after the first deleted it, so cannot read what it left."""
    settings = trusted_header_settings(gateway_state, upstream.url, gateway_db)
    server = ServedGateway(create_app(settings), free_port())
    await server.start()
    ns = "kubeflow-dot-name-example-com"
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            first = {"kubeflow-userid": "dot.name@example.com"}
            later = {"kubeflow-userid": "dot-name@example.com"}
            r = await c.post("/api/workgroup/create", json={}, headers=first)
            assert r.status_code == 200 and r.json()["namespace"] == ns, r.text
            r = await c.delete(f"{PROFILES}/{ns}", headers=first)
            assert r.status_code == 200 and r.json()["status"] == "Success"
            r = await c.post("/api/workgroup/create", json={}, headers=later)
            assert r.status_code == 409, r.text
            assert r.json()["reason"] == "Conflict" and ns in r.json()["message"]
            r = await c.get(f"/apis/kubeflow.org/v1/namespaces/{ns}/notebooks", headers=later)
            assert r.status_code == 403 and r.json()["reason"] == "Forbidden"
            # The first user registers it again: it is their data.
            r = await c.post("/api/workgroup/create", json={}, headers=first)
            assert r.status_code == 200 and r.json()["user"] == "dot.name@example.com"
            r = await c.delete(f"{PROFILES}/{ns}", headers=first)
            assert r.status_code == 200
    finally:
        await server.stop()


# ---- sign-out -------------------------------------------------------------------------------


async def test_sign_out_get_is_405(gateway: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        await browser_login(c, "user@example.com")
        r = await c.get("/oauth2/sign_out")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        assert r.json()["reason"] == "MethodNotAllowed" and "POST" in r.json()["message"]
        assert SESSION not in r.headers.get("set-cookie", "")
        r = await c.get("/oauth2/userinfo")  # the GET signed nobody out
        assert r.status_code == 200 and r.json()["user"] == "user@example.com"


async def websocket_greeting(gateway: RunningServer, notebook_cookie: str) -> str:
    """The tenant server's first message over the notebook WebSocket, on the notebook's own
    origin, as this notebook-origin cookie."""
    host = notebook_host(gateway, NS, "rec")
    async with ws_connect_host(
        gateway,
        host,
        f"/notebook/{NS}/rec/api/kernels/k/channels",
        {"cookie": f"{NOTEBOOK_SESSION}={notebook_cookie}", "origin": f"http://{host}"},
    ) as ws:
        return str(await asyncio.wait_for(ws.recv(), 5))


async def test_sign_out_revokes_copied_cookie(
    gateway: RunningServer, oidc: Any, tenant: Recorder
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        await browser_login(c, "user@example.com")
        first = c.cookies[SESSION]
        nb_first = await notebook_sign_in(gateway, first, NS, "rec")
        assert await websocket_greeting(gateway, nb_first) == "hello from tenant code"
        await asyncio.sleep(1.1)  # session_refresh_seconds=1 in the fixture
        r = await c.get("/oauth2/userinfo")
        assert r.status_code == 200 and r.json()["user"] == "user@example.com"
        csrf = r.json()["csrfToken"]
        refreshed = c.cookies[SESSION]
        assert refreshed != first  # a refreshed cookie: the same session, newly sealed
        nb_refreshed = await notebook_sign_in(gateway, refreshed, NS, "rec")
        # A cross-site page cannot sign the user out.
        r = await c.post("/oauth2/sign_out", headers={"origin": "https://evil.example"})
        assert r.status_code == 403 and "cross-site" in r.json()["message"]
        assert (await c.get("/oauth2/userinfo")).status_code == 200
        r = await c.post("/oauth2/sign_out", headers={"x-csrf-token": csrf})
        assert r.status_code == 303, r.text
        assert r.headers["location"].startswith(f"{oidc.issuer}/session/end")
        assert "id_token_hint" in r.headers["location"]
        assert f'{SESSION}=""' in r.headers["set-cookie"]
    # Every copy of the session, before and after its refresh, is dead.
    for copy, nb_copy in ((first, nb_first), (refreshed, nb_refreshed)):
        async with httpx.AsyncClient(
            base_url=gateway.url, timeout=15, cookies={SESSION: copy}
        ) as thief:
            r = await thief.get(API)
            assert r.status_code == 401 and r.json()["reason"] == "Unauthorized", r.text
            r = await thief.get("/oauth2/userinfo")
            assert r.status_code == 401 and r.json()["reason"] == "Unauthorized", r.text
            # No ticket for the notebook origin: a login instead.
            r = await thief.get(f"/notebook/{NS}/rec/lab")
            assert r.status_code == 302 and r.headers["location"].startswith("/oauth2/start")
            # The notebook origin's cookie is refused before the WebSocket handshake
            # completes (closed unaccepted: HTTP 403).
            with pytest.raises(InvalidStatus) as refused:
                await websocket_greeting(gateway, nb_copy)
            assert refused.value.response.status_code == 403
    # Another gateway replica on the same database learns of it at its next reload.
    gw = gateway.gw  # type: ignore[attr-defined]
    replica = SessionRevocations(gw.db, gw.settings.session_max_age_seconds)
    await replica.reload()
    sid = gw.auth.sessions.loads(first, gw.settings.session_max_age_seconds)["sid"]
    assert replica.is_revoked(sid)
    # Signing in again gives a new, working session.
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        await browser_login(c, "user@example.com")
        assert c.cookies[SESSION] not in (first, refreshed)
        r = await c.get("/oauth2/userinfo")
        assert r.status_code == 200 and r.json()["user"] == "user@example.com"


async def test_sign_out_json_for_the_dashboard(gateway: RunningServer, oidc: Any) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        await browser_login(c, "second@example.com")
        stolen = c.cookies[SESSION]
        csrf = (await c.get("/oauth2/userinfo")).json()["csrfToken"]
        r = await c.post(
            "/oauth2/sign_out", headers={"x-csrf-token": csrf, "accept": "application/json"}
        )
        assert r.status_code == 200, r.text
        assert json.loads(r.text)["location"].startswith(f"{oidc.issuer}/session/end")
    async with httpx.AsyncClient(
        base_url=gateway.url, timeout=15, cookies={SESSION: stolen}
    ) as thief:
        r = await thief.get("/oauth2/userinfo")
        assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
