"""Notebooks on their own origins: ``{name}.{namespace}.{notebook domain}``.

A notebook's pages are tenant HTML. Served on the gateway's own origin, a notebook page runs
with the dashboard's origin in a visitor's browser and can read the platform's API as the
visitor (same-origin requests carry the session cookie). ``Content-Security-Policy:
sandbox`` would give it an opaque origin, but JupyterLab needs its own (localStorage, its
own cookies, its API calls), so each notebook gets an origin of its own instead, as
JupyterHub's subdomains do. The browser then keeps the dashboard's session cookie (host-only)
away from notebook pages, and a notebook page's requests are cross-origin to the dashboard.

Signing in to a notebook origin is a handshake through the main origin, the only place that
holds the visitor's session:

1. ``GET /notebook/{ns}/{name}/...`` on the main origin with the session cookie gets a 302 to
   ``{notebook origin}/_shipyard/notebook-login?ticket=...&next=<path>``. The ticket is an
   HMAC (keyed from the cookie secret) over the notebook's host name, the session's id, the
   user and groups, and an expiry 60 s away.
2. The notebook origin checks the ticket (signature, expiry, that it names *this* host, that
   the session has not signed out, that it was not used before on this replica) and the
   visitor's access (edit on the namespace), sets a host-only HttpOnly SameSite=Lax cookie,
   and redirects to ``next``, a path on that origin only.
3. Requests on the notebook origin are authenticated by that cookie alone; it names its host
   and its session id, so it is refused on another notebook's host and dies with sign-out.
   Authorization is checked on every request, as on the main origin. Only that notebook's
   ``/notebook/{ns}/{name}/...`` and the login path are served there; everything else
   (the API, the dashboard, other notebooks) is a 404.

In single-user mode (and trusted-header mode, whose proxy authenticates every host) there is
no session to hand over: the notebook origin is served without a handshake, and the point is
only that notebook pages do not share the dashboard's origin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .authz import Principal
from .sessions import CookieCodec, safe_redirect

LOGIN_PATH = "/_shipyard/notebook-login"
COOKIE_NAME = "shipyard_notebook_session"
TICKET_SECONDS = 60
#: Headers for every response of a model server, and of a notebook answered on the main
#: origin (only API clients get one there): a browser that renders one gives it an opaque
#: origin, with no access to the gateway's cookies or same-origin requests.
SANDBOX_HEADERS = [
    (b"content-security-policy", b"sandbox"),
    (b"x-content-type-options", b"nosniff"),
]
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LOCAL_HOSTS = ("", "127.0.0.1", "localhost", "::1")
DEFAULT_LOCAL_DOMAIN = "notebooks.localhost"


@dataclass(frozen=True)
class NotebookHost:
    """The notebook a request's Host names: ``host`` is the host name without the port."""

    namespace: str
    name: str
    host: str

    @property
    def prefix(self) -> str:
        return f"/notebook/{self.namespace}/{self.name}"


class TicketError(Exception):
    """A sign-in ticket that must not be honoured (the message says why)."""


def split_host(host_header: str) -> tuple[str, str]:
    """(host name lower-cased, ``:port`` or "") of a Host header."""
    value = host_header.strip().lower()
    if value.startswith("["):  # an IPv6 literal never names a notebook
        end = value.find("]")
        return value[: end + 1], value[end + 1 :]
    name, sep, port = value.partition(":")
    return name, (sep + port if sep else "")


