"""The proxy's upstream HTTP/1.1 client against real TCP servers speaking raw HTTP.

The servers here are real asyncio sockets scripted byte by byte, because the cases under
test (chunk timing, a kept-alive connection closed between requests, HEAD with a
Content-Length but no body) are about exactly what goes over the wire. A sandboxed server's
``http+sandbox://`` endpoint is served by a real fd broker (``tests.endpoints.FdBroker``),
for the pool, the proxy's 502 and the WebSocket proxy alike.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import Message, Scope
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import InvalidStatus

from gateway.errors import GatewayError
from gateway.proxy import forward_http, forward_websocket
from gateway.upstream import UpstreamError, UpstreamPool, UpstreamRefused, UpstreamTimeout
from tests.conftest import free_port, serve_app
from tests.endpoints import FdBroker, Mode

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """A TCP server; ``handler(reader, writer, connection_number)`` runs per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await asyncio.wait_for(self.handler(reader, writer, self.connections), 20)
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One request: (request line, lower-cased headers, body), de-chunking if needed."""
    head = await reader.readuntil(b"\r\n\r\n")
    line, *rest = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in rest if ":" in h)}
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return line, headers, body


def ok(body: bytes = b"ok", extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n").encode() + body


async def keep_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int
) -> None:
    while True:
        line, _, _ = await read_request(reader)
        writer.write(ok(line.split()[1].encode()))
        await writer.drain()


async def read_all(
    pool: UpstreamPool, method: str, url: str, target: bytes = b"/", **kwargs: object
) -> tuple[int, bytes]:
    resp = await pool.request(method, url, target, [], **kwargs)  # type: ignore[arg-type]
    try:
        return resp.status, b"".join([c async for c in resp.iter_body()])
    finally:
        resp.close()


async def test_request_keep_alive_reuses_one_connection() -> None:
    pool = UpstreamPool()
    async with RawServer(keep_answering) as server:
        for i in range(5):
            assert await read_all(pool, "GET", server.url, f"/x{i}?q=1".encode()) == (
                200,
                f"/x{i}?q=1".encode(),
            )
        assert server.connections == 1 and pool.connections_opened == 1
    await pool.aclose()


async def test_one_connection_parses_answers_of_every_framing_in_turn() -> None:
    """The connection's parser goes on from one answer to the next (it is reused after a
    whole message): chunked, Content-Length, 204 and chunked again, each read exactly."""
    answers = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n0\r\n\r\n",
        ok(b"two"),
        b"HTTP/1.1 204 No Content\r\nx-n: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nfour\r\n0\r\n\r\n",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        for answer in answers:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()

    pool = UpstreamPool(read_timeout=2)
    async with RawServer(handler) as server:
        seen = [await read_all(pool, "GET", server.url) for _ in answers]
        assert seen == [(200, b"one"), (200, b"two"), (204, b""), (200, b"four")]
        assert server.connections == 1
    await pool.aclose()


async def test_request_chunked_response_streams_each_chunk_as_it_arrives() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()  # the rest only after the client has seen the first chunk
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        await read_request(reader)
        writer.write(ok())

    pool = UpstreamPool(read_timeout=5)
    async with RawServer(handler) as server:
        resp = await pool.request("GET", server.url, b"/watch", [])
        assert resp.status == 200
        assert ("transfer-encoding", "chunked") in [
            (k.decode(), v.decode()) for k, v in resp.headers
        ]
        assert await resp.read_chunk() == b"first"
        release.set()
        assert await resp.read_chunk() == b"second"
        assert await resp.read_chunk() is None
        resp.close()
        assert await read_all(pool, "GET", server.url) == (200, b"ok")
        assert server.connections == 1  # a fully read chunked response keeps the connection
    await pool.aclose()


async def test_request_large_upload_streams_without_buffering() -> None:
    first_bytes_seen = asyncio.Event()
    received = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        nonlocal received
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"content-length: 16777216" in head.lower()
        while received < 16 * 1024 * 1024:
            received += len(await reader.read(65536))
            first_bytes_seen.set()
        writer.write(ok(str(received).encode()))
        await writer.drain()

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 65536
        # A client that buffered the body would deadlock here: the server only sees bytes
        # once they are sent, and this generator only goes on once the server saw some.
        await asyncio.wait_for(first_bytes_seen.wait(), 5)
        for _ in range(255):
            yield b"b" * 65536

    pool = UpstreamPool(read_timeout=10)
    async with RawServer(handler) as server:
        status, text = await read_all(
            pool, "PUT", server.url, b"/upload", body=body(), content_length=16 * 1024 * 1024
        )
    assert (status, text) == (200, str(16 * 1024 * 1024).encode())
    await pool.aclose()


async def test_request_chunked_upload_when_length_unknown() -> None:
    seen: list[tuple[dict[str, str], bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        _, headers, body = await read_request(reader)
        seen.append((headers, body))
        writer.write(ok())

    async def body() -> AsyncIterator[bytes]:
        for part in (b"one,", b"", b"two"):
            yield part

    pool = UpstreamPool()
    async with RawServer(handler) as server:
        assert await read_all(pool, "POST", server.url, body=body()) == (200, b"ok")
    headers, sent = seen[0]
    assert headers["transfer-encoding"] == "chunked" and sent == b"one,two"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    await pool.aclose()


async def test_request_connection_refused_is_upstream_error() -> None:
    pool = UpstreamPool(connect_timeout=2)
    with pytest.raises(UpstreamError) as info:
        await pool.request("GET", f"http://127.0.0.1:{free_port()}", b"/", [])
    assert not isinstance(info.value, UpstreamTimeout)
    await pool.aclose()


async def test_request_head_has_no_body_and_keeps_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        line, _, _ = await read_request(reader)
        assert line.startswith("HEAD ")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")  # and no body
        line, _, _ = await read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await read_request(reader)
        writer.write(ok(b"after"))

    pool = UpstreamPool(read_timeout=2)
    async with RawServer(handler) as server:
        resp = await pool.request("HEAD", server.url, b"/", [])
        assert resp.status == 200 and dict(resp.headers)[b"content-length"] == b"1000"
        assert await resp.read_chunk() is None
        resp.close()
        assert await read_all(pool, "DELETE", server.url) == (204, b"")
        assert await read_all(pool, "GET", server.url) == (200, b"after")
        assert server.connections == 1
    await pool.aclose()


def close_on_second_request(answered: list[str]) -> Handler:
    """Answers the first request of each connection, then closes without answering."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        line, _, _ = await read_request(reader)
        answered.append(line)
        writer.write(ok())
        await writer.drain()
        await read_request(reader)
        writer.transport.abort()

    return handler


