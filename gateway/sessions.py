"""Browser sessions: encrypted cookies, the OIDC authorization-code flow with PKCE, CSRF.

The cookie is a Fernet token (AES-128-CBC + HMAC-SHA256 with a timestamp), so it is both
signed and encrypted; it is HttpOnly, SameSite=Lax, and Secure when the gateway is reached
over https. Each session has an id, and signing out revokes it on the server
(``gateway.revocations``), so a copied cookie stops working too. The login ``rd`` must be
a local path, which closes the open-redirect hole (``https://evil.example``,
``//evil.example``, ``/\\evil.example``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken


class CookieCodec:
    """Encrypts and authenticates small JSON payloads for cookies."""

    def __init__(self, secret: str, purpose: str) -> None:
        key = hashlib.sha256(f"shipyard:{purpose}:{secret}".encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def dumps(self, data: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(data, separators=(",", ":")).encode()).decode()

    def loads(self, token: str, max_age: int) -> dict[str, Any] | None:
        try:
            raw = self._fernet.decrypt(token.encode(), ttl=max_age)
        except (InvalidToken, ValueError):
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None


def safe_redirect(rd: str | None, default: str = "/") -> str:
    """``rd`` if it is a local absolute path, else ``default`` (no open redirects)."""
    if not rd or not rd.startswith("/") or rd.startswith("//") or "\\" in rd:
        return default
    if any(ord(c) < 0x20 for c in rd):
        return default
    parts = urlsplit(rd)
    if parts.scheme or parts.netloc:
        return default
    return rd


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_session(
    user: str, groups: list[str] | tuple[str, ...], tokens: dict[str, Any], id_exp: float
) -> dict[str, Any]:
    """A session's cookie payload; ``sid`` names it for sign-out (``gateway.revocations``)."""
    return {
        "sid": secrets.token_urlsafe(18),
        "u": user,
        "g": list(groups),
        "it": tokens.get("id_token", ""),
        "rt": tokens.get("refresh_token", ""),
        "exp": int(id_exp),
        "ref": int(time.time()),
        "csrf": secrets.token_urlsafe(16),
    }


def same_origin(origin_or_referer: str | None, expected_origin: str) -> bool:
    if not origin_or_referer:
        return False
    parts = urlsplit(origin_or_referer)
    return f"{parts.scheme}://{parts.netloc}".lower() == expected_origin.lower()
