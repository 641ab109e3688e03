"""Gateway test fixtures: a real OIDC provider (node-oidc-provider), a real upstream
service (uvicorn) that verifies identity assertions, and real gateway instances."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse

from gateway.__main__ import server_config
from gateway.app import create_app
from gateway.settings import Settings
from services.common.identity import ASSERTION_HEADER, AssertionVerifier, ensure_gateway_keys
from tests.conftest import ADMIN_USER, free_port, fresh_database, running_platform

OIDC_DIR = Path(__file__).resolve().parents[1] / "oidc"
CLIENT_SECRET = "shipyard-test-secret"
COOKIE_SECRET = "test-cookie-secret-0123456789abcdef"
PASSWORD = "password"


class OIDCServer:
    """node-oidc-provider running tests/oidc/provider.mjs; Dex-like issuer under /dex."""

    def __init__(self, redirect_uris: list[str]) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/dex"
        self.redirect_uris = redirect_uris
        self.proc: subprocess.Popen[bytes] | None = None
        self._tokens: dict[tuple[str, str], dict[str, Any]] = {}

    def start(self) -> None:
        node = shutil.which("node")
        if node is None or not (OIDC_DIR / "node_modules" / "oidc-provider").exists():
            pytest.fail("node and `npm ci --prefix tests/oidc` are required for gateway tests")
        env = dict(
            os.environ,
            OIDC_PORT=str(self.port),
            OIDC_REDIRECT_URIS=",".join(self.redirect_uris),
            OIDC_CLIENT_SECRET=CLIENT_SECRET,
        )
        self.proc = subprocess.Popen(
            [node, str(OIDC_DIR / "provider.mjs")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("OIDC provider did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def rotate(self) -> str:
        return str(httpx.post(f"http://127.0.0.1:{self.port}/admin/rotate").json()["kid"])

    async def tokens(
        self,
        user: str,
        client_id: str = "shipyard",
        fresh: bool = False,
        redirect_uri: str | None = None,
    ) -> dict[str, Any]:
        """Tokens for ``user`` by driving the real authorization-code + PKCE flow."""
        key = (user, client_id)
        if not fresh and key in self._tokens:
            return self._tokens[key]
        redirect_uri = redirect_uri or self.redirect_uris[0]
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        async with httpx.AsyncClient(timeout=10) as c:
            params = {
                "client_id": client_id,
                "response_type": "code",
                "scope": "openid email profile groups offline_access",
                "redirect_uri": redirect_uri,
                "state": "s",
                "nonce": "n",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
            r = await c.get(f"{self.issuer}/auth", params=params)
            location = await submit_login(c, r, user, PASSWORD, stop_at=redirect_uri)
            code = parse_qs(urlsplit(location).query)["code"][0]
            auth = (client_id, CLIENT_SECRET) if client_id == "shipyard" else None
            data = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            }
            if auth is None:
                data["client_id"] = client_id
            tr = await c.post(f"{self.issuer}/token", data=data, auth=auth)  # type: ignore[arg-type]
            tr.raise_for_status()
            tokens = tr.json()
        self._tokens[key] = tokens
        return tokens

    async def id_token(self, user: str, fresh: bool = False) -> str:
        return str((await self.tokens(user, fresh=fresh))["id_token"])


def id_claims(issuer: str, **over: object) -> dict[str, object]:
    """An ID token's claims from ``issuer`` for the audience ``shipyard``, valid for five
    minutes; ``over`` replaces claims (``None`` leaves one out)."""
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": "shipyard",
        "sub": "x",
        "email": "user@example.com",
        "groups": [],
        "iat": now,
        "exp": now + 300,
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


async def submit_login(
    c: httpx.AsyncClient, r: httpx.Response, user: str, password: str, stop_at: str
) -> str:
    """Follow redirects through the provider's login form; return the redirect to ``stop_at``."""
    for _ in range(12):
        if r.status_code in (302, 303):
            location = urljoin(str(r.url), r.headers["location"])
            if location.startswith(stop_at):
                return location
            r = await c.get(location)
            continue
        if r.status_code == 200 and 'name="password"' in r.text:
            r = await c.post(str(r.url), data={"login": user, "password": password})
            continue
        raise AssertionError(f"unexpected provider response {r.status_code}: {r.text[:300]}")
    raise AssertionError("too many redirects in login flow")


