"""Authentication: who is calling (bearer JWT, SA token, cookie session, trusted header)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx
from starlette.requests import HTTPConnection

from gateway.kube_tokens import KubeTokenError, KubeTokenReview
from gateway.workload_runs import WorkloadRuns
from services.common.serviceaccounts import (
    SA_ISSUER,
    ServiceAccountError,
    ServiceAccountTokens,
)
from services.common.settings import SINGLE_USER

from .authz import Principal
from .oidc import OIDCProvider, TokenError, peek_claims
from .revocations import SessionRevocations
from .sessions import CookieCodec, new_session
from .settings import Settings

log = logging.getLogger(__name__)


#: Single-user mode's one caller (a Principal is immutable).
SINGLE_USER_PRINCIPAL = Principal(SINGLE_USER, (), via="single-user")
#: How many verified service-account tokens are remembered (cleared when full).
SA_CACHE_SIZE = 4096


class AuthError(Exception):
    """Authentication was attempted and failed (bad token): always 401, never a redirect."""


class Authenticator:
    """Turns a request into a Principal, refreshing cookie sessions when they age."""

    def __init__(
        self,
        settings: Settings,
        oidc: OIDCProvider | None,
        sa_tokens: ServiceAccountTokens,
        http: httpx.AsyncClient,
        revocations: SessionRevocations,
        runs: WorkloadRuns | None = None,
        *,
        kube_tokens: KubeTokenReview | None = None,
    ) -> None:
        self.settings = settings
        self.kube_tokens = kube_tokens
        self.runs = runs
        self.revocations = revocations
        self.oidc = oidc
        self.sa_tokens = sa_tokens
        self.http = http
        self.sessions = CookieCodec(settings.cookie_secret, "session")
        self.trusted = settings.trusted_proxy_addresses
        #: Verified service-account tokens: token -> (exp, verify_bound's answer).
        self._sa_verified: dict[str, tuple[float, tuple[str, str, tuple[str, str] | None]]] = {}

    async def authenticate(self, conn: HTTPConnection) -> Principal | None:
        """The caller, or None when the request carries no credentials at all.

        A refreshed session is left in ``conn.state.set_cookie`` for the response.
        """
        mode = self.settings.auth_mode
        if mode == "single-user":
            return SINGLE_USER_PRINCIPAL
        if mode == "trusted-header":
            host = conn.client.host if conn.client else None
            trusted = self.trusted_header(conn.headers, host)
            if trusted is not None:
                return trusted
        authz = conn.headers.get("authorization", "")
        if authz[:7].lower() == "bearer ":
            return await self._bearer(authz[7:].strip())
        cookie = conn.cookies.get(self.settings.cookie_name)
        if cookie and self.oidc is not None:
            return await self._session(conn, cookie)
        return None

    def authenticate_now(
        self, headers: Mapping[str, str], client_host: str | None
    ) -> Principal | None:
        """The caller when ``authenticate`` would name them without waiting or side effects
        (single-user, a trusted header, a bearer token verified before), else None: then
        ``authenticate`` decides (a cookie session, a new or bound token, no credentials).

        ``headers``: lower-case names. The data-plane lane (gateway/inference_lane.py) uses
        it; the order of the checks is ``authenticate``'s."""
        mode = self.settings.auth_mode
        if mode == "single-user":
            return SINGLE_USER_PRINCIPAL
        if mode == "trusted-header":
            trusted = self.trusted_header(headers, client_host)
            if trusted is not None:
                return trusted
        authz = headers.get("authorization", "")
        if authz[:7].lower() != "bearer ":
            return None
        token = authz[7:].strip()
        sa = self._sa_verified.get(token)
        if sa is not None:
            sub, ns, bound = sa[1]
            if sa[0] <= time.time() or bound is not None:  # a bound token's run is checked
                return None
            return Principal(
                sub, (f"system:serviceaccounts:{ns}",), via="serviceaccount", sa_namespace=ns
            )
        verified = self.oidc.verified_now(token) if self.oidc is not None else None
        return Principal(verified.user, verified.groups, via="bearer") if verified else None

    def trusted_header(self, headers: Mapping[str, str], host: str | None) -> Principal | None:
        """Trusted-header mode: the user a trusted proxy at ``host`` names, or None."""
        userid = headers.get("kubeflow-userid")
        if userid and host in self.trusted:
            groups = tuple(
                g.strip() for g in headers.get("kubeflow-groups", "").split(",") if g.strip()
            )
            return Principal(userid.strip(), groups, via="trusted-header")
        if userid:
            log.warning("ignored kubeflow-userid from untrusted address %s", host)
        return None

    async def _bearer(self, token: str) -> Principal:
        try:
            iss = peek_claims(token).get("iss")
        except TokenError as exc:
            raise AuthError(str(exc)) from None
        if iss == SA_ISSUER:
            sub, ns, bound = self._verified_sa_token(token)
            if bound is not None and (self.runs is None or not await self.runs.is_live(*bound)):
                raise AuthError("the workload this token was issued to is no longer running")
            return Principal(
                sub, (f"system:serviceaccounts:{ns}",), via="serviceaccount", sa_namespace=ns
            )
        if self.kube_tokens is not None and iss == self.kube_tokens.issuer:
            try:
                sub, ns = await self.kube_tokens.review(token)
            except KubeTokenError as exc:
                raise AuthError(str(exc)) from None
            return Principal(
                sub, (f"system:serviceaccounts:{ns}",), via="serviceaccount", sa_namespace=ns
            )
        if self.oidc is None:
            raise AuthError("bearer tokens are not configured")
        try:
            verified = await self.oidc.verify(token)
        except TokenError as exc:
            raise AuthError(f"invalid bearer token: {exc}") from None
        except httpx.HTTPError:
            raise AuthError("identity provider unreachable") from None
        return Principal(verified.user, verified.groups, via="bearer")

    def _verified_sa_token(self, token: str) -> tuple[str, str, tuple[str, str] | None]:
        """``ServiceAccountTokens.verify_bound``, remembered until the token expires.

        Its signature check (Ed25519) costs ~130 us, on every request of a workload (an
        InferenceGraph's router calls each step through the gateway). A verified token stays
        valid until its ``exp`` (there is no revocation of service-account tokens; a bound
        token's workload is checked on every request, by the caller); only tokens that
        verified are kept, so a bad one is refused by the full check every time.
        """
        now = time.time()
        hit = self._sa_verified.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            verified = self.sa_tokens.verify_bound(token)
        except ServiceAccountError as exc:
            raise AuthError(str(exc)) from None
        exp = peek_claims(token).get("exp")
        if isinstance(exp, int | float):
            if len(self._sa_verified) >= SA_CACHE_SIZE:
                self._sa_verified.clear()
            self._sa_verified[token] = (float(exp), verified)
        return verified

    async def _session(self, conn: HTTPConnection, cookie: str) -> Principal | None:
        data = self.sessions.loads(cookie, self.settings.session_max_age_seconds)
        # A cookie without an id predates server-side sign-out and cannot be revoked.
        sid = data.get("sid") if data else None
        if data is None or not isinstance(sid, str) or self.revocations.is_revoked(sid):
            return None
        now = time.time()
        stale = now - data.get("ref", 0) >= self.settings.session_refresh_seconds
        if (data.get("exp", 0) < now + 30 or stale) and data.get("rt"):
            refreshed = await self.refresh(data)
            if refreshed is None:
                if data.get("exp", 0) < now:
                    return None
            else:
                data = refreshed
                conn.state.set_cookie = self.sessions.dumps(data)
        elif data.get("exp", 0) < now:
            return None
        conn.state.session = data
        return Principal(data["u"], tuple(data.get("g") or ()), via="cookie")

    async def refresh(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """Use the refresh token; None if the provider refuses it."""
        assert self.oidc is not None
        try:
            meta = await self.oidc.metadata()
            resp = await self.http.post(
                meta["token_endpoint"],
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": data["rt"],
                },
                auth=(self.settings.oidc_client_id, self.settings.oidc_client_secret),
            )
            if resp.status_code != 200:
                log.info("session refresh refused: %s %s", resp.status_code, resp.text[:200])
                return None
            tokens = resp.json()
            verified = await self.oidc.verify(tokens["id_token"])
        except (httpx.HTTPError, TokenError, KeyError, ValueError) as exc:
            log.info("session refresh failed: %s", exc)
            return None
        tokens.setdefault("refresh_token", data["rt"])
        fresh = new_session(verified.user, verified.groups, tokens, verified.claims["exp"])
        fresh["csrf"] = data.get("csrf", fresh["csrf"])
        fresh["sid"] = data.get("sid", fresh["sid"])  # one session across refreshes
        return fresh
