"""The gateway application: authenticate, authorize, assert identity, proxy.

``create_app(settings)`` builds the FastAPI app. Gateway-owned APIs (profiles, KFAM,
workgroup, oauth2, service-account tokens) are routers; everything else falls through to
``proxy_request``, which resolves the route table, authorizes the namespace, signs an
identity assertion and streams the request to the owning service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.kube_tokens import KubeAPI, KubeTokenError, KubeTokenReview
from gateway.workload_runs import WorkloadRuns
from services.common import dataplane
from services.common.db import Database
from services.common.events.bus import EventBus
from services.common.identity import AssertionSigner, Identity
from services.common.serviceaccounts import ServiceAccountTokens
from services.common.settings import SINGLE_USER, SINGLE_USER_NAMESPACE

from . import dashboard, kfam, login, profiles_api, routes, workgroup
from .activation import Activator
from .activity import ActivityReporter
from .auth import Authenticator, AuthError
from .authz import READ_METHODS, Authorizer, Principal, needed_role
from .errors import GatewayError
from .notebook_host import NotebookOriginApp
from .notebook_origin import COOKIE_NAME as NOTEBOOK_COOKIE
from .notebook_origin import SANDBOX_HEADERS, NotebookOrigins
from .oidc import OIDCProvider
from .profiles import ProfileStore
from .proxy import data_plane_headers, forward_headers, forward_http, forward_websocket, read_body
from .ratelimit import RateLimiter
from .revocations import SessionRevocations
from .routefeed import RouteEventFeed
from .routes import RouteFeeder, RouteTable
from .sessions import same_origin
from .settings import Settings
from .upstream import UpstreamPool

log = logging.getLogger(__name__)
JSON_BODY_LIMIT = 1024 * 1024


def is_api_path(path: str) -> bool:
    return path.startswith(("/api/", "/apis/", "/kfam/", "/oauth2/userinfo", "/internal/"))


def kube_token_review(settings: Settings) -> KubeTokenReview | None:
    """The reviewer of pods' projected tokens, with the Kubernetes runtime only."""
    if settings.runtime.strip().lower() != "kubernetes":
        return None
    try:
        api = (
            KubeAPI(
                settings.kube_api_url,
                Path(settings.kube_api_token_file),
                Path(settings.kube_api_ca_file) if settings.kube_api_ca_file else None,
            )
            if settings.kube_api_url
            else KubeAPI.in_cluster()
        )
    except KubeTokenError as exc:
        log.error("workload tokens will be refused: %s", exc)
        return None
    return KubeTokenReview(api, settings.kube_token_audience, settings.kube_token_issuer)