async def test_request_kept_alive_connection_closed_is_retried_once_for_get() -> None:
    answered: list[str] = []
    pool = UpstreamPool()
    async with RawServer(close_on_second_request(answered)) as server:
        assert await read_all(pool, "GET", server.url, b"/a") == (200, b"ok")
        assert await read_all(pool, "GET", server.url, b"/b") == (200, b"ok")
        assert server.connections == 2
    assert [line.split()[1] for line in answered] == ["/a", "/b"]
    await pool.aclose()


async def test_request_kept_alive_connection_closed_is_not_retried_for_post() -> None:
    answered: list[str] = []
    pool = UpstreamPool()
    async with RawServer(close_on_second_request(answered)) as server:
        assert await read_all(pool, "POST", server.url, b"/a", body=b"{}") == (200, b"ok")
        with pytest.raises(UpstreamError):
            await read_all(pool, "POST", server.url, b"/b", body=b"{}")
        assert server.connections == 1  # no second attempt
    await pool.aclose()


async def test_request_long_running_response_frees_its_slot() -> None:
    """A watch stream leaves its endpoint's request limit; every other request still counts."""
    end_stream = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        line, _, _ = await read_request(reader)
        if "/watch" in line:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await end_stream.wait()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return
        await asyncio.sleep(0.05)
        writer.write(ok())
        await writer.drain()

    pool = UpstreamPool(connect_timeout=0.3, read_timeout=5, max_connections_per_host=1)
    async with RawServer(handler) as server:
        watch = await pool.request("GET", server.url, b"/watch", [])
        with pytest.raises(UpstreamTimeout, match="too many concurrent"):
            await pool.request("GET", server.url, b"/other", [])  # the watch holds the slot
        watch.long_running()
        watch.long_running()  # idempotent: releases the slot once
        assert await read_all(pool, "GET", server.url) == (200, b"ok")
        end_stream.set()
        assert await watch.read_chunk() == b"first"
        assert await watch.read_chunk() is None
        watch.close()  # gives back no slot a second time: the limit is still one request
        held = await pool.request("GET", server.url, b"/held", [])
        with pytest.raises(UpstreamTimeout, match="too many concurrent"):
            await pool.request("GET", server.url, b"/other", [])
        held.close()
    await pool.aclose()


async def test_request_silent_upstream_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    pool = UpstreamPool(read_timeout=0.3)
    async with RawServer(handler) as server:
        with pytest.raises(UpstreamTimeout):
            await pool.request("GET", server.url, b"/", [])
    await pool.aclose()


async def test_request_body_until_close_and_connection_close_are_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:  # HTTP/1.0 style: no length, the body ends with the connection
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil-eof")
            await writer.drain()
            writer.close()
        else:
            writer.write(ok(b"fresh"))

    pool = UpstreamPool()
    async with RawServer(handler) as server:
        assert await read_all(pool, "GET", server.url) == (200, b"until-eof")
        assert await read_all(pool, "GET", server.url) == (200, b"fresh")
        assert server.connections == 2
    await pool.aclose()


async def test_request_truncated_response_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly-this")
        await writer.drain()
        writer.transport.abort()

    pool = UpstreamPool(read_timeout=2)
    async with RawServer(handler) as server:
        with pytest.raises(UpstreamError):
            await read_all(pool, "GET", server.url)
    await pool.aclose()


# ---- sandboxed endpoints (http+sandbox://, through a broker) ------------------------------