def upstream_app(public_pem: bytes) -> FastAPI:
    """A tiny real service: verifies the gateway's assertion and echoes what it saw."""
    verifier = AssertionVerifier(public_pem)
    app = FastAPI()

    def identity(headers: Any) -> dict[str, Any] | None:
        token = headers.get(ASSERTION_HEADER)
        if not token:
            return None
        ident = verifier.verify(token)
        return {
            "user": ident.user,
            "groups": list(ident.groups),
            "namespace": ident.namespace,
            "role": ident.role,
            "cluster_admin": ident.cluster_admin,
        }

    @app.get("/readyz")
    async def readyz() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/{prefix:path}/stream/{n}")
    async def stream(prefix: str, n: int) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(n):
                yield json.dumps({"type": "ADDED", "object": {"i": i}}).encode() + b"\n"
                await asyncio.sleep(0.2)

        return StreamingResponse(gen(), media_type="application/json")

    @app.websocket("/notebook/{ns}/{name}/ws")
    async def ws_echo(ws: WebSocket, ns: str, name: str) -> None:
        await ws.accept()
        who = identity(ws.headers)
        await ws.send_json({"identity": who, "authorization": ws.headers.get("authorization")})
        while True:
            msg = await ws.receive_text()
            if msg == "bye":
                await ws.close()
                return
            await ws.send_text(f"echo:{msg}")

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(request: Request, path: str) -> JSONResponse:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return JSONResponse(
            {
                "identity": identity(request.headers),
                "path": request.url.path,
                "method": request.method,
                "body_bytes": size,
                "authorization": request.headers.get("authorization"),
                "kubeflow_userid": request.headers.get("kubeflow-userid"),
                "assertions": len(request.headers.getlist(ASSERTION_HEADER)),
            }
        )

    return app


