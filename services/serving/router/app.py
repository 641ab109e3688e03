"""The router's HTTP app, raw ASGI: ``POST`` anywhere runs the graph, ``GET /readyz`` is
the readiness probe (as KServe's router). The gateway forwards ``/graphs/{ns}/{name}/...``
with its full path; the router does not care which path under it was asked."""

from __future__ import annotations

import json
import logging

from starlette.types import Receive, Scope, Send

from .engine import GraphRouter, Reply

log = logging.getLogger(__name__)

#: The largest request a graph takes (as the model server's).
MAX_BODY = 64 * 1024 * 1024
READY_PATH = "/readyz"


class RouterApp:
    def __init__(self, router: GraphRouter, max_body: int = MAX_BODY) -> None:
        self.router = router
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method in ("GET", "HEAD") and path.endswith(READY_PATH):
            await _send(send, Reply(200, b'{"ready":true}'))
            return
        if method != "POST":
            message = {"error": f"method {method} not allowed: POST a request to the graph"}
            await _send(send, Reply(405, json.dumps(message).encode()))
            return
        body = await _read(receive, self.max_body)
        if body is None:
            message = {"error": f"request body over {self.max_body} bytes"}
            await _send(send, Reply(413, json.dumps(message).encode()))
            return
        await _send(send, await self.router.route(body))


async def _read(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(send: Send, reply: Reply) -> None:
    headers: list[tuple[bytes, bytes]] = [(b"content-length", str(len(reply.body)).encode())]
    if _is_json(reply.body):
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = dict(await receive())
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