class Gateway:
    """Everything a request handler needs: settings, store, auth, signer, upstream client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url(), "gateway")
        self.store = ProfileStore(self.db)
        self.authz = Authorizer(self.store, settings.admins)
        private_pem = settings.private_key_pem()
        self.signer = AssertionSigner(private_pem)
        self.sa_tokens = ServiceAccountTokens(
            settings.serviceaccount_key_pem(), settings.sa_token_ttl_seconds
        )
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.upstream_read_timeout, connect=settings.upstream_connect_timeout
            ),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
            follow_redirects=False,
        )
        self.upstream = UpstreamPool(
            settings.upstream_connect_timeout, settings.upstream_read_timeout
        )
        self.oidc: OIDCProvider | None = None
        if settings.oidc_issuer and settings.auth_mode != "single-user":
            self.oidc = OIDCProvider(
                settings.oidc_issuer,
                settings.audiences,
                user_claim=settings.oidc_user_claim,
                groups_claim=settings.oidc_groups_claim,
                leeway=settings.oidc_leeway_seconds,
                min_refetch_seconds=settings.oidc_jwks_min_refetch_seconds,
            )
        self.revocations = SessionRevocations(self.db, settings.session_max_age_seconds)
        self.runs = WorkloadRuns(self.http, settings.service_urls, self.signer.sign)
        self.kube_tokens = kube_token_review(settings)
        self.auth = Authenticator(
            settings,
            self.oidc,
            self.sa_tokens,
            self.http,
            self.revocations,
            self.runs,
            kube_tokens=self.kube_tokens,
        )
        #: Notebooks' own origins (None: served path-based on the main origin, see start).
        domain = settings.notebook_origin_domain
        self.notebook_origins = (
            NotebookOrigins(
                domain,
                settings.cookie_secret,
                settings.public_url,
                settings.session_max_age_seconds,
            )
            if domain
            else None
        )
        #: The gateway's cookies, which no data-plane upstream receives.
        self.gateway_cookies = frozenset(
            n.lower() for n in (settings.cookie_name, login.STATE_COOKIE, NOTEBOOK_COOKIE)
        )
        # The key Jupyter servers' tokens derive from (SHIPYARD_DATAPLANE_KEY_FILE, shared
        # with the notebook service, which starts each server with its token).
        self._dataplane_key = settings.dataplane_key()
        self.limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.route_table = RouteTable()
        self.feeder = RouteFeeder(self.route_table)
        self.route_feed = RouteEventFeed(
            EventBus(settings.nats_url, name="shipyard-gateway"), self.feeder, self.warm_routes
        )
        self.activity = ActivityReporter(self.route_feed.bus, settings.activity_report_seconds)
        self.activator = Activator(
            self.route_table, self.activity, settings.activation_timeout_seconds
        )
        self._assertions: dict[tuple[object, ...], tuple[float, str]] = {}

    async def start(self) -> None:
        await self.store.start()
        await self.revocations.start()
        if self.settings.auth_mode == "trusted-header" and not self.settings.trusted_proxies:
            log.warning(
                "trusted-header mode with no SHIPYARD_TRUSTED_PROXIES: every kubeflow-userid "
                "header is ignored; only bearer tokens authenticate"
            )
        if self.settings.auth_mode == "single-user":
            log.warning("=" * 72)
            log.warning(
                "SINGLE-USER MODE IS ON: every request acts as %s (admin of %s). "
                "No authentication. Do not expose this gateway.",
                SINGLE_USER,
                SINGLE_USER_NAMESPACE,
            )
            log.warning("=" * 72)
            await self.store.ensure_profile(SINGLE_USER_NAMESPACE, SINGLE_USER)
        if self.notebook_origins is None:
            log.warning("=" * 72)
            log.warning(
                "NOTEBOOKS SHARE THE DASHBOARD'S ORIGIN: SHIPYARD_NOTEBOOK_DOMAIN is not set and "
                "SHIPYARD_PUBLIC_URL (%s) is not on this machine. A notebook's HTML (any "
                "tenant's output) then runs with the dashboard's origin in a visitor's browser "
                "and can read the platform's API as that visitor. Point a wildcard DNS record "
                "*.<domain> at the gateway and set SHIPYARD_NOTEBOOK_DOMAIN=<domain>: each "
                "notebook is then served at <name>.<namespace>.<domain> (docs/security.md).",
                self.settings.public_url,
            )
            log.warning("=" * 72)
        else:
            log.info("notebooks are served on *.%s", self.notebook_origins.domain)
        await self.warm_routes()
        await self.route_feed.start()
        await self.activity.start()

    async def stop(self) -> None:
        await self.activator.close()
        await self.activity.stop()
        await self.route_feed.stop()
        await self.revocations.stop()
        await self.store.stop()
        await self.http.aclose()
        await self.upstream.aclose()
        if self.kube_tokens is not None:
            await self.kube_tokens.close()
        if self.oidc is not None:
            await self.oidc.aclose()
        await self.db.dispose()

    async def warm_routes(self) -> None:
        """Fill the dynamic route table from the services' list endpoints (best effort)."""
        admin = self.signer.sign(Identity(user="system:gateway", role="admin", cluster_admin=True))
        sources = (
            ("notebook", "notebook", "/apis/kubeflow.org/v1/notebooks"),
            ("inferenceservice", "serving", "/apis/serving.kserve.io/v1beta1/inferenceservices"),
        )
        for kind, service, path in sources:
            url = self.settings.service_urls[service] + path
            try:
                resp = await self.http.get(url, headers={"x-shipyard-identity": admin}, timeout=2.0)
                if resp.status_code == 200:
                    for item in (resp.json().get("items") or [])[:10000]:
                        self.feeder.apply(kind, item)
            except (httpx.HTTPError, ValueError):
                log.info("route warm-start: %s not reachable yet", service)

    # ---- request helpers ------------------------------------------------------------------

    def data_plane_authorization(self, kind: str, namespace: str, name: str) -> str | None:
        """The gateway's own ``Authorization`` for a data-plane upstream: a Jupyter server's
        token (the notebook service starts the server with the same one); none for models."""
        if kind != "notebook":
            return None
        return "token " + dataplane.notebook_token(self._dataplane_key, namespace, name)

    def upstream_headers(
        self,
        headers: list[tuple[bytes, bytes]],
        identity: Identity,
        match: routes.Match,
        client_host: str | None,
    ) -> list[tuple[bytes, bytes]]:
        """What goes upstream: a service gets the signed assertion; tenant code (a data
        plane) gets none of the visitor's credentials, only the gateway's own."""
        if not match.data_plane:
            return forward_headers(
                headers,
                self.assertion_for(identity),
                strip_authorization=False,
                client_host=client_host,
            )
        assert match.route.dynamic_kind and match.namespace and match.name
        return data_plane_headers(
            headers,
            gateway_cookies=self.gateway_cookies,
            authorization=self.data_plane_authorization(
                match.route.dynamic_kind, match.namespace, match.name
            ),
            client_host=client_host,
        )

    async def forward_notebook_websocket(
        self, ws: WebSocket, principal: Principal, ns: str, name: str
    ) -> None:
        """Authorize ``principal`` (edit on ``ns``) and pump ``ws`` to the notebook's server;
        the caller has authenticated it and checked its Origin."""
        try:
            identity = self.authz.authorize(principal, ns, "edit", "GET", ws.url.path)
        except GatewayError:
            await ws.close(code=4403)
            return
        base = self.route_table.pick("notebook", ns, name)
        if base is None:
            await ws.close(code=4404)
            return
        url = base + ws.url.path + (f"?{ws.url.query}" if ws.url.query else "")
        match = routes.resolve(ws.url.path)
        assert match is not None and match.data_plane
        headers = [
            (k.decode(), v.decode())
            for k, v in self.upstream_headers(
                [(k, v) for k, v in ws.headers.raw if not k.lower().startswith(b"sec-websocket")],
                identity,
                match,
                ws.client.host if ws.client else None,
            )
        ]
        await forward_websocket(ws, url, headers)

    async def require_principal(self, request: Request) -> Principal:
        try:
            principal = await self.auth.authenticate(request)
        except AuthError as exc:
            raise GatewayError(401, str(exc), "Unauthorized") from None
        if principal is None:
            raise GatewayError(401, "authentication required", "Unauthorized")
        return principal

    def check_csrf(self, request: Request, principal: Principal) -> None:
        """Cookie sessions: unsafe methods need a same-origin Origin/Referer or the CSRF token."""
        if principal.via != "cookie" or request.method in READ_METHODS:
            return
        session = getattr(request.state, "session", {}) or {}
        token = request.headers.get("x-csrf-token")
        if token and token == session.get("csrf"):
            return
        expected = (
            self.settings.public_url.rstrip("/")
            if self.settings.public_url
            else str(request.base_url).rstrip("/")
        )
        origin = request.headers.get("origin") or request.headers.get("referer")
        if same_origin(origin, expected):
            return
        raise GatewayError(
            403,
            "cross-site request refused (Origin/Referer or X-CSRF-Token "
            "required for cookie sessions)",
            "Forbidden",
            {"user": principal.user, "verb": request.method.lower()},
        )

    def check_rate(self, principal: Principal) -> None:
        wait = self.limiter.check(principal.user)
        if wait > 0:
            raise GatewayError(
                429,
                f'rate limit exceeded for "{principal.user}"',
                "TooManyRequests",
                headers={"Retry-After": RateLimiter.retry_after(wait)},
            )

    def assertion_for(self, identity: Identity) -> str:
        """A signed assertion, reused for a third of its lifetime (signing is per identity)."""
        now = time.time()
        key = (
            identity.user,
            identity.groups,
            identity.namespace,
            identity.role,
            identity.cluster_admin,
            tuple(sorted(identity.grants.items())),
        )
        cached = self._assertions.get(key)
        if cached and now - cached[0] < self.signer.ttl_seconds / 3:
            return cached[1]
        token = self.signer.sign(identity, now=now)
        if len(self._assertions) > 10000:
            self._assertions.clear()
        self._assertions[key] = (now, token)
        return token

    async def read_json(self, request: Request, allow_empty: bool = False) -> dict[str, Any]:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > JSON_BODY_LIMIT:
                raise GatewayError(413, "request body too large")
        if not raw and allow_empty:
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            raise GatewayError(400, "request body is not valid JSON", "BadRequest") from None
        if not isinstance(value, dict):
            raise GatewayError(400, "request body must be a JSON object", "BadRequest")
        return value