class RunningServer:
    def __init__(self, app: Any, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        deadline = time.monotonic() + 15
        while not self.server.started:
            if self.task.done() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task:
            await asyncio.wait_for(self.task, timeout=10)


class ServedGateway(RunningServer):
    """A gateway app on the listener configuration ``python -m gateway`` uses (its HTTP
    protocol, ``GatewayHttpProtocol``, with the inference lane): every gateway the tests start
    is served this way, so what they check is what runs."""

    def __init__(self, app: Any, port: int, log_level: str = "warning") -> None:
        super().__init__(app, port)
        config = server_config(app, "127.0.0.1", port, log_level)
        config.lifespan = "on"
        self.server = uvicorn.Server(config)


@pytest.fixture(scope="session")
def gateway_db() -> Iterator[str]:
    """The gateway tests' own database: the platform's gateway keeps its profiles elsewhere."""
    from tests.conftest import fresh_database

    with fresh_database("shipyard_test_gw") as url:
        yield url


@pytest.fixture(scope="session")
def gateway_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("gateway-state")
    ensure_gateway_keys(state)
    return state


@pytest.fixture(scope="session")
def gateway_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def oidc(gateway_port: int) -> Iterator[OIDCServer]:
    server = OIDCServer([f"http://127.0.0.1:{gateway_port}/oauth2/callback"])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def other_oidc() -> Iterator[OIDCServer]:
    """A second, unrelated provider: its valid tokens must be refused."""
    server = OIDCServer(["http://127.0.0.1:9/oauth2/callback"])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def upstream(gateway_state: Path) -> AsyncIterator[RunningServer]:
    server = RunningServer(
        upstream_app((gateway_state / "keys" / "gateway.pub").read_bytes()), free_port()
    )
    await server.start()
    yield server
    await server.stop()


def gateway_settings(state: Path, upstream_url: str, db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        state_dir=state,
        database_url=db_url,
        notebook_url=upstream_url,
        automl_url=upstream_url,
        pipeline_url=upstream_url,
        serving_url=upstream_url,
        cookie_secret=COOKIE_SECRET,
        oidc_client_secret=CLIENT_SECRET,
        cluster_admins="admin@example.com",
        oidc_jwks_min_refetch_seconds=0.5,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
        route_events=False,
    )
    values.update(overrides)
    return Settings(**values)


def trusted_header_settings(
    state: Path, upstream_url: str, db_url: str, **overrides: Any
) -> Settings:
    """A gateway in trusted-header mode beside the local runtime (allowed, for the test),
    trusting a proxy on loopback unless ``trusted_proxies`` says otherwise."""
    values: dict[str, Any] = {"trusted_proxies": "127.0.0.1", **overrides}
    return gateway_settings(
        state,
        upstream_url,
        db_url,
        auth_mode="trusted-header",
        trusted_header_allow_local_runtime=True,
        **values,
    )


@pytest.fixture(scope="session")
def oidc_settings(
    gateway_state: Path, oidc: OIDCServer, upstream: RunningServer, gateway_db: str
) -> Callable[..., Settings]:
    """Settings of a gateway in OIDC mode (``oidc`` its provider) on Postgres, every service
    URL pointing at ``upstream``; keyword arguments override any setting."""
    return functools.partial(
        gateway_settings,
        gateway_state,
        upstream.url,
        gateway_db,
        auth_mode="oidc",
        oidc_issuer=oidc.issuer,
    )


@pytest.fixture(scope="session")
async def gateway(
    gateway_port: int, oidc_settings: Callable[..., Settings]
) -> AsyncIterator[RunningServer]:
    """The gateway in OIDC mode on Postgres, every service URL pointing at ``upstream``."""
    settings = oidc_settings(
        oidc_audiences="shipyard,shipyard-cli",
        session_refresh_seconds=1.0,
    )
    server = ServedGateway(create_app(settings), gateway_port)
    await server.start()
    gw = server.server.config.app.state.gw  # type: ignore[union-attr]
    await gw.store.ensure_profile("kubeflow-user-example-com", "user@example.com")
    await gw.store.ensure_profile("kubeflow-second-example-com", "second@example.com")
    server.gw = gw  # type: ignore[attr-defined]
    yield server
    await server.stop()


@pytest.fixture
async def client(gateway: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        yield c


async def browser_login(c: httpx.AsyncClient, user: str, rd: str = "/") -> httpx.Response:
    """Log in through the gateway and the provider's form; return the final gateway redirect."""
    r = await c.get("/oauth2/start", params={"rd": rd})
    assert r.status_code == 302
    callback = str(c.base_url).rstrip("/") + "/oauth2/callback"
    location = await submit_login(c, r, user, PASSWORD, stop_at=callback)
    return await c.get(location)


# ---- notebooks on their own origins (gateway.notebook_origin) ------------------------------


def notebook_host(gateway: RunningServer, ns: str, name: str) -> str:
    """The Host header of a notebook's own origin (the fixtures leave the public URL unset,
    so the domain is notebooks.localhost, on the gateway's port)."""
    return f"{name}.{ns}.notebooks.localhost:{gateway.port}"


def set_cookie_value(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key.strip() == name:
            return rest.split(";", 1)[0]
    raise AssertionError(f"no {name} cookie set: {response.headers.get_list('set-cookie')}")


async def notebook_ticket(gateway: RunningServer, session: str, ns: str, name: str) -> str:
    """The notebook-login URL (path and query) the main origin sends this session to."""
    async with httpx.AsyncClient(timeout=15) as c:
        r = await c.get(
            f"{gateway.url}/notebook/{ns}/{name}/lab",
            headers={"cookie": f"shipyard_session={session}"},
        )
    assert r.status_code == 302, r.text
    location = urlsplit(r.headers["location"])
    assert location.netloc == notebook_host(gateway, ns, name), location
    return f"{location.path}?{location.query}"


async def notebook_sign_in(gateway: RunningServer, session: str, ns: str, name: str) -> str:
    """The notebook origin's cookie for this session, by the handshake a browser makes."""
    login = await notebook_ticket(gateway, session, ns, name)
    async with httpx.AsyncClient(timeout=15) as c:
        r = await c.get(gateway.url + login, headers={"host": notebook_host(gateway, ns, name)})
    assert r.status_code == 302, r.text
    return set_cookie_value(r, "shipyard_notebook_session")


def ws_connect_host(gateway: RunningServer, host: str, path: str, headers: dict[str, str]) -> Any:
    """A WebSocket to the gateway as if to ``host`` (no resolver needed for *.localhost)."""
    import socket

    from websockets.asyncio.client import connect

    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    return connect(f"ws://{host}{path}", sock=sock, additional_headers=headers, open_timeout=5)


@contextlib.contextmanager
def provider_for_platform() -> Iterator[OIDCServer]:
    """An OIDC provider for a platform of a test module's own; its logins stop at the
    redirect (nothing listens on the callback), tokens come from ``id_token``."""
    server = OIDCServer(["http://127.0.0.1:9/oauth2/callback"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def oidc_platform(
    state_dir: Path,
    database: str,
    provider: OIDCServer,
    *,
    nats_url: str,
    s3: Any,
    env: dict[str, str] | None = None,
) -> Iterator[Any]:
    """A whole platform in OIDC mode (``provider`` its issuer, ADMIN_USER a cluster admin) on
    a fresh database ``database``, with ``env`` added to its environment."""
    settings = {
        "SHIPYARD_OIDC_ISSUER": provider.issuer,
        "SHIPYARD_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "SHIPYARD_COOKIE_SECRET": COOKIE_SECRET,
        "SHIPYARD_CLUSTER_ADMINS": ADMIN_USER,
        **(env or {}),
    }
    with fresh_database(database) as database_url:
        with running_platform(
            state_dir,
            database_url=database_url,
            nats_url=nats_url,
            s3=s3,
            auth_mode="oidc",
            env=settings,
        ) as platform:
            yield platform
