"""Notebooks on their own origins, model servers sandboxed (issue 10 item 4).

Tenant HTML served on the gateway's origin could act as the dashboard. Each notebook now has
an origin of its own (``{name}.{namespace}.notebooks.localhost`` here: the fixtures leave the
public URL unset), entered by a ticket handshake from the main origin; a model server's
responses carry ``Content-Security-Policy: sandbox``. These tests use explicit Host headers
(httpx) and a pre-connected socket (WebSockets), so no resolver is involved.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from gateway.app import create_app
from gateway.authz import Principal
from gateway.notebook_origin import COOKIE_NAME, NotebookOrigins
from tests.conftest import free_port
from tests.gateway.conftest import (
    COOKIE_SECRET,
    RunningServer,
    ServedGateway,
    browser_login,
    gateway_settings,
    notebook_host,
    notebook_sign_in,
    notebook_ticket,
    set_cookie_value,
    ws_connect_host,
)

NS = "kubeflow-user-example-com"
OTHER_NS = "kubeflow-second-example-com"
SESSION = "shipyard_session"
API = f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def session_cookie(session: str) -> dict[str, str]:
    return {"cookie": f"{SESSION}={session}"}


@pytest.fixture
async def notebooks(gateway: RunningServer, upstream: RunningServer) -> Any:
    """Two notebooks in the user's namespace and one in another's, all on the echo server."""
    table = gateway.gw.route_table  # type: ignore[attr-defined]
    routes = [(NS, "nb"), (NS, "other"), (OTHER_NS, "nb")]
    for ns, name in routes:
        table.upsert("notebook", ns, name, [(upstream.url, 1)])
    table.upsert("inferenceservice", NS, "model", [(upstream.url, 1)])
    yield
    for ns, name in routes:
        table.remove("notebook", ns, name)
    table.remove("inferenceservice", NS, "model")


async def signed_in(gateway: RunningServer, user: str = "user@example.com") -> tuple[str, str]:
    """A fresh browser session: (session cookie, CSRF token)."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        await browser_login(c, user)
        return c.cookies[SESSION], (await c.get("/oauth2/userinfo")).json()["csrfToken"]


@pytest.fixture
async def session(gateway: RunningServer) -> str:
    """A fresh browser session of user@example.com: its session cookie."""
    return (await signed_in(gateway))[0]


async def on_host(
    gateway: RunningServer,
    host: str,
    path: str,
    cookie: str | None = None,
    method: str = "GET",
    json: Any = None,
    **headers: str,
) -> httpx.Response:
    """One request to the gateway with ``Host: host`` and, if given, the notebook cookie (and
    whatever other cookies follow it in the string: ``"<notebook cookie>; name=value"``)."""
    sent = {"host": host, **{k.replace("_", "-"): v for k, v in headers.items()}}
    if cookie is not None:
        sent["cookie"] = f"{COOKIE_NAME}={cookie}"
    async with httpx.AsyncClient(timeout=15) as c:
        return await c.request(method, gateway.url + path, json=json, headers=sent)


# ---- the handshake --------------------------------------------------------------------------


def notebook_ws(gateway: RunningServer, host: str, cookie: str) -> Any:
    """The notebook's WebSocket on its own ``host``, with its ``cookie`` and its own Origin."""
    headers = {"cookie": f"{COOKIE_NAME}={cookie}", "origin": f"http://{host}"}
    return ws_connect_host(gateway, host, f"/notebook/{NS}/nb/ws", headers)


async def assert_ws_refused(gateway: RunningServer, host: str, headers: dict[str, str]) -> None:
    """The notebook's WebSocket on ``host``, opened with ``headers``, is refused with 403."""
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect_host(gateway, host, f"/notebook/{NS}/nb/ws", headers) as ws:
            await ws.recv()
    assert refused.value.response.status_code == 403


