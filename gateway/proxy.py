"""The reverse proxy: streamed HTTP both ways, and WebSockets for notebook servers.

Bodies are never buffered beyond one small message: a request body that arrived whole in
one ASGI message of at most ``SMALL_BODY`` bytes goes upstream in the request head's write,
any other is read from ASGI ``receive`` and written upstream as it arrives (counted against
the body limit as it flows), and the response is relayed to ASGI ``send`` chunk by chunk
(whole when small), so watch streams, log follows and large uploads pass through with
constant memory. The HTTP side talks raw ASGI and ``gateway.upstream``
(no Request/Response models on the hot path); see ``gateway.fastpath.ProxyFastPath``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from services.common.identity import ASSERTION_HEADER
from services.common.runtime import endpoint

from .errors import GatewayError
from .upstream import (
    SMALL_BODY,
    UpstreamError,
    UpstreamPool,
    UpstreamRefused,
    UpstreamResponse,
    UpstreamTimeout,
)

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
IDENTITY_HEADERS = frozenset({ASSERTION_HEADER, "kubeflow-userid", "kubeflow-groups"})
# Request headers never forwarded. ``content-length`` is set by the upstream client from
# what it actually sends, and ``expect`` is answered by the gateway's own server (the body
# is streamed anyway), so the upstream never sends an interim 100 to a proxied client.
_SKIP_REQUEST = frozenset(
    h.encode() for h in HOP_BY_HOP | IDENTITY_HEADERS | {"content-length", "expect"}
)
#: Response headers never relayed: hop-by-hop, plus the ones our own server always adds.
SKIP_RESPONSE = frozenset(h.encode() for h in HOP_BY_HOP | {"date", "server"})
_ASSERTION = ASSERTION_HEADER.encode()


class BodyTooLarge(Exception):
    pass


class ClientDisconnected(Exception):
    """The client went away while its request body was still being read."""


def forward_headers(
    headers: Iterable[tuple[bytes, bytes]],
    assertion: str,
    *,
    strip_authorization: bool,
    client_host: str | None,
    strip_cookie: bool = False,
) -> list[tuple[bytes, bytes]]:
    """Upstream request headers: hop-by-hop and identity headers removed, assertion added."""
    out: list[tuple[bytes, bytes]] = []
    for raw_name, value in headers:
        name = raw_name.lower()  # ASGI servers already lower-case; WebSocket callers too
        if name in _SKIP_REQUEST:
            continue
        if strip_authorization and name == b"authorization":
            continue
        if strip_cookie and name == b"cookie":
            continue
        out.append((raw_name, value))
    out.append((_ASSERTION, assertion.encode()))
    if client_host:
        out.append((b"x-forwarded-for", client_host.encode()))
    return out


#: Visitor credentials a data plane never sees, on top of ``_SKIP_REQUEST``: a bearer token,
#: and the session's CSRF token (with it, tenant script could pass the gateway's CSRF check).
_SKIP_DATA_PLANE = frozenset({b"authorization", b"x-csrf-token"})


def data_plane_headers(
    headers: Iterable[tuple[bytes, bytes]],
    *,
    gateway_cookies: frozenset[str],
    authorization: str | None,
    client_host: str | None,
) -> list[tuple[bytes, bytes]]:
    """Upstream request headers for tenant code (``/notebook/...``, ``/serving/...``).

    Tenant code must receive nothing it could replay as the visitor (DESIGN.md, Security
    model): no identity assertion (none is added, a forged one is dropped), no trusted user
    header, no ``Authorization``, and none of the gateway's own cookies. The tenant's own
    cookies (Jupyter's ``_xsrf``, for one) pass. ``authorization`` is the gateway's own
    credential for the upstream (a Jupyter server's token), added when given.
    """
    out: list[tuple[bytes, bytes]] = []
    for raw_name, value in headers:
        name = raw_name.lower()
        if name in _SKIP_REQUEST or name in _SKIP_DATA_PLANE:
            continue
        if name == b"cookie":
            value = strip_cookies(value, gateway_cookies)
            if not value:
                continue
        out.append((raw_name, value))
    if authorization:
        out.append((b"authorization", authorization.encode()))
    if client_host:
        out.append((b"x-forwarded-for", client_host.encode()))
    return out


def strip_cookies(header: bytes, names: frozenset[str]) -> bytes:
    """A ``Cookie`` header without the cookies called ``names`` (compared case-blind, as a
    lenient parser might), every other pair kept as sent (RFC 6265 section 5.4)."""
    kept = []
    for pair in header.split(b";"):
        name = pair.split(b"=", 1)[0].strip().decode("latin-1").lower()
        if pair.strip() and name not in names:
            kept.append(pair.strip())
    return b"; ".join(kept)


async def receive_body(receive: Receive, limit: int) -> AsyncIterator[bytes]:
    """The request body from ASGI ``receive``, chunk by chunk, refused past ``limit``."""
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        if chunk:
            seen += len(chunk)
            if seen > limit:
                raise BodyTooLarge()
            yield chunk
        if not message.get("more_body", False):
            return


async def read_body(receive: Receive, limit: int) -> bytes:
    """A small request body read whole (the KFP API names the namespace inside it)."""
    try:
        return b"".join([chunk async for chunk in receive_body(receive, limit)])
    except BodyTooLarge:
        raise GatewayError(413, f"request body larger than {limit} bytes") from None


async def _first_body(
    receive: Receive, limit: int, length: int | None
) -> bytes | AsyncIterator[bytes]:
    """The request body: whole bytes when a small one came in a single message (it then goes
    upstream in the same write as the request head), else a stream of its chunks.
    Raises ClientDisconnected when the client left before sending it."""
    if length is None or length > SMALL_BODY:
        return receive_body(receive, limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected()
    chunk: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(chunk) > limit:
            raise GatewayError(413, f"request body larger than {limit} bytes")
        return chunk
    return _chained(chunk, receive_body(receive, limit - len(chunk)))


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


def _body_framing(scope: Scope) -> tuple[bool, int | None]:
    """(has a body, declared Content-Length) from the request headers."""
    length: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
    return (chunked or bool(length)), (None if chunked else length)


async def forward_http(
    pool: UpstreamPool,
    scope: Scope,
    receive: Receive,
    send: Send,
    base_url: str,
    headers: list[tuple[bytes, bytes]],
    body_limit: int,
    body: bytes | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send the request upstream and relay the response to ``send`` as a stream.

    Raises GatewayError (413, 502, 504) only before the response has started.
    """
    method: str = scope["method"]
    target = scope.get("raw_path") or scope["path"].encode()
    if scope["query_string"]:
        target += b"?" + scope["query_string"]
    content: bytes | AsyncIterator[bytes] | None = body
    length: int | None = None
    if body is None and method not in ("GET", "HEAD"):
        has_body, length = _body_framing(scope)
        if length is not None and length > body_limit:
            raise GatewayError(413, f"request body larger than {body_limit} bytes")
        if has_body:
            try:
                content = await _first_body(receive, body_limit, length)
            except ClientDisconnected:
                return
    try:
        resp = await pool.request(method, base_url, target, headers, content, length)
    except BodyTooLarge:
        raise GatewayError(413, f"request body larger than {body_limit} bytes") from None
    except ClientDisconnected:
        return
    except UpstreamTimeout:
        raise GatewayError(504, "upstream timed out", "Timeout") from None
    except UpstreamRefused as exc:  # the runtime says why (e.g. the workload has stopped)
        log.warning("upstream %s%s refused: %s", base_url, scope["path"], exc)
        raise GatewayError(502, f"upstream unavailable: {exc}", "ServiceUnavailable") from None
    except UpstreamError as exc:
        log.warning("upstream %s%s failed: %s", base_url, scope["path"], exc)
        raise GatewayError(502, "upstream unavailable", "ServiceUnavailable") from None
    try:
        await relay_response(resp, receive, send, extra_headers)
    finally:
        resp.close()


async def relay_response(
    resp: UpstreamResponse,
    receive: Receive,
    send: Send,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Relay status, headers and body; a body still arriving is streamed as it comes.

    Raises GatewayError (502, 504) only before the response has started.
    """
    out = [(k, v) for k, v in resp.headers if k not in SKIP_RESPONSE]
    if extra_headers:
        out += extra_headers
    try:
        whole = await resp.small_body(SMALL_BODY)
    except UpstreamTimeout:
        raise GatewayError(504, "upstream timed out", "Timeout") from None
    except UpstreamError as exc:
        log.warning("upstream response broke off: %s", exc)
        raise GatewayError(502, "upstream unavailable", "ServiceUnavailable") from None
    await send({"type": "http.response.start", "status": resp.status, "headers": out})
    if whole is not None:  # the common case: a small response, relayed in one send
        await send({"type": "http.response.body", "body": whole, "more_body": False})
        return
    # A stream (watch, log follow, large download): it may last for hours, so it no longer
    # counts against the endpoint's limit of concurrent requests; stop relaying when the
    # client leaves, which uvicorn only reports through ``receive``.
    resp.long_running()
    watcher = asyncio.ensure_future(_until_disconnect(receive))

    def on_disconnect(task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is None:
            resp.abort()

    watcher.add_done_callback(on_disconnect)
    try:
        while True:
            try:
                chunk = await resp.read_chunk()
            except UpstreamError as exc:
                log.info("upstream stream ended early: %s", exc)
                resp.abort()
                break  # as before: end the relayed stream where the upstream's ended
            if chunk is None:
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        watcher.cancel()


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def connect_websocket(
    url: str, headers: list[tuple[str, str]], open_timeout: float, subprotocols: list[str]
) -> ClientConnection:
    """A WebSocket client connection to ``url``: an endpoint (``http://`` or
    ``http+sandbox://``, see ``services.common.runtime.endpoint``) with path and query.

    The socket comes from ``endpoint.open_socket``; the ``ws://`` URI handed to websockets
    then only names the Host header and the request target.
    """
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    async with asyncio.timeout(open_timeout):
        sock = await endpoint.open_socket(url, open_timeout)
    try:
        return await ws_connect(
            f"ws://{endpoint.host_header(url)}{target}",
            sock=sock,
            additional_headers=headers,
            open_timeout=open_timeout,
            subprotocols=subprotocols or None,  # type: ignore[arg-type]
            max_size=32 * 1024 * 1024,
        )
    except BaseException:
        sock.close()
        raise


async def forward_websocket(
    ws: WebSocket, url: str, headers: list[tuple[str, str]], open_timeout: float = 10.0
) -> None:
    """Pump frames both ways between the client and the upstream WebSocket at ``url`` (the
    upstream's endpoint, path and query, as for ``connect_websocket``)."""
    subprotocols = [
        p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()
    ]
    try:
        upstream = await connect_websocket(url, headers, open_timeout, subprotocols)
    except Exception as exc:  # noqa: BLE001 - any failure closes
        log.info("websocket upstream %s failed: %s", url, exc)
        await ws.close(code=1011)
        return
    await ws.accept(subprotocol=upstream.subprotocol)

    async def client_to_upstream() -> None:
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("bytes") is not None:
                    await upstream.send(msg["bytes"])
                elif msg.get("text") is not None:
                    await upstream.send(msg["text"])
        except (WebSocketDisconnect, ConnectionClosed):
            return

    async def upstream_to_client() -> None:
        try:
            async for data in upstream:
                if isinstance(data, bytes):
                    await ws.send_bytes(data)
                else:
                    await ws.send_text(data)
        except (WebSocketDisconnect, ConnectionClosed, RuntimeError):
            return

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await upstream.close()
        try:
            await ws.close()
        except RuntimeError:
            pass