def unauthenticated(request: Request, exc: GatewayError) -> Response:
    if is_api_path(request.url.path) or request.headers.get("authorization"):
        return exc.response()
    rd = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/oauth2/start?rd={quote(rd, safe='')}", 302)


PROXY_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ProxyFastPath:
    """Proxied requests as raw ASGI, ahead of FastAPI routing.

    Every request to a service path (``routes.resolve``) is authenticated, authorized and
    streamed upstream here without FastAPI's routing, dependency and response layers, which
    cost more CPU than the proxying itself. Gateway-owned paths, unknown paths, other methods
    and WebSockets go on to the FastAPI app underneath.
    """

    def __init__(self, app: ASGIApp, gw: Gateway) -> None:
        self.app = app
        self.gw = gw
        self.notebook_hosts = (
            NotebookOriginApp(gw, self, gw.notebook_origins) if gw.notebook_origins else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.notebook_hosts is not None and scope["type"] in ("http", "websocket"):
            # A notebook's own origin serves that notebook and nothing else.
            if await self.notebook_hosts.serve(scope, receive, send):
                return
        if scope["type"] != "http" or scope["method"] not in PROXY_METHODS:
            await self.app(scope, receive, send)
            return
        match = routes.resolve(scope["path"])
        if match is None or match.target == "gateway":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            await self.proxy(request, match, scope, receive, send)
        except GatewayError as exc:
            response = unauthenticated(request, exc) if exc.code == 401 else exc.response()
            if match.data_plane:
                response.raw_headers.extend(SANDBOX_HEADERS)
            await response(scope, receive, send)

    async def proxy(
        self,
        request: Request,
        match: routes.Match,
        scope: Scope,
        receive: Receive,
        send: Send,
        principal: Principal | None = None,
    ) -> None:
        """Authenticate, authorize and stream one request upstream.

        ``principal`` is given by the notebook origin (``gateway.notebook_host``), which has
        authenticated the request and checked its origin already.
        """
        gw, settings = self.gw, self.gw.settings
        path: str = scope["path"]
        method: str = scope["method"]
        if "/." in path and any(seg in (".", "..") for seg in path.split("/")):
            # Routing and authorization read the path as written; a dot segment could make
            # the upstream (or anything normalizing in between) see another namespace.
            raise GatewayError(400, "path must not contain . or .. segments", "BadRequest")
        on_main_origin = principal is None
        if principal is None:
            principal = await gw.require_principal(request)
            isolated_notebook = (
                match.route.dynamic_kind == "notebook" and gw.notebook_origins is not None
            )
            if isolated_notebook and principal.via == "cookie" and method not in ("GET", "HEAD"):
                # Before the CSRF check: whatever the Origin, a browser's writes to a notebook
                # belong on the notebook's own origin.
                raise self.notebook_elsewhere(request, match)
            gw.check_csrf(request, principal)
        if not match.data_plane:
            # The per-user limit guards the control-plane APIs. Model inference and a
            # notebook's own traffic (a JupyterLab page load is hundreds of requests) are
            # data planes, bounded by their servers, as in KServe and Kubeflow.
            gw.check_rate(principal)
        namespace = match.namespace
        body: bytes | None = None
        by_object = False
        if namespace is None and path.startswith("/apis/v2beta1/"):
            namespace = request.query_params.get("namespace") or None
            if namespace is None and method in ("POST", "PUT", "PATCH"):
                body = await read_body(receive, settings.max_body_bytes)
                namespace = _namespace_in_body(body)
            by_object = namespace is None
            namespace = namespace or gw.authz.default_namespace(principal)
        if by_object:
            identity = gw.authz.authorize_by_object(principal, namespace)
        elif match.route.any_user and method in ("GET", "HEAD"):
            identity = Identity(user=principal.user, groups=principal.groups, role="view")
        else:
            identity = gw.authz.authorize(
                principal, namespace, needed_role(method, match.data_plane), method, path
            )
        if on_main_origin and match.route.dynamic_kind == "notebook" and gw.notebook_origins:
            moved = self.to_notebook_origin(request, match, principal)
            if moved is not None:
                await moved(scope, receive, send)
                return
        served: tuple[str, str] | None = None  # the InferenceService whose traffic is counted
        if match.data_plane:
            assert match.route.dynamic_kind and match.namespace and match.name
            base = gw.route_table.pick(match.route.dynamic_kind, match.namespace, match.name)
            if match.route.dynamic_kind == "inferenceservice":
                served = (match.namespace, match.name)
                if base is None:  # scaled to zero? held until it serves again
                    base = await gw.activator.endpoint(match.namespace, match.name)
            elif base is None:  # a new server's route can trail its Ready status briefly
                base = await gw.activator.settle(
                    match.route.dynamic_kind, match.namespace, match.name
                )
            if base is None:
                raise GatewayError(
                    503,
                    f"{match.route.dynamic_kind} {match.namespace}/"
                    f"{match.name} has no live endpoint",
                    "ServiceUnavailable",
                )
        else:
            base = settings.service_urls[match.target]
        client = scope.get("client")
        headers = gw.upstream_headers(
            scope["headers"], identity, match, client[0] if client else None
        )
        extra: list[tuple[bytes, bytes]] | None = None
        refreshed = scope.get("state", {}).get("set_cookie")
        if refreshed:
            carrier = Response()
            login.set_session_cookie(carrier, gw, request, refreshed)
            extra = [(k, v) for k, v in carrier.raw_headers if k == b"set-cookie"]
        if match.route.dynamic_kind == "inferenceservice" or (
            on_main_origin and match.route.dynamic_kind == "notebook" and gw.notebook_origins
        ):
            # A model server is an API, and a notebook answers API clients here (browsers are
            # sent to its own origin): rendered in a browser, either gets an opaque origin.
            extra = (extra or []) + SANDBOX_HEADERS
        if served is not None:
            gw.activity.begin(served)
        try:
            await forward_http(
                gw.upstream,
                scope,
                receive,
                send,
                base,
                headers,
                settings.max_body_bytes,
                body=body,
                extra_headers=extra,
            )
        finally:
            if served is not None:
                gw.activity.end(served)

    def notebook_elsewhere(self, request: Request, match: routes.Match) -> GatewayError:
        """The 403 for a browser's write to a notebook on the main origin."""
        origins = self.gw.notebook_origins
        assert origins is not None and match.namespace and match.name
        origin = origins.origin(
            match.namespace, match.name, request.url.scheme, request.headers.get("host", "")
        )
        return GatewayError(
            403,
            f"notebook {match.namespace}/{match.name} is served on its own origin, {origin}: "
            "browser sessions use it there (the dashboard's origin does not serve notebook "
            "pages to cookies)",
            "Forbidden",
        )

    def to_notebook_origin(
        self, request: Request, match: routes.Match, principal: Principal
    ) -> Response | None:
        """A browser's way from the main origin to the notebook's own origin, or None to
        proxy here (an API client: bearer and service-account tokens carry no ambient
        authority, and get the sandbox header).

        A cookie session gets a ticket for the notebook origin's login; single-user and
        trusted-header visitors (who need no handshake there) are sent on when they navigate.
        """
        origins = self.gw.notebook_origins
        assert origins is not None and match.namespace and match.name
        if principal.via == "cookie":
            pass
        elif principal.via in ("single-user", "trusted-header"):
            if request.headers.get("sec-fetch-mode") != "navigate":
                return None
        else:
            return None
        origin = origins.origin(
            match.namespace, match.name, request.url.scheme, request.headers.get("host", "")
        )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if principal.via == "cookie":
            sid = (getattr(request.state, "session", None) or {}).get("sid")
            assert isinstance(sid, str)  # Authenticator refuses cookies without one
            ticket = origins.issue_ticket(
                origins.host_of(match.namespace, match.name), sid, principal
            )
            location = origins.login_url(origin, ticket, target)
        else:
            location = origin + target
        headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        response = RedirectResponse(location, 302, headers=headers)
        refreshed = getattr(request.state, "set_cookie", None)
        if refreshed:
            login.set_session_cookie(response, self.gw, request, refreshed)
        return response


class GatewayApp(FastAPI):
    """The gateway's FastAPI app, with ``ProxyFastPath`` in front of all of FastAPI.

    In front rather than ``add_middleware``: FastAPI's ``__call__`` (telemetry checks) and its
    middlewares (server errors, telemetry, body limit) each cost time on every request and
    wrap every ``send`` of a streamed response; the proxy handles its own errors.
    """

    fast_path: ProxyFastPath | None = None

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

    app.include_router(login.router)
    app.include_router(profiles_api.router)
    app.include_router(kfam.router)
    app.include_router(workgroup.router)
    app.include_router(dashboard.router)

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


def _namespace_in_body(body: bytes) -> str | None:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return None
    ns = value.get("namespace") if isinstance(value, dict) else None
    return ns if isinstance(ns, str) and ns else None