async def test_notebook_cookie_get_on_main_origin_redirects_through_ticket(
    gateway: RunningServer, notebooks: None, session: str
) -> None:
    host = notebook_host(gateway, NS, "nb")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        r = await c.get(f"/notebook/{NS}/nb/lab?reset=1", headers=session_cookie(session))
    assert r.status_code == 302, r.text
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == f"http://{host}"
    assert location.path == "/_shipyard/notebook-login"
    query = parse_qs(location.query)
    assert query["next"] == [f"/notebook/{NS}/nb/lab?reset=1"] and query["ticket"]

    # The notebook origin redeems it: a host-only, HttpOnly, SameSite=Lax cookie, then next.
    r = await on_host(gateway, host, f"{location.path}?{location.query}")
    assert r.status_code == 302, r.text
    assert r.headers["location"] == f"/notebook/{NS}/nb/lab?reset=1"
    set_cookie = r.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie
    assert "domain=" not in set_cookie and "path=/" in set_cookie
    cookie = set_cookie_value(r, COOKIE_NAME)

    # With it, the notebook's pages are served there, and the upstream gets nothing of the
    # visitor's (neither the notebook cookie nor the session): only its own Jupyter token.
    r = await on_host(gateway, host, f"/notebook/{NS}/nb/lab", cookie)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == f"/notebook/{NS}/nb/lab"
    assert r.json()["identity"] is None and r.json()["authorization"].startswith("token ")
    assert "content-security-policy" not in r.headers  # JupyterLab needs its origin
    r = await on_host(
        gateway,
        host,
        f"/notebook/{NS}/nb/api/contents",
        f"{cookie}; {SESSION}={session}; _xsrf=x",
        "POST",
        json={},
        origin=f"http://{host}",
    )
    assert r.status_code == 200 and r.json()["method"] == "POST", r.text
    # The same cookie is nothing on another notebook's host.
    other = notebook_host(gateway, NS, "other")
    r = await on_host(gateway, other, f"/notebook/{NS}/other/lab", cookie)
    assert r.status_code == 302 and "/_shipyard" not in r.headers["location"]
    assert r.headers["location"] == f"http://127.0.0.1:{gateway.port}/notebook/{NS}/other/lab"
    r = await on_host(gateway, other, f"/notebook/{NS}/other/api/contents", cookie, "POST")
    assert r.status_code == 401, r.text


async def test_notebook_ticket_replayed_on_another_host_refused(
    gateway: RunningServer, notebooks: None, session: str
) -> None:
    login = await notebook_ticket(gateway, session, NS, "nb")
    for ns, name in ((NS, "other"), (OTHER_NS, "nb")):
        r = await on_host(gateway, notebook_host(gateway, ns, name), login)
        assert r.status_code == 401, r.text
        assert "another notebook" in r.json()["message"]
        assert "set-cookie" not in r.headers
    # Its own host takes it once; a second use (a replay) is refused.
    host = notebook_host(gateway, NS, "nb")
    assert (await on_host(gateway, host, login)).status_code == 302
    r = await on_host(gateway, host, login)
    assert r.status_code == 401 and "used already" in r.json()["message"], r.text


async def test_notebook_ticket_expired_or_forged_refused(
    gateway: RunningServer, notebooks: None, session: str
) -> None:
    gw = gateway.gw  # type: ignore[attr-defined]
    origins: NotebookOrigins = gw.notebook_origins
    sid = gw.auth.sessions.loads(session, 3600)["sid"]
    host = notebook_host(gateway, NS, "nb")
    hostname = host.rsplit(":", 1)[0]
    user = Principal("user@example.com", (), via="cookie")

    def login(ticket: str) -> str:
        return f"/_shipyard/notebook-login?ticket={quote(ticket, safe='')}&next=/notebook/{NS}/nb/"

    expired = origins.issue_ticket(hostname, sid, user, now=time.time() - 61)
    r = await on_host(gateway, host, login(expired))
    assert r.status_code == 401 and "expired" in r.json()["message"], r.text
    # A genuine ticket's body with another user in it: the MAC no longer matches.
    body, mac = origins.issue_ticket(hostname, sid, user).split(".")
    claims = json.loads(urlsafe_decode(body))
    claims["u"] = "admin@example.com"
    forged = urlsafe_encode(json.dumps(claims).encode()) + "." + mac
    # Signed with another secret (a gateway that is not this one).
    stranger = NotebookOrigins("notebooks.localhost", "another-secret-0123456789", "", 3600)
    foreign = stranger.issue_ticket(hostname, sid, user)
    for bad in (forged, foreign, "garbage", "", body):
        r = await on_host(gateway, host, login(bad))
        assert r.status_code == 401 and "not genuine" in r.json()["message"], (bad, r.text)
        assert "set-cookie" not in r.headers
    # The positive control: the same construction, signed by this gateway, works.
    assert (
        await on_host(gateway, host, login(origins.issue_ticket(hostname, sid, user)))
    ).status_code == 302