async def test_request_through_sandbox_endpoint_keeps_alive() -> None:
    seen: list[tuple[str, str]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        while True:
            line, headers, _ = await read_request(reader)
            seen.append((line.split()[1], headers["host"]))
            writer.write(ok(line.split()[1].encode()))
            await writer.drain()

    pool = UpstreamPool()
    async with RawServer(handler) as server:
        with FdBroker(("127.0.0.1", server.port)) as broker:
            base = f"{broker.url}/notebook/ns/nb"
            for i in range(3):
                assert await read_all(pool, "GET", base, f"/x{i}".encode()) == (
                    200,
                    f"/notebook/ns/nb/x{i}".encode(),
                )
            # One socket from the broker carried all three: pooled like any other endpoint.
            assert broker.requests == 1 and server.connections == 1
            assert pool.idle_connections(base) == 1
    assert seen == [(f"/notebook/ns/nb/x{i}", "localhost") for i in range(3)]
    await pool.aclose()


async def test_request_broker_refusal_is_upstream_refused_with_reason() -> None:
    pool = UpstreamPool(connect_timeout=2)
    with FdBroker(("127.0.0.1", free_port()), "refuse", reason="workload nb has stopped") as broker:
        with pytest.raises(UpstreamRefused, match="workload nb has stopped"):
            await pool.request("GET", broker.url, b"/", [])
    await pool.aclose()


@pytest.mark.parametrize("mode", ["pipe", "datagram", "listening"])
async def test_request_broker_passing_no_stream_socket_is_refused(mode: Mode) -> None:
    pool = UpstreamPool(connect_timeout=2)
    with FdBroker(("127.0.0.1", free_port()), mode) as broker:
        with pytest.raises(UpstreamError) as info:
            await pool.request("GET", broker.url, b"/", [])
    assert not isinstance(info.value, UpstreamRefused | UpstreamTimeout)
    assert (
        "not a socket" in str(info.value)
        or "not a stream" in str(info.value)
        or ("unconnected" in str(info.value))
    )
    await pool.aclose()


async def test_request_silent_broker_times_out() -> None:
    pool = UpstreamPool(connect_timeout=0.3)
    with FdBroker(("127.0.0.1", free_port()), "silent") as broker:
        with pytest.raises(UpstreamTimeout):
            await pool.request("GET", broker.url, b"/", [])
    await pool.aclose()


def http_scope(path: str) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
    }


async def never_receive() -> Message:
    raise AssertionError("a GET without body reads nothing")


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (
            "refuse",
            "upstream unavailable: the workload's endpoint refused the connection: "
            "notebook team-a/nb is stopped",
        ),
        ("pipe", "upstream unavailable"),  # the details stay in the gateway's log
    ],
)
async def test_forward_http_broker_failure_is_502(mode: Mode, message: str) -> None:
    sent: list[Message] = []

    async def send(msg: Message) -> None:
        sent.append(msg)

    pool = UpstreamPool(connect_timeout=2)
    with FdBroker(("127.0.0.1", free_port()), mode, reason="notebook team-a/nb is stopped") as b:
        with pytest.raises(GatewayError) as info:
            await forward_http(pool, http_scope("/x"), never_receive, send, b.url, [], 1024)
    assert (info.value.code, info.value.message) == (502, message)
    assert sent == []
    await pool.aclose()


async def test_forward_websocket_through_sandbox_endpoint() -> None:
    """A real WebSocket server behind a broker, reached through ``forward_websocket`` served
    by uvicorn, as the gateway serves a notebook's kernel channels."""

    async def upstream_ws(conn: ServerConnection) -> None:
        assert conn.request is not None
        await conn.send(
            json.dumps({"path": conn.request.path, "host": conn.request.headers["Host"]})
        )
        async for message in conn:
            assert isinstance(message, str)
            await conn.send(f"echo:{message}")

    async with ws_serve(upstream_ws, "127.0.0.1", 0) as upstream:
        port = upstream.sockets[0].getsockname()[1]
        with FdBroker(("127.0.0.1", port)) as broker:

            async def front(ws: WebSocket) -> None:
                query = f"?{ws.url.query}" if ws.url.query else ""
                await forward_websocket(ws, broker.url + ws.url.path + query, [("x-test", "1")])

            front_port = free_port()
            server, task = await serve_app(
                Starlette(routes=[WebSocketRoute("/{path:path}", front)]), front_port
            )
            try:
                url = f"ws://127.0.0.1:{front_port}/notebook/ns/nb/api/kernels/k1/channels?s=1"
                async with ws_connect(url, open_timeout=5) as ws:
                    hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    assert hello == {
                        "path": "/notebook/ns/nb/api/kernels/k1/channels?s=1",
                        "host": "localhost",
                    }
                    await ws.send("ping")
                    assert await asyncio.wait_for(ws.recv(), 5) == "echo:ping"
                assert broker.requests == 1
                broker.mode, broker.reason = "refuse", "notebook ns/nb is stopped"
                with pytest.raises(InvalidStatus):  # closed before accept: the handshake fails
                    async with ws_connect(url, open_timeout=5):
                        pass
            finally:
                server.should_exit = True
                await asyncio.wait_for(task, 10)
