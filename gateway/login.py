"""``/oauth2/*``: browser login (authorization code + PKCE S256), callback, sign-out, userinfo.

Sign-out is POST only and revokes the session server-side (``gateway.revocations``).
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from .authz import Principal
from .errors import GatewayError
from .oidc import TokenError
from .profiles import namespace_for_user
from .registration import registered_spec
from .sessions import CookieCodec, new_session, pkce_pair, safe_redirect

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger(__name__)
router = APIRouter(prefix="/oauth2")
STATE_COOKIE = "shipyard_oauth_state"
STATE_MAX_AGE = 600


def gw_of(request: Request) -> Gateway:
    return request.app.state.gw  # type: ignore[no-any-return]


def base_url(request: Request, public_url: str) -> str:
    return public_url.rstrip("/") if public_url else str(request.base_url).rstrip("/")


def set_session_cookie(response: Response, gw: Gateway, request: Request, value: str) -> None:
    secure = base_url(request, gw.settings.public_url).startswith("https://")
    response.set_cookie(
        gw.settings.cookie_name,
        value,
        max_age=gw.settings.session_max_age_seconds,
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code)


@router.get("/config")
async def read_login_config(request: Request) -> Response:
    """What ``shipyard login`` needs: the issuer and the public CLI client id."""
    gw = gw_of(request)
    if gw.oidc is None:
        return JSONResponse({"authMode": gw.settings.auth_mode})
    return JSONResponse(
        {
            "authMode": gw.settings.auth_mode,
            "issuer": gw.oidc.issuer,
            "clientId": gw.settings.oidc_cli_client_id,
            "scopes": gw.settings.oidc_scopes,
        }
    )


@router.get("/start")
async def start_login(request: Request, rd: str = "/") -> Response:
    gw = gw_of(request)
    if gw.oidc is None:
        return _error(404, "OIDC login is not enabled")
    meta = await gw.oidc.metadata()
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    base = base_url(request, gw.settings.public_url)
    params = {
        "client_id": gw.settings.oidc_client_id,
        "response_type": "code",
        "scope": gw.settings.oidc_scopes,
        "redirect_uri": f"{base}/oauth2/callback",
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    response = RedirectResponse(f"{meta['authorization_endpoint']}?{urlencode(params)}", 302)
    codec = CookieCodec(gw.settings.cookie_secret, "login-state")
    response.set_cookie(
        STATE_COOKIE,
        codec.dumps({"s": state, "n": nonce, "v": verifier, "rd": safe_redirect(rd)}),
        max_age=STATE_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=base.startswith("https://"),
        path="/oauth2",
    )
    return response


@router.get("/callback")
async def finish_login(
    request: Request, code: str = "", state: str = "", error: str = ""
) -> Response:
    gw = gw_of(request)
    if gw.oidc is None:
        return _error(404, "OIDC login is not enabled")
    if error:
        return _error(401, f"login failed: {error}")
    codec = CookieCodec(gw.settings.cookie_secret, "login-state")
    pending = codec.loads(request.cookies.get(STATE_COOKIE, ""), STATE_MAX_AGE)
    if not pending or not state or not secrets.compare_digest(pending["s"], state) or not code:
        return _error(400, "login state mismatch; start again at /oauth2/start")
    meta = await gw.oidc.metadata()
    base = base_url(request, gw.settings.public_url)
    try:
        resp = await gw.http.post(
            meta["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": f"{base}/oauth2/callback",
                "code_verifier": pending["v"],
            },
            auth=(gw.settings.oidc_client_id, gw.settings.oidc_client_secret),
        )
    except httpx.HTTPError:
        return _error(502, "identity provider unreachable")
    if resp.status_code != 200:
        log.info("code exchange refused: %s %s", resp.status_code, resp.text[:200])
        return _error(401, "code exchange failed")
    tokens: dict[str, Any] = resp.json()
    try:
        verified = await gw.oidc.verify(tokens.get("id_token", ""))
    except TokenError as exc:
        return _error(401, f"invalid ID token: {exc}")
    if verified.claims.get("nonce") != pending["n"]:
        return _error(401, "nonce mismatch")
    if gw.settings.auto_create_profile and not gw.store.snapshot.namespaces_of(verified.user):
        await gw.store.ensure_profile(
            namespace_for_user(verified.user),
            verified.user,
            registered_spec({}, gw.settings.registration_hard, verified.user),
        )
    session = new_session(verified.user, verified.groups, tokens, verified.claims["exp"])
    response = RedirectResponse(pending["rd"], 302)
    set_session_cookie(response, gw, request, gw.auth.sessions.dumps(session))
    response.delete_cookie(STATE_COOKIE, path="/oauth2")
    log.info("browser login for %s", verified.user)
    return response


@router.get("/sign_out")
async def refuse_sign_out_get() -> Response:
    """Sign-out changes state, so a link, an image or a prefetch must not trigger it."""
    raise GatewayError(
        405,
        "sign-out needs POST (with the session's X-CSRF-Token or a same-origin Origin)",
        "MethodNotAllowed",
        headers={"Allow": "POST"},
    )


@router.post("/sign_out")
async def sign_out(request: Request, rd: str = "/") -> Response:
    """End the session: revoke it server-side, clear the cookie, end the provider's session.

    The answer is a 303 to the provider's end-session endpoint (or ``rd``); a caller that
    asks for JSON (the dashboard's fetch, which cannot read a redirect's target) gets
    ``{"location": ...}`` to navigate to instead.
    """
    gw = gw_of(request)
    target = safe_redirect(rd)
    data = gw.auth.sessions.loads(
        request.cookies.get(gw.settings.cookie_name, ""), gw.settings.session_max_age_seconds
    )
    if data is not None:
        # A cross-site page must not be able to sign a user out: the CSRF rules of every
        # other cookie-authenticated write apply.
        request.state.session = data
        gw.check_csrf(request, Principal(str(data.get("u", "")), via="cookie"))
        if isinstance(data.get("sid"), str):
            await gw.revocations.revoke(data["sid"], str(data.get("u", "")))
    if gw.oidc is not None:
        meta = await gw.oidc.metadata()
        end = meta.get("end_session_endpoint")
        if end:
            base = base_url(request, gw.settings.public_url)
            params = {
                "client_id": gw.settings.oidc_client_id,
                "post_logout_redirect_uri": f"{base}/",
            }
            if data and data.get("it"):
                params["id_token_hint"] = data["it"]
            target = f"{end}?{urlencode(params)}"
    response: Response
    if "application/json" in request.headers.get("accept", ""):
        response = JSONResponse({"location": target})
    else:
        response = RedirectResponse(target, 303)
    response.delete_cookie(gw.settings.cookie_name, path="/")
    return response


@router.get("/userinfo")
async def read_userinfo(request: Request) -> Response:
    gw = gw_of(request)
    principal = await gw.require_principal(request)
    body = {
        "user": principal.user,
        "email": principal.user,
        "groups": list(principal.groups),
        "preferredUsername": principal.user.split("@")[0],
    }
    csrf = (
        getattr(request.state, "session", {}).get("csrf")
        if hasattr(request.state, "session")
        else None
    )
    if csrf:
        body["csrfToken"] = csrf
    # The dashboard's Models page: the host an InferenceService answers on (gRPC authority).
    body["inferenceHost"] = f"{{name}}.{{namespace}}.{gw.settings.ingress_domain}"
    if gw.notebook_origins is not None:
        # The dashboard's Connect links: each notebook on its own origin.
        origin = gw.notebook_origins.origin(
            "{namespace}", "{name}", request.url.scheme, request.headers.get("host", "")
        )
        body["notebookUrl"] = f"{origin}/notebook/{{namespace}}/{{name}}/"
    response = JSONResponse(body)
    if getattr(request.state, "set_cookie", None):
        set_session_cookie(response, gw, request, request.state.set_cookie)
    return response