async def test_notebook_login_checks_access(gateway: RunningServer, notebooks: None) -> None:
    """A genuine ticket for someone without edit on the namespace sets no cookie."""
    session, _ = await signed_in(gateway, "second@example.com")
    gw = gateway.gw  # type: ignore[attr-defined]
    sid = gw.auth.sessions.loads(session, 3600)["sid"]
    host = notebook_host(gateway, NS, "nb")
    # The main origin refuses to hand one out at all ...
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        r = await c.get(f"/notebook/{NS}/nb/lab", headers=session_cookie(session))
    assert r.status_code == 403, r.text
    # ... and the notebook origin checks again.
    ticket = gw.notebook_origins.issue_ticket(
        host.rsplit(":", 1)[0], sid, Principal("second@example.com", (), via="cookie")
    )
    r = await on_host(gateway, host, f"/_shipyard/notebook-login?ticket={ticket}")
    assert r.status_code == 403 and r.json()["reason"] == "Forbidden", r.text
    assert "set-cookie" not in r.headers


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "http:/x", "x"]
)
async def test_notebook_login_refuses_open_redirect(
    gateway: RunningServer, notebooks: None, session: str, target: str
) -> None:
    login = await notebook_ticket(gateway, session, NS, "nb")
    login = login.split("&next=")[0] + "&next=" + quote(target, safe="")
    r = await on_host(gateway, notebook_host(gateway, NS, "nb"), login)
    assert r.status_code == 400 and "next" in r.json()["message"], r.text
    assert "location" not in r.headers and "set-cookie" not in r.headers


async def test_notebook_signed_out_session_ticket_and_cookie_refused(
    gateway: RunningServer, notebooks: None
) -> None:
    session, csrf = await signed_in(gateway)
    host = notebook_host(gateway, NS, "nb")
    cookie = await notebook_sign_in(gateway, session, NS, "nb")
    unused = await notebook_ticket(gateway, session, NS, "nb")
    r = await on_host(gateway, host, f"/notebook/{NS}/nb/api/contents", cookie)
    assert r.status_code == 200, r.text
    async with notebook_ws(gateway, host, cookie) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["identity"] is None
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        r = await c.post(
            "/oauth2/sign_out", headers={**session_cookie(session), "x-csrf-token": csrf}
        )
        assert r.status_code == 303, r.text
    # The notebook origin's cookie died with the session, and so did its unused ticket.
    r = await on_host(gateway, host, f"/notebook/{NS}/nb/api/contents", cookie)
    assert r.status_code == 302 and r.headers["location"].startswith("http://127.0.0.1:")
    r = await on_host(
        gateway, host, f"/notebook/{NS}/nb/api/contents", cookie, "POST", origin=f"http://{host}"
    )
    assert r.status_code == 401, r.text
    r = await on_host(gateway, host, unused)
    assert r.status_code == 401 and "signed out" in r.json()["message"], r.text
    await assert_ws_refused(
        gateway, host, {"cookie": f"{COOKIE_NAME}={cookie}", "origin": f"http://{host}"}
    )


# ---- what a notebook origin serves ----------------------------------------------------------


async def test_notebook_host_serves_only_its_notebook(
    gateway: RunningServer, notebooks: None, session: str, oidc: Any
) -> None:
    cookie = await notebook_sign_in(gateway, session, NS, "nb")
    host = notebook_host(gateway, NS, "nb")
    token = await oidc.id_token("user@example.com")
    for path in (
        API,
        "/",
        "/ui/app.js",
        "/oauth2/userinfo",
        "/oauth2/start",
        f"/notebook/{NS}/other/lab",
        f"/notebook/{OTHER_NS}/nb/lab",
        f"/serving/{NS}/model/v2/health/ready",
        f"/notebook/{NS}/nbx/lab",
    ):
        # Neither its own cookie, nor the session cookie, nor a bearer token opens them.
        r = await on_host(gateway, host, path, f"{cookie}; {SESSION}={session}", **bearer(token))
        assert r.status_code == 404, (path, r.status_code, r.text)
    # A bearer token is not a notebook origin's credential either.
    r = await on_host(
        gateway,
        host,
        f"/notebook/{NS}/nb/api/contents",
        method="POST",
        origin=f"http://{host}",
        **bearer(token),
    )
    assert r.status_code == 401, r.text


