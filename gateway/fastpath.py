"""The proxy's fast path: requests for a service's paths as raw ASGI, ahead of FastAPI.

``ProxyFastPath`` authenticates, authorizes, signs an identity assertion and streams the
request to the owning service (or a workload, for data-plane paths) without FastAPI's
routing, dependency and response layers, which cost more CPU than the proxying itself.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.identity import Identity

from . import login, routes
from .authz import Principal, needed_role
from .errors import GatewayError
from .gateway import Gateway, unauthenticated
from .notebook_host import NotebookOriginApp
from .notebook_origin import SANDBOX_HEADERS, split_host
from .proxy import forward_http, read_body

log = logging.getLogger(__name__)

PROXY_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Data planes that are APIs (a model server, an InferenceGraph's router): their answers
#: always carry the sandbox headers.
SANDBOXED_KINDS = frozenset({"inferenceservice", "inferencegraph"})
#: A model host's path form: ``{name}.{ns}.{domain}/p`` is ``/{prefix}/{ns}/{name}/p``.
HOST_PREFIXES = {"inferenceservice": "serving", "inferencegraph": "graphs"}
#: The scope key of a request made on a model host (its host name).
MODEL_HOST = "shipyard.model_host"
#: The scope key of the endpoint the inference lane picked before it declined (it had no idle
#: connection to it): the same pick is used here, or a new endpoint (a canary, whose first
#: request has not opened a connection yet) would lose its traffic share twice.
CHOSEN_ENDPOINT = "shipyard.endpoint"


class ModelHosts:
    """Which Host headers are KServe's ``{name}.{namespace}.{ingress domain}``.

    A host under the ingress domain is the model hosts' to answer, except the gateway's own
    host (``public_url``) and the notebook origins' hosts when their domain is the same as
    the ingress domain or below it: of two domains a host is under, the more specific one
    claims it, and notebooks keep a tie (their origin is a security boundary; a model host
    is only another address). Every other host (a loopback name, the gateway's) is unchanged.
    """

    def __init__(self, domain: str, notebook_domain: str | None, public_url: str) -> None:
        self.domain = domain.strip().strip(".").lower()
        self.suffix = "." + self.domain
        nd = (notebook_domain or "").strip(".").lower()
        self.notebook_suffix = (
            "." + nd if nd and (nd == self.domain or nd.endswith(self.suffix)) else None
        )
        self.main_host = (urlsplit(public_url).hostname or "").lower() if public_url else ""

    def claims(self, host: str) -> bool:
        """Whether ``host`` (lower case, no port) is answered as a model host (or its 404)."""
        if not self.domain or not host.endswith(self.suffix) or host == self.main_host:
            return False
        return self.notebook_suffix is None or not host.endswith(self.notebook_suffix)

    def not_found(self, host: str) -> GatewayError:
        return GatewayError(
            404,
            f"{host} names no model: a model's host is {{name}}.{{namespace}}{self.suffix}, "
            "its InferenceService's (or InferenceGraph's) name and namespace as DNS labels",
            "NotFound",
        )


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
        self.model_hosts = ModelHosts(
            gw.settings.ingress_domain,
            gw.notebook_origins.domain if gw.notebook_origins else None,
            gw.settings.public_url,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            # KServe's host form first: from here on, the request is its path form.
            on_host = self.on_model_host(scope)
            if on_host is None:
                await self.refuse_host(scope, receive, send)
                return
            if on_host is not scope:
                scope = on_host  # a model's host is no notebook's, whatever the domains
            elif self.notebook_hosts is not None:
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
            # A model host has no sign-in page to send a browser to: its 401 is the API's.
            browser = exc.code == 401 and MODEL_HOST not in scope
            response = unauthenticated(request, exc) if browser else exc.response()
            if match.data_plane:
                response.raw_headers.extend(SANDBOX_HEADERS)
            await response(scope, receive, send)

    def on_model_host(self, scope: Scope) -> Scope | None:
        """``scope`` as its path form when its Host names a model (a copy whose ``path`` and
        ``raw_path`` start ``/serving/{ns}/{name}``, or ``/graphs/...`` for a graph: see
        ``RouteTable.host_kind``); ``scope`` itself for other hosts; None for a host under
        the ingress domain that names no model.

        Everything below sees only the path form, so authentication, authorization, the
        sandbox headers and ``:explain`` are exactly the path form's."""
        host = request_host(scope)
        if not self.model_hosts.claims(host):
            return scope
        target = routes.host_target(host, self.model_hosts.domain)
        if target is None:
            return None
        prefix = self.model_prefix(*target)
        path: str = scope["path"]
        raw: bytes = scope.get("raw_path") or path.encode()
        if not path.startswith("/"):  # "*" (OPTIONS *): still below the model's prefix
            path, raw = "/" + path, b"/" + raw
        return {
            **scope,
            "path": prefix + path,
            "raw_path": prefix.encode() + raw,
            MODEL_HOST: host,
        }

    def model_prefix(self, namespace: str, name: str) -> str:
        """The path form's prefix of the model host ``{name}.{namespace}.{domain}``."""
        kind = self.gw.route_table.host_kind(namespace, name)
        return f"/{HOST_PREFIXES[kind]}/{namespace}/{name}"

    async def refuse_host(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The 404 of a host under the ingress domain that names no model (a WebSocket is
        closed before it opens, which its server answers with a 403)."""
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        response = self.model_hosts.not_found(request_host(scope)).response()
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
        identity, body = await self.authorize(request, match, receive, principal)
        if on_main_origin and match.route.dynamic_kind == "notebook" and gw.notebook_origins:
            moved = self.to_notebook_origin(request, match, principal)
            if moved is not None:
                await moved(scope, receive, send)
                return
        served: tuple[str, str] | None = None  # the InferenceService whose traffic is counted
        if match.data_plane:
            base = await self.workload_endpoint(match, scope.get(CHOSEN_ENDPOINT))
            if match.route.dynamic_kind == "inferenceservice":
                served = (match.namespace or "", match.name or "")
        else:
            base = settings.service_urls[match.target]
        client = scope.get("client")
        headers = gw.upstream_headers(
            scope["headers"], identity, match, client[0] if client else None
        )
        extra = self.extra_headers(request, scope, match, on_main_origin)
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
        except GatewayError as exc:
            if exc.code != 502 or match.data_plane:
                raise
            # A service that does not answer is restarting (shipyard up, a Deployment) or
            # down: say which, and when to try again, rather than a bare "upstream".
            raise GatewayError(
                502,
                f"the {match.target} service is unavailable (it may be restarting); "
                "retry the request shortly",
                "ServiceUnavailable",
                headers={"Retry-After": "2"},
            ) from None
        finally:
            if served is not None:
                gw.activity.end(served)

    async def authorize(
        self, request: Request, match: routes.Match, receive: Receive, principal: Principal
    ) -> tuple[Identity, bytes | None]:
        """The identity to assert upstream (ApiError 403 if none), and the body when it had to
        be read to find the namespace (a KFP v2beta1 request names it there)."""
        gw, path, method = self.gw, request.scope["path"], request.scope["method"]
        namespace = match.namespace
        body: bytes | None = None
        by_object = False
        if namespace is None and path.startswith("/apis/v2beta1/"):
            namespace = request.query_params.get("namespace") or None
            if namespace is None and method in ("POST", "PUT", "PATCH"):
                body = await read_body(receive, gw.settings.max_body_bytes)
                namespace = _namespace_in_body(body)
            by_object = namespace is None
            namespace = namespace or gw.authz.default_namespace(principal)
        if by_object:
            return gw.authz.authorize_by_object(principal, namespace), body
        if match.route.any_user and method in ("GET", "HEAD"):
            return Identity(user=principal.user, groups=principal.groups, role="view"), body
        role = needed_role(method, match.data_plane)
        return gw.authz.authorize(principal, namespace, role, method, path), body

    async def workload_endpoint(self, match: routes.Match, chosen: str | None = None) -> str:
        """Where a data-plane request goes: a live endpoint of the notebook or model server,
        waiting for one that is being activated from zero or is about to be routed."""
        gw = self.gw
        assert match.route.dynamic_kind and match.namespace and match.name
        kind, namespace, name = match.route.dynamic_kind, match.namespace, match.name
        base = chosen or gw.route_table.pick(kind, namespace, name)
        if base is None and kind == "inferenceservice":  # scaled to zero? held until it serves
            base = await gw.activator.endpoint(namespace, name)
        elif base is None:  # a new server's route can trail its Ready status briefly
            base = await gw.activator.settle(kind, namespace, name)
        if base is None:
            raise GatewayError(
                503, f"{kind} {namespace}/{name} has no live endpoint", "ServiceUnavailable"
            )
        return base

    def extra_headers(
        self, request: Request, scope: Scope, match: routes.Match, on_main_origin: bool
    ) -> list[tuple[bytes, bytes]] | None:
        """Headers the gateway adds to the response: a refreshed session cookie, and the
        sandbox headers for what a browser must not render with the dashboard's origin."""
        gw = self.gw
        extra: list[tuple[bytes, bytes]] | None = None
        refreshed = scope.get("state", {}).get("set_cookie")
        if refreshed:
            carrier = Response()
            login.set_session_cookie(carrier, gw, request, refreshed)
            extra = [(k, v) for k, v in carrier.raw_headers if k == b"set-cookie"]
        if match.route.dynamic_kind in SANDBOXED_KINDS or (
            on_main_origin and match.route.dynamic_kind == "notebook" and gw.notebook_origins
        ):
            # A model server and a graph router are APIs, and a notebook answers API clients
            # here (browsers are sent to its own origin): rendered in a browser, any of them
            # gets an opaque origin.
            extra = (extra or []) + SANDBOX_HEADERS
        return extra

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


def request_host(scope: Scope) -> str:
    """The request's host name: its Host header lower-cased, without port or trailing dot."""
    header = next((v for k, v in scope["headers"] if k == b"host"), b"")
    return split_host(header.decode("latin-1"))[0].removesuffix(".")


def _namespace_in_body(body: bytes) -> str | None:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return None
    ns = value.get("namespace") if isinstance(value, dict) else None
    return ns if isinstance(ns, str) and ns else None
