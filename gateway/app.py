"""The gateway application: authenticate, authorize, assert identity, proxy.

``create_app(settings)`` builds the FastAPI app on a ``Gateway`` (``gateway.gateway``, the
composition root). Requests for a service's paths never reach FastAPI: ``ProxyFastPath``
(``gateway.fastpath``) in front resolves the route table, authorizes the namespace, signs an
identity assertion and streams the request to the owning service. Gateway-owned APIs
(profiles, KFAM, workgroup, oauth2, service-account tokens) are routers here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from . import dashboard, discovery, kfam, login, openapi, profiles_api, workgroup
from .auth import AuthError
from .errors import GatewayError
from .fastpath import PROXY_METHODS, ProxyFastPath
from .gateway import Gateway, unauthenticated
from .inference_lane import InferenceLane
from .sessions import same_origin
from .settings import Settings

log = logging.getLogger(__name__)


class GatewayApp(FastAPI):
    """The gateway's FastAPI app, with ``ProxyFastPath`` in front of all of FastAPI.

    In front rather than ``add_middleware``: FastAPI's ``__call__`` (telemetry checks) and its
    middlewares (server errors, telemetry, body limit) each cost time on every request and
    wrap every ``send`` of a streamed response; the proxy handles its own errors.
    """

    fast_path: ProxyFastPath | None = None
    #: Read by the gateway's HTTP protocol (gateway/inference_lane.py), ahead of ASGI.
    inference_lane: InferenceLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None:
            await self.fast_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def serve_routes(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI itself: the gateway's own endpoints and everything not proxied."""
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    gw = Gateway(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = GatewayApp(
        title="shipyard gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.gw = gw
    app.fast_path = ProxyFastPath(app.serve_routes, gw)
    app.inference_lane = InferenceLane(gw, app.fast_path)

    @app.exception_handler(GatewayError)
    async def on_gateway_error(request: Request, exc: GatewayError) -> Response:
        if exc.code == 401:
            return unauthenticated(request, exc)
        # Status-shaped everywhere: API clients parse it, and it is readable JSON elsewhere.
        return exc.response()

    @app.get("/healthz")
    async def read_health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def read_ready() -> Response:
        async def probe(name: str, base: str) -> tuple[str, dict[str, Any]]:
            try:
                resp = await gw.http.get(f"{base}/readyz", timeout=settings.readiness_timeout)
                return name, {"ready": resp.status_code == 200, "code": resp.status_code}
            except httpx.HTTPError as exc:
                return name, {"ready": False, "error": exc.__class__.__name__}

        results = dict(
            await asyncio.gather(*(probe(n, u) for n, u in settings.service_urls.items()))
        )
        results["gateway"] = {"ready": await gw.db.ping()}
        ok = all(r["ready"] for r in results.values())
        return JSONResponse({"ready": ok, "services": results}, status_code=200 if ok else 503)

    @app.post("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token")
    async def create_serviceaccount_token(ns: str, name: str, request: Request) -> Response:
        """Kubernetes TokenRequest shape: a namespace-scoped machine token."""
        principal = await gw.require_principal(request)
        gw.check_csrf(request, principal)
        gw.authz.authorize(principal, ns, "edit", "POST", request.url.path)
        token = gw.sa_tokens.issue(ns, name)
        exp = datetime.fromtimestamp(time.time() + settings.sa_token_ttl_seconds, UTC)
        return JSONResponse(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "metadata": {"name": name, "namespace": ns},
                "status": {
                    "token": token,
                    "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            },
            status_code=201,
        )

    for module in (login, profiles_api, kfam, workgroup, dashboard, discovery, openapi):
        app.include_router(module.router)

    @app.websocket("/notebook/{ns}/{name}/{rest:path}")
    async def proxy_notebook_websocket(ws: WebSocket, ns: str, name: str, rest: str) -> None:
        try:
            principal = await gw.auth.authenticate(ws)
        except AuthError:
            principal = None
        if principal is None:
            await ws.close(code=4401)
            return
        if principal.via == "cookie":
            if gw.notebook_origins is not None:
                # A browser session's notebook WebSockets belong on the notebook's origin.
                await ws.close(code=4403)
                return
            expected = str(ws.base_url).rstrip("/").replace("ws", "http", 1)
            if not same_origin(
                ws.headers.get("origin"), settings.public_url.rstrip("/") or expected
            ):
                await ws.close(code=4403)
                return
        await gw.forward_notebook_websocket(ws, principal, ns, name)

    @app.api_route("/{path:path}", methods=sorted(PROXY_METHODS))
    async def read_unrouted(request: Request, path: str) -> Response:
        """Paths no router and no service owns (service paths never get here)."""
        raise GatewayError(404, f"no route for {request.url.path}", "NotFound")

    return app