async def test_notebook_host_refuses_cross_origin_writes_and_websockets(
    gateway: RunningServer, notebooks: None, session: str
) -> None:
    """Every notebook host is same-site with every other: the Origin must be its own."""
    cookie = await notebook_sign_in(gateway, session, NS, "nb")
    host = notebook_host(gateway, NS, "nb")
    other = f"http://{notebook_host(gateway, NS, 'other')}"
    path = f"/notebook/{NS}/nb/api/contents"
    for origin in (other, gateway.url, None):
        extra = {"origin": origin} if origin else {}
        r = await on_host(gateway, host, path, cookie, "POST", **extra)
        assert r.status_code == 403 and "cross-origin" in r.json()["message"], r.text
        await assert_ws_refused(gateway, host, {"cookie": f"{COOKIE_NAME}={cookie}", **extra})
    r = await on_host(gateway, host, path, cookie, "POST", origin=f"http://{host}")
    assert r.status_code == 200, r.text
    async with notebook_ws(gateway, host, cookie) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["identity"] is None and hello["authorization"].startswith("token ")
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "echo:ping"


# ---- the main origin ------------------------------------------------------------------------


async def test_notebook_cookie_write_on_main_origin_is_403(
    gateway: RunningServer, notebooks: None
) -> None:
    session, csrf = await signed_in(gateway)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        for method in ("POST", "PUT", "DELETE"):
            r = await c.request(
                method,
                f"/notebook/{NS}/nb/api/contents/x",
                headers={**session_cookie(session), "x-csrf-token": csrf, "origin": gateway.url},
            )
            assert r.status_code == 403, r.text
            assert notebook_host(gateway, NS, "nb") in r.json()["message"], r.text
    # Nor a WebSocket: a browser session's notebook sockets belong on the notebook's origin.
    await assert_ws_refused(
        gateway,
        f"127.0.0.1:{gateway.port}",
        {"cookie": f"{SESSION}={session}", "origin": gateway.url},
    )


async def test_notebook_bearer_client_still_path_based(
    gateway: RunningServer, notebooks: None, oidc: Any
) -> None:
    token = await oidc.id_token("user@example.com")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        r = await c.get(f"/notebook/{NS}/nb/api/kernels", headers=bearer(token))
        assert r.status_code == 200 and r.json()["path"] == f"/notebook/{NS}/nb/api/kernels"
        assert r.json()["authorization"].startswith("token ")
        # An API client; were a browser to render the answer, it gets an opaque origin.
        assert r.headers["content-security-policy"] == "sandbox"
        r = await c.post(f"/notebook/{NS}/nb/api/kernels", headers=bearer(token), json={})
        assert r.status_code == 200 and r.json()["method"] == "POST"
    async with ws_connect_host(
        gateway, f"127.0.0.1:{gateway.port}", f"/notebook/{NS}/nb/ws", bearer(token)
    ) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["identity"] is None


