"""OIDC: provider discovery, a JWKS cache that follows key rotation, and JWT verification.

Only asymmetric algorithms are accepted (RS256, ES256, EdDSA): ``none`` and HS* are refused
before any key is looked at, which closes the "HS256 signed with the public key" confusion
attack. An unknown ``kid`` triggers one JWKS refetch, rate-limited so a flood of forged kids
cannot turn the gateway into a amplifier against the provider.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .upstream import control_client

log = logging.getLogger(__name__)

ALLOWED_ALGS = ("RS256", "ES256", "EdDSA")
HTTP_TIMEOUT = 5.0  # seconds, for each of connect, read and write


class TokenError(Exception):
    """The bearer token is not acceptable; the message says why (never echo the token)."""


@dataclass(frozen=True)
class VerifiedToken:
    user: str
    groups: tuple[str, ...]
    claims: dict[str, Any]


def _b64json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    value = json.loads(base64.urlsafe_b64decode(padded))
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def _peek(token: str, index: int, part: str) -> dict[str, Any]:
    """Part ``index`` of a compact JWS (header.payload.signature), decoded, unverified."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token")
    try:
        return _b64json(parts[index])
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenError(f"malformed token {part}") from exc


def peek_header(token: str) -> dict[str, Any]:
    """The unverified JOSE header (used only to choose algorithm and key)."""
    return _peek(token, 0, "header")


def peek_claims(token: str) -> dict[str, Any]:
    return _peek(token, 1, "payload")


class OIDCProvider:
    """One issuer: discovery document, JWKS with rate-limited refetch, token verification."""

    def __init__(
        self,
        issuer: str,
        audiences: list[str],
        *,
        user_claim: str = "email",
        groups_claim: str = "groups",
        leeway: int = 30,
        min_refetch_seconds: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audiences = audiences
        self.user_claim, self.groups_claim = user_claim, groups_claim
        self.leeway = leeway
        self.min_refetch_seconds = min_refetch_seconds
        self._http = http or control_client(HTTP_TIMEOUT)
        self._metadata: dict[str, Any] | None = None
        self._jwks: KeySet | None = None
        self._kids: set[str] = set()
        self._last_fetch = 0.0
        self._lock = asyncio.Lock()
        self._cache: OrderedDict[str, tuple[float, VerifiedToken]] = OrderedDict()

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            resp = await self._http.get(url)
            resp.raise_for_status()
            meta = resp.json()
            if meta.get("issuer", "").rstrip("/") != self.issuer:
                raise TokenError("discovery issuer mismatch")
            self._metadata = meta
        return self._metadata

    async def _fetch_jwks(self) -> None:
        meta = await self.metadata()
        resp = await self._http.get(meta["jwks_uri"])
        resp.raise_for_status()
        data = resp.json()
        keys = [k for k in data.get("keys", []) if k.get("use", "sig") == "sig"]
        self._jwks = KeySet.import_key_set({"keys": keys})
        self._kids = {k.get("kid", "") for k in keys}
        self._last_fetch = time.monotonic()
        log.info("fetched JWKS from %s (%d keys)", meta["jwks_uri"], len(keys))

    async def keyset_for(self, kid: str | None) -> KeySet:
        """The JWKS, refetched (at most once per ``min_refetch_seconds``) on an unknown kid."""
        async with self._lock:
            if self._jwks is None:
                await self._fetch_jwks()
            elif kid is not None and kid not in self._kids:
                if time.monotonic() - self._last_fetch >= self.min_refetch_seconds:
                    await self._fetch_jwks()
        assert self._jwks is not None
        if kid is not None and kid not in self._kids:
            raise TokenError("unknown signing key")
        return self._jwks

    def verified_now(self, token: str) -> VerifiedToken | None:
        """``verify``'s answer for a token it verified before and that has not expired, or
        None (then ``verify`` it): no key lookup, no waiting."""
        hit = self._cache.get(hashlib.sha256(token.encode()).hexdigest())
        return hit[1] if hit is not None and hit[0] > time.time() else None

    async def verify(self, token: str) -> VerifiedToken:
        """Verify signature, iss, aud, exp, nbf and iat; return the user and groups."""
        hit = self.verified_now(token)
        if hit is not None:
            return hit
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.time()
        header = peek_header(token)
        alg = header.get("alg")
        if alg not in ALLOWED_ALGS:
            raise TokenError(f"algorithm {alg!r} is not accepted")
        # Foreign issuers are refused before any key lookup, so they cannot force refetches.
        if str(peek_claims(token).get("iss", "")).rstrip("/") != self.issuer:
            raise TokenError("wrong issuer")
        keyset = await self.keyset_for(header.get("kid"))
        try:
            decoded = jwt.decode(token, keyset, algorithms=[alg])
        except (JoseError, ValueError, TypeError) as exc:
            raise TokenError(f"bad signature: {exc.__class__.__name__}") from None
        claims = decoded.claims
        self._check_claims(claims, now)
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not user:
            raise TokenError(f"token has no {self.user_claim!r} claim")
        groups = claims.get(self.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        result = VerifiedToken(user, tuple(str(g) for g in groups), claims)
        self._cache[digest] = (float(claims["exp"]), result)
        if len(self._cache) > 4096:
            self._cache.popitem(last=False)
        return result

    def _check_claims(self, claims: dict[str, Any], now: float) -> None:
        if str(claims.get("iss", "")).rstrip("/") != self.issuer:
            raise TokenError("wrong issuer")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else list(aud or [])
        if not any(a in self.audiences for a in auds):
            raise TokenError("wrong audience")
        for name in ("exp", "iat"):
            if not isinstance(claims.get(name), int | float):
                raise TokenError(f"missing {name}")
        if claims["exp"] < now - self.leeway:
            raise TokenError("token expired")
        if claims["iat"] > now + self.leeway:
            raise TokenError("token issued in the future")
        nbf = claims.get("nbf")
        if nbf is not None and (not isinstance(nbf, int | float) or nbf > now + self.leeway):
            raise TokenError("token not yet valid")

    async def aclose(self) -> None:
        await self._http.aclose()
