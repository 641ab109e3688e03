"""HTTP(S) downloads that cannot be turned against the platform's own network (SSRF).

A service fetches a tenant's URL (the serving service a ``http(s)://`` storageUri, the
pipeline service an ``http`` input artifact or a ``dsl.importer`` URL) from inside the platform,
where loopback reaches Postgres, NATS and the services, link-local reaches a cloud's metadata
endpoint (169.254.169.254) and private ranges reach the rest of the cluster. So every hop
(the URI and each redirect) is checked before it is connected to:

- the host name is resolved and **every** address it resolves to must be global unicast
  (not loopback, link-local, private, shared, reserved, multicast or unspecified);
- the connection then goes to the address that was checked (the URL is rewritten to it, with
  the original ``Host`` header and TLS server name), so a DNS answer that changes between
  the check and the connect (DNS rebinding) cannot move it;
- environment proxies are ignored (a proxy would make its own, unchecked, connection).

Hosts listed in the service's allow setting (``SHIPYARD_MODEL_DOWNLOAD_ALLOWED_HOSTS``,
``SHIPYARD_ARTIFACT_DOWNLOAD_ALLOWED_HOSTS``; ``host`` or ``host:port``) skip the address
check: an operator's internal mirror, or a test's loopback server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

MAX_REDIRECTS = 5


class FetchError(Exception):
    """The URI cannot (or may not) be fetched; the message says why."""


class AddressRefused(FetchError):
    """The host resolves to an address the platform does not fetch from."""


@dataclass(frozen=True)
class AllowedHosts:
    """``host`` (any port) and ``host:port`` entries exempt from the address check."""

    entries: frozenset[str]

    @classmethod
    def parse(cls, value: str | Iterable[str]) -> AllowedHosts:
        items = value.split(",") if isinstance(value, str) else value
        return cls(frozenset(i.strip().lower() for i in items if i.strip()))

    def allows(self, host: str, port: int) -> bool:
        host = host.lower()
        return host in self.entries or f"{host}:{port}" in self.entries


def address_refusal(address: str) -> str | None:
    """Why the platform will not connect to ``address`` (None if it may)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "a private address"
    return None


async def checked_address(host: str, port: int, allowed: AllowedHosts) -> str:
    """The address to connect to for ``host``; AddressRefused if any it resolves to is not
    public (unless the host is allowed)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise FetchError(f"host {host!r} has no address")
    if not allowed.allows(host, port):
        for address in addresses:
            why = address_refusal(address)
            if why is not None:
                raise AddressRefused(
                    f"host {host!r} resolves to {address}, {why}: models are not downloaded "
                    "from the platform's own network (an operator may allow a host with "
                    "SHIPYARD_MODEL_DOWNLOAD_ALLOWED_HOSTS)"
                )
    return addresses[0]


class GuardedClient:
    """An httpx client whose every request goes to a checked address; see the module doc."""

    def __init__(
        self,
        allowed: AllowedHosts,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.allowed = allowed
        self._client = httpx.AsyncClient(
            trust_env=False,  # no environment proxies: they would connect unchecked
            follow_redirects=False,  # each hop is checked by open()
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _pinned(
        self, method: str, url: str, extra: dict[str, str] | None = None
    ) -> httpx.Request:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"{url!r}: only http:// and https:// URLs with a host are fetched")
        if parts.username or parts.password:
            raise FetchError(f"{url!r}: credentials in the URL are not supported")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = await checked_address(host, port, self.allowed)
        literal = f"[{address}]" if ":" in address else address
        pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path, parts.query, ""))
        default_port = port == (443 if parts.scheme == "https" else 80)
        host_header = host if default_port else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            host_header = f"[{host}]" if default_port else f"[{host}]:{port}"
        return self._client.build_request(
            method,
            pinned,
            headers={**(extra or {}), "Host": host_header, "Accept-Encoding": "identity"},
            extensions={"sni_hostname": host} if parts.scheme == "https" else {},
        )

    @asynccontextmanager
    async def open(
        self, method: str, url: str, headers: list[dict[str, str]] | None = None
    ) -> AsyncIterator[tuple[str, httpx.Response]]:
        """``(final URL, response)`` after at most MAX_REDIRECTS checked redirects; the body
        is streamed (read it with ``response.aiter_raw()``). ``headers`` (Argo's
        ``[{name, value}]``) go with the first request only, never to a redirect's host."""
        extra = {
            h["name"]: h.get("value", "")
            for h in headers or []
            if h.get("name", "").lower() not in ("host", "accept-encoding")
        }
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            request = await self._pinned(method, current, extra if current == url else None)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise FetchError(f"{current}: {type(exc).__name__}: {exc}") from None
            if response.is_redirect and "location" in response.headers:
                await response.aclose()
                current = urljoin(current, response.headers["location"])
                continue
            try:
                yield current, response
            finally:
                await response.aclose()
            return
        raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")