async def test_userinfo_gives_dashboard_the_notebook_origin(
    gateway: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        await browser_login(c, "user@example.com")
        info = (await c.get("/oauth2/userinfo")).json()
    assert info["notebookUrl"] == (
        f"http://{{name}}.{{namespace}}.notebooks.localhost:{gateway.port}"
        "/notebook/{namespace}/{name}/"
    )


# ---- model servers --------------------------------------------------------------------------


async def test_serving_responses_carry_csp_sandbox(
    gateway: RunningServer, notebooks: None, oidc: Any
) -> None:
    token = await oidc.id_token("user@example.com")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        for method, path in (
            ("GET", f"/serving/{NS}/model/v2/health/ready"),
            ("POST", f"/serving/{NS}/model/v2/models/m/infer"),
            ("GET", f"/serving/{NS}/missing/v1/models/missing"),  # the gateway's own 503
            ("GET", f"/serving/{OTHER_NS}/model/v1/models/model"),  # and its 403
        ):
            r = await c.request(method, path, headers=bearer(token), json={})
            assert r.status_code in (200, 403, 503), r.text
            assert r.headers["content-security-policy"] == "sandbox", (path, r.headers)
            assert r.headers["x-content-type-options"] == "nosniff", (path, r.headers)


# ---- configuration --------------------------------------------------------------------------


def test_notebook_domain_defaults(gateway_state: Any) -> None:
    def domain(**over: str) -> str | None:
        settings = gateway_settings(gateway_state, "http://127.0.0.1:9", "sqlite://", **over)
        return settings.notebook_origin_domain

    assert domain() == "notebooks.localhost"
    assert domain(public_url="http://localhost:8080") == "notebooks.localhost"
    assert domain(public_url="http://127.0.0.1:8080/") == "notebooks.localhost"
    assert domain(public_url="https://shipyard.example.com") is None
    assert (
        domain(public_url="https://shipyard.example.com", notebook_domain="nb.example.net.")
        == "nb.example.net"
    )


async def test_notebook_without_domain_warns_and_stays_path_based(
    upstream: RunningServer,
    oidc: Any,
    oidc_settings: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = oidc_settings(public_url="https://shipyard.example.com")
    caplog.set_level(logging.WARNING, logger="gateway.gateway")
    server = ServedGateway(create_app(settings), free_port())
    await server.start()
    try:
        warning = " ".join(r.getMessage() for r in caplog.records if r.name == "gateway.gateway")
        assert "SHARE THE DASHBOARD'S ORIGIN" in warning
        assert "SHIPYARD_NOTEBOOK_DOMAIN" in warning and "wildcard DNS" in warning
        gw = server.server.config.app.state.gw  # type: ignore[union-attr]
        assert gw.notebook_origins is None
        await gw.store.ensure_profile(NS, "user@example.com")
        gw.route_table.upsert("notebook", NS, "nb", [(upstream.url, 1)])
        token = await oidc.id_token("user@example.com")
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            r = await c.get(f"/notebook/{NS}/nb/lab", headers=bearer(token))
            assert r.status_code == 200 and "content-security-policy" not in r.headers
            # No host is a notebook's: the name is just another Host header.
            r = await c.get(API, headers={"host": f"nb.{NS}.notebooks.localhost", **bearer(token)})
            assert r.status_code == 200 and r.json()["identity"]["user"] == "user@example.com"
    finally:
        await server.stop()


async def test_notebook_single_user_navigation_goes_to_notebook_origin(
    gateway_state: Any, upstream: RunningServer, gateway_db: str
) -> None:
    settings = gateway_settings(
        gateway_state, upstream.url, gateway_db, cookie_secret=COOKIE_SECRET
    )
    server = ServedGateway(create_app(settings), free_port())
    await server.start()
    try:
        gw = server.server.config.app.state.gw  # type: ignore[union-attr]
        gw.route_table.upsert("notebook", NS, "nb", [(upstream.url, 1)])
        host = f"nb.{NS}.notebooks.localhost:{server.port}"
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            # A browser's navigation leaves the dashboard's origin (no handshake needed).
            r = await c.get(f"/notebook/{NS}/nb/lab?x=1", headers={"sec-fetch-mode": "navigate"})
            assert r.status_code == 302
            assert r.headers["location"] == f"http://{host}/notebook/{NS}/nb/lab?x=1"
            # An API client is answered here, sandboxed.
            r = await c.get(f"/notebook/{NS}/nb/api/status")
            assert r.status_code == 200 and r.headers["content-security-policy"] == "sandbox"
            # The notebook origin serves it without a cookie, and nothing else.
            r = await c.get(f"/notebook/{NS}/nb/lab", headers={"host": host})
            assert r.status_code == 200 and r.json()["authorization"].startswith("token ")
            r = await c.get(API, headers={"host": host})
            assert r.status_code == 404
            r = await c.post(f"/notebook/{NS}/nb/api/contents", headers={"host": host})
            assert r.status_code == 403
            r = await c.post(
                f"/notebook/{NS}/nb/api/contents",
                headers={"host": host, "origin": f"http://{host}"},
            )
            assert r.status_code == 200
    finally:
        await server.stop()


def urlsafe_decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def urlsafe_encode(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