class NotebookOrigins:
    """Names notebook origins, and signs and checks their tickets and cookies."""

    def __init__(self, domain: str, secret: str, public_url: str, session_max_age: int) -> None:
        self.domain = domain.strip().strip(".").lower()
        self._suffix = "." + self.domain
        self._ticket_key = hashlib.sha256(f"shipyard:notebook-ticket:{secret}".encode()).digest()
        self.cookies = CookieCodec(secret, "notebook-session")
        self.public_url = public_url.rstrip("/")
        self.session_max_age = session_max_age
        self._used: dict[bytes, float] = {}  # ticket MACs seen by this replica, until expiry

    # ---- naming -----------------------------------------------------------------------------

    def host_of(self, namespace: str, name: str) -> str:
        return f"{name}.{namespace}.{self.domain}"

    def parse_host(self, host_header: str) -> NotebookHost | None:
        """The notebook a Host header names, or None (the main origin, or anything else)."""
        host, _ = split_host(host_header)
        if not host.endswith(self._suffix):
            return None
        name, dot, namespace = host[: -len(self._suffix)].rpartition(".")
        if not dot or not _LABEL.match(namespace) or not all(map(_LABEL.match, name.split("."))):
            return None
        return NotebookHost(namespace, name, host)

    def scheme(self, request_scheme: str) -> str:
        scheme = urlsplit(self.public_url).scheme if self.public_url else request_scheme
        return "https" if scheme in ("https", "wss") else "http"

    def origin(self, namespace: str, name: str, request_scheme: str, host_header: str) -> str:
        """A notebook's origin, as seen from a request on the main origin (whose port the
        notebook origin shares when no public URL says otherwise)."""
        if self.public_url:
            port = urlsplit(self.public_url).port
            suffix = f":{port}" if port else ""
        else:
            suffix = split_host(host_header)[1]
        return f"{self.scheme(request_scheme)}://{self.host_of(namespace, name)}{suffix}"

    def own_origin(self, request_scheme: str, host_header: str) -> str:
        """The origin of a request made on a notebook host (what its pages send as Origin)."""
        return f"{self.scheme(request_scheme)}://{host_header.strip().lower()}"

    def main_origin(self, request_scheme: str, host_header: str) -> str:
        """Where the dashboard is, as seen from a notebook host: the public URL, or (unset,
        which is the local quickstart) this port on 127.0.0.1."""
        if self.public_url:
            return self.public_url
        return f"{self.scheme(request_scheme)}://127.0.0.1{split_host(host_header)[1]}"

    def login_url(self, origin: str, ticket: str, next_path: str) -> str:
        return (
            f"{origin}{LOGIN_PATH}?ticket={quote(ticket, safe='')}&next={quote(next_path, safe='')}"
        )

    # ---- tickets ----------------------------------------------------------------------------

    def issue_ticket(
        self, host: str, sid: str, principal: Principal, now: float | None = None
    ) -> str:
        """A 60-second ticket for ``host`` (a notebook host name), bound to session ``sid``."""
        payload = {
            "h": host,
            "s": sid,
            "u": principal.user,
            "g": list(principal.groups),
            "x": int((now if now is not None else time.time()) + TICKET_SECONDS),
            "n": secrets.token_urlsafe(9),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        mac = hmac.new(self._ticket_key, body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(mac)}"

    def redeem_ticket(self, ticket: str, host: str, now: float | None = None) -> dict[str, Any]:
        """The ticket's claims if it is genuine, unexpired, for ``host`` and unused here.

        The caller still checks the session id against sign-outs and the user's access.
        """
        now = now if now is not None else time.time()
        body, dot, mac_text = ticket.partition(".")
        try:
            mac = _unb64(mac_text)
            expected = hmac.new(self._ticket_key, body.encode(), hashlib.sha256).digest()
            if not dot or not hmac.compare_digest(mac, expected):
                raise TicketError("the notebook sign-in ticket is not genuine")
            claims = json.loads(_unb64(body))
        except (ValueError, TypeError):
            raise TicketError("the notebook sign-in ticket is not genuine") from None
        if not isinstance(claims, dict) or not isinstance(claims.get("x"), int):
            raise TicketError("the notebook sign-in ticket is not genuine")
        if claims["x"] < now:
            raise TicketError("the notebook sign-in ticket has expired")
        if claims.get("h") != host:
            raise TicketError("the notebook sign-in ticket is for another notebook")
        self._used = {m: x for m, x in self._used.items() if x >= now}
        if mac in self._used:
            raise TicketError("the notebook sign-in ticket was used already")
        self._used[mac] = float(claims["x"])
        return claims

    # ---- the notebook origin's cookie ------------------------------------------------------

    def cookie_value(self, host: str, claims: dict[str, Any]) -> str:
        return self.cookies.dumps(
            {"h": host, "s": claims["s"], "u": claims["u"], "g": claims.get("g") or []}
        )

    def read_cookie(self, value: str, host: str) -> dict[str, Any] | None:
        """The cookie's claims if it was sealed for ``host`` and has not outlived a session."""
        data = self.cookies.loads(value, self.session_max_age)
        if data is None or data.get("h") != host or not isinstance(data.get("s"), str):
            return None
        if not isinstance(data.get("u"), str):
            return None
        return data


def resolve_domain(configured: str, public_url: str) -> str | None:
    """The notebook domain to use: as configured; else ``notebooks.localhost`` for a gateway
    on this machine (browsers resolve every ``*.localhost`` to loopback); else None."""
    if configured.strip().strip("."):
        return configured.strip().strip(".").lower()
    host = (urlsplit(public_url).hostname or "") if public_url else ""
    return DEFAULT_LOCAL_DOMAIN if host.lower() in LOCAL_HOSTS else None


def next_path(value: str | None, prefix: str) -> str | None:
    """Where the login redirect may go: a local path (no scheme, no host, no ``//``), or the
    notebook's root when none is given; None when ``value`` would leave the origin."""
    if not value:
        return prefix + "/"
    safe = safe_redirect(value, default="")
    return safe or None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
