"""The reverse proxy: streamed HTTP both ways, and WebSockets for notebook servers.

Bodies are never buffered: the request body is an async iterator handed to httpx (counted
against the body limit as it flows), and the response is relayed chunk by chunk, so watch
streams, log follows and large uploads pass through with constant memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from services.common.identity import ASSERTION_HEADER

from .errors import GatewayError

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host",
})
IDENTITY_HEADERS = frozenset({ASSERTION_HEADER, "kubeflow-userid", "kubeflow-groups"})


class BodyTooLarge(Exception):
    pass


def forward_headers(headers: list[tuple[bytes, bytes]], assertion: str, *,
                    strip_authorization: bool, client_host: str | None,
                    strip_cookie: bool = False) -> list[tuple[bytes, bytes]]:
    """Upstream request headers: hop-by-hop and identity headers removed, assertion added."""
    out: list[tuple[bytes, bytes]] = []
    for raw_name, value in headers:
        name = raw_name.decode("latin-1").lower()
        if name in HOP_BY_HOP or name in IDENTITY_HEADERS:
            continue
        if strip_authorization and name == "authorization":
            continue
        if strip_cookie and name == "cookie":
            continue
        out.append((raw_name, value))
    out.append((ASSERTION_HEADER.encode(), assertion.encode()))
    if client_host:
        out.append((b"x-forwarded-for", client_host.encode()))
    return out


async def limited_body(request: Request, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge()
        if chunk:
            yield chunk


async def forward_http(client: httpx.AsyncClient, request: Request, url: str,
                       headers: list[tuple[bytes, bytes]], body_limit: int,
                       body: bytes | None = None) -> StreamingResponse:
    """Send the request upstream and relay the response as a stream."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > body_limit:
        raise GatewayError(413, f"request body larger than {body_limit} bytes")
    content = body if body is not None else (
        limited_body(request, body_limit) if request.method not in ("GET", "HEAD") else None)
    upstream_req = client.build_request(request.method, url, headers=headers, content=content)
    try:
        resp = await client.send(upstream_req, stream=True)
    except BodyTooLarge:
        raise GatewayError(413, f"request body larger than {body_limit} bytes") from None
    except httpx.TimeoutException:
        raise GatewayError(504, "upstream timed out", "Timeout") from None
    except httpx.HTTPError as exc:
        log.warning("upstream %s failed: %s", url, exc.__class__.__name__)
        raise GatewayError(502, "upstream unavailable", "ServiceUnavailable") from None
    out_headers = [(k, v) for k, v in resp.headers.raw
                   if k.decode("latin-1").lower() not in HOP_BY_HOP]
    response = StreamingResponse(_relay(resp), status_code=resp.status_code,
                                 background=BackgroundTask(resp.aclose))
    response.raw_headers = out_headers
    return response


async def _relay(resp: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    except httpx.HTTPError:
        log.info("upstream stream ended early")


async def forward_websocket(ws: WebSocket, url: str, headers: list[tuple[str, str]],
                            open_timeout: float = 10.0) -> None:
    """Pump frames both ways between the client and the upstream WebSocket."""
    subprotocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")
                    if p.strip()]
    try:
        upstream = await ws_connect(url, additional_headers=headers, open_timeout=open_timeout,
                                    subprotocols=subprotocols or None,  # type: ignore[arg-type]
                                    max_size=32 * 1024 * 1024)
    except (OSError, TimeoutError, Exception) as exc:  # noqa: BLE001 - any failure closes
        log.info("websocket upstream %s failed: %s", url, exc.__class__.__name__)
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
