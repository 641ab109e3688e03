"""The gateway's composition root: ``Gateway`` holds what every request handler needs (settings,
the profile store, authentication and authorization, the assertion signer, the upstream
clients, activation) and the checks they share (principal, CSRF, rate, JSON bodies).

``gateway.fastpath`` proxies requests with it; ``gateway.app`` builds the FastAPI app on it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import Request, WebSocket
from fastapi.responses import RedirectResponse, Response

from gateway.kube_tokens import KubeAPI, KubeTokenError, KubeTokenReview
from gateway.workload_runs import WorkloadRuns
from services.common import dataplane
from services.common.db import Database
from services.common.events.bus import EventBus
from services.common.identity import AssertionSigner, Identity
from services.common.serviceaccounts import ServiceAccountTokens
from services.common.settings import SINGLE_USER, SINGLE_USER_NAMESPACE

from . import login, routes
from .activation import Activator
from .activity import ActivityReporter
from .auth import Authenticator, AuthError
from .authz import READ_METHODS, Authorizer, Principal
from .errors import GatewayError
from .notebook_origin import COOKIE_NAME as NOTEBOOK_COOKIE
from .notebook_origin import NotebookOrigins
from .oidc import OIDCProvider
from .profiles import ProfileStore, namespace_sync_for
from .proxy import data_plane_headers, forward_headers, forward_websocket
from .ratelimit import RateLimiter
from .revocations import SessionRevocations
from .routefeed import RouteEventFeed
from .routes import RouteFeeder, RouteTable
from .sessions import same_origin
from .settings import Settings
from .upstream import UpstreamPool, control_client

log = logging.getLogger(__name__)


JSON_BODY_LIMIT = 1024 * 1024


def is_api_path(path: str) -> bool:
    # Discovery's roots and the OpenAPI documents too: kubectl reads /version, /api, /apis
    # and /openapi/v3 before anything else.
    return path in ("/version", "/api", "/apis") or path.startswith(
        ("/api/", "/apis/", "/kfam/", "/oauth2/userinfo", "/internal/", "/openapi/")
    )


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
        self.store = ProfileStore(self.db, namespaces=namespace_sync_for(settings))
        self.authz = Authorizer(self.store, settings.admins)
        private_pem = settings.private_key_pem()
        self.signer = AssertionSigner(private_pem)
        self.sa_tokens = ServiceAccountTokens(
            settings.serviceaccount_key_pem(), settings.sa_token_ttl_seconds
        )
        #: Control-plane calls (services' readiness and workload runs, the token endpoint);
        #: the proxy itself goes through ``upstream`` (see gateway/upstream.py for why).
        self.http = control_client(
            settings.upstream_read_timeout, connect_timeout=settings.upstream_connect_timeout
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
            ("inferencegraph", "serving", "/apis/serving.kserve.io/v1alpha1/inferencegraphs"),
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
