"""What a notebook's own origin serves: its login, its own paths, and nothing else.

Requests whose Host is ``{name}.{namespace}.{notebook domain}`` never reach the gateway's
routers (see ``gateway.notebook_origin`` for the design): they are answered here, in front of
them, as raw ASGI. Only ``/_shipyard/notebook-login`` and ``/notebook/{namespace}/{name}/...``
of the one notebook the host names are served; the API, the dashboard, other notebooks and
the login flows of the main origin are a 404 on a notebook host.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi.responses import RedirectResponse, Response
from starlette.requests import HTTPConnection, Request
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from services.common.settings import SINGLE_USER

from . import routes
from .authz import READ_METHODS, Principal
from .errors import GatewayError
from .notebook_origin import (
    COOKIE_NAME,
    LOGIN_PATH,
    NotebookHost,
    NotebookOrigins,
    TicketError,
    next_path,
)
from .sessions import same_origin

if TYPE_CHECKING:
    from .app import Gateway, ProxyFastPath

log = logging.getLogger(__name__)


class NotebookOriginApp:
    """Serves requests made on notebook hosts (``serve`` says whether the request was one)."""

    def __init__(self, gw: Gateway, fast_path: ProxyFastPath, origins: NotebookOrigins) -> None:
        self.gw = gw
        self.fast_path = fast_path
        self.origins = origins

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        host_header = ""
        for name, value in scope["headers"]:
            if name == b"host":
                host_header = value.decode("latin-1")
                break
        notebook = self.origins.parse_host(host_header)
        if notebook is None:
            return False
        if scope["type"] == "websocket":
            await self.websocket(WebSocket(scope, receive, send), notebook)
            return True
        request = Request(scope, receive)
        try:
            await self.http(request, notebook, scope, receive, send)
        except GatewayError as exc:
            await exc.response()(scope, receive, send)
        return True

    async def http(
        self, request: Request, notebook: NotebookHost, scope: Scope, receive: Receive, send: Send
    ) -> None:
        path: str = scope["path"]
        if path == LOGIN_PATH:
            await self.login(request, notebook)(scope, receive, send)
            return
        if path != notebook.prefix and not path.startswith(notebook.prefix + "/"):
            raise GatewayError(404, f"{notebook.host} serves only {notebook.prefix}/", "NotFound")
        principal = self.principal(request, notebook)
        method = request.method
        if principal is None:
            if method in ("GET", "HEAD"):
                # No cookie (or a dead one): sign in again through the main origin.
                main = self.origins.main_origin(request.url.scheme, request.headers["host"])
                target = path + (f"?{request.url.query}" if request.url.query else "")
                await RedirectResponse(main + target, 302, headers={"Cache-Control": "no-store"})(
                    scope, receive, send
                )
                return
            raise GatewayError(401, "sign in to this notebook first", "Unauthorized")
        if method not in READ_METHODS and not self.same_origin(request):
            # Every notebook host is same-site with every other (one registrable domain), so
            # SameSite=Lax does not keep another notebook's page from posting here.
            raise GatewayError(
                403,
                "cross-origin request refused (the Origin or Referer must be this notebook's)",
                "Forbidden",
            )
        match = routes.resolve(path)
        assert match is not None and match.route.dynamic_kind == "notebook"
        await self.fast_path.proxy(request, match, scope, receive, send, principal=principal)

    def principal(self, conn: HTTPConnection, notebook: NotebookHost) -> Principal | None:
        """Who calls: this origin's own cookie only (not the main origin's credentials: no
        bearer token, and the session cookie never comes here), or the single user."""
        settings = self.gw.settings
        if settings.auth_mode == "single-user":
            return Principal(SINGLE_USER, (), via="single-user")
        if settings.auth_mode == "trusted-header":
            trusted = self.gw.auth.trusted_header(
                conn.headers, conn.client.host if conn.client else None
            )
            if trusted is not None:
                return trusted
        data = self.origins.read_cookie(conn.cookies.get(COOKIE_NAME, ""), notebook.host)
        if data is None or self.gw.revocations.is_revoked(data["s"]):
            return None
        return Principal(data["u"], tuple(data.get("g") or ()), via="notebook-cookie")

    def same_origin(self, conn: HTTPConnection) -> bool:
        expected = self.origins.own_origin(conn.url.scheme, conn.headers.get("host", ""))
        origin = conn.headers.get("origin") or conn.headers.get("referer")
        return same_origin(origin, expected)

    def login(self, request: Request, notebook: NotebookHost) -> Response:
        """Redeem a ticket from the main origin: set this origin's cookie, go to ``next``."""
        if request.method not in ("GET", "HEAD"):
            raise GatewayError(405, "notebook sign-in is a GET", "MethodNotAllowed")
        target = next_path(request.query_params.get("next"), notebook.prefix)
        if target is None:
            raise GatewayError(
                400, "next: must be a path on this origin (no scheme, host or //)", "BadRequest"
            )
        try:
            claims = self.origins.redeem_ticket(
                request.query_params.get("ticket", ""), notebook.host
            )
        except TicketError as exc:
            raise GatewayError(401, f"{exc}; open the notebook again", "Unauthorized") from None
        if self.gw.revocations.is_revoked(claims["s"]):
            raise GatewayError(401, "the session this ticket came from has signed out")
        principal = Principal(claims["u"], tuple(claims.get("g") or ()), via="notebook-cookie")
        self.gw.authz.authorize(principal, notebook.namespace, "edit", "GET", notebook.prefix)
        response = RedirectResponse(
            target, 302, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        )
        response.set_cookie(
            COOKIE_NAME,
            self.origins.cookie_value(notebook.host, claims),
            max_age=self.gw.settings.session_max_age_seconds,
            httponly=True,
            samesite="lax",
            secure=self.origins.scheme(request.url.scheme) == "https",
            path="/",
        )
        log.info("notebook sign-in of %s on %s", principal.user, notebook.host)
        return response

    async def websocket(self, ws: WebSocket, notebook: NotebookHost) -> None:
        path = ws.url.path
        if not path.startswith(notebook.prefix + "/"):
            await ws.close(code=4404)
            return
        principal = self.principal(ws, notebook)
        if principal is None:
            await ws.close(code=4401)
            return
        if not self.same_origin(ws):
            await ws.close(code=4403)
            return
        await self.gw.forward_notebook_websocket(ws, principal, notebook.namespace, notebook.name)
