"""Opening workload endpoints (``runtime.endpoint``) and the httpx transport over them.

Every test goes over real sockets: a real HTTP server (the standard library's, in a thread)
and a real fd broker (``tests.endpoints.FdBroker``) that passes connected TCP sockets with
``SCM_RIGHTS``, as a sandbox's supervisor does.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from services.common.runtime import endpoint
from tests.endpoints import FdBroker, Mode, assert_endpoint, endpoint_client, open_fds


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.connections = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.address = ("127.0.0.1", int(self.server_address[1]))


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every GET with what it received: target and Host (keep-alive, HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    server: EchoServer

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"target": self.path, "host": self.headers.get("host")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def server() -> Iterator[EchoServer]:
    srv = EchoServer()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


# ---- URLs ------------------------------------------------------------------------------


def test_sandbox_endpoint_round_trips_whatever_a_url_library_does_to_the_host() -> None:
    path = "/tmp/State Dir/Team-A/nb.sock"
    url = endpoint.sandbox_endpoint(path)
    assert endpoint.parse(url) == ("sandbox", path, 0)
    # RFC 3986: a host is case-insensitive, and httpx lower-cases it. The path must survive.
    assert endpoint.parse(url.lower()) == ("sandbox", path, 0)
    assert endpoint.parse(str(httpx.URL(url + "/api/x"))) == ("sandbox", path, 0)


@pytest.mark.parametrize(
    "url",
    ["https://example.com", "http+sandbox://relative.sock", "http://h:99999", "/just/a/path"],
)
def test_parse_bad_endpoint_is_endpoint_error(url: str) -> None:
    with pytest.raises(endpoint.EndpointError):
        endpoint.parse(url)


def test_host_header_names_the_server_as_it_expects() -> None:
    assert endpoint.host_header("http://10.0.0.7:8888/x") == "10.0.0.7:8888"
    assert endpoint.host_header("http://[::1]:8888") == "[::1]:8888"
    assert endpoint.host_header(endpoint.sandbox_endpoint("/run/a.sock")) == "localhost"


# ---- opening a socket ------------------------------------------------------------------


async def settles(read: Callable[[], int], want: int, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while read() != want:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def exchange(sock: socket.socket) -> bytes:
    sock.setblocking(True)
    sock.settimeout(5)
    sock.sendall(b"GET /raw HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


async def test_open_socket_through_broker_reaches_the_server(server: EchoServer) -> None:
    with FdBroker(server.address) as broker:
        sock = await endpoint.open_socket(broker.url, timeout=5)
        with sock:
            assert sock.family == socket.AF_INET and not sock.getblocking()
            assert b'"target": "/raw"' in exchange(sock)
        with endpoint.connect(broker.url, timeout=5) as blocking:
            assert b'"target": "/raw"' in exchange(blocking)
        assert broker.requests == 2


async def test_open_socket_plain_http_endpoint(server: EchoServer) -> None:
    with await endpoint.open_socket(server.url, timeout=5) as sock:
        assert b"200 OK" in exchange(sock)


async def test_open_socket_broker_refusal_carries_its_reason(server: EchoServer) -> None:
    with FdBroker(server.address, "refuse", reason="workload nb is not running") as broker:
        with pytest.raises(endpoint.EndpointRefused) as info:
            await endpoint.open_socket(broker.url, timeout=5)
    assert info.value.reason == "workload nb is not running"


@pytest.mark.parametrize("mode", ["pipe", "datagram", "listening"])
async def test_open_socket_refuses_what_is_not_a_connected_stream_socket(
    server: EchoServer, mode: Mode
) -> None:
    with FdBroker(server.address, mode) as broker:
        before = open_fds()
        with pytest.raises(endpoint.EndpointError) as info:
            await endpoint.open_socket(broker.url, timeout=5)
        assert not isinstance(info.value, endpoint.EndpointRefused)
        with pytest.raises(endpoint.EndpointError):
            endpoint.connect(broker.url, timeout=5)
        # The descriptor it was passed is closed, not leaked (the in-process broker may
        # still be closing its own copy for a moment).
        assert await settles(open_fds, before)
    assert (
        "not a socket" in str(info.value)
        or "not a stream" in str(info.value)
        or (mode == "listening" and "unconnected" in str(info.value))
    )


async def test_open_socket_missing_broker_is_endpoint_error() -> None:
    with pytest.raises(endpoint.EndpointError, match="not there"):
        await endpoint.open_socket(endpoint.sandbox_endpoint("/tmp/no-such-broker.sock"))


async def test_open_socket_silent_broker_times_out(server: EchoServer) -> None:
    with FdBroker(server.address, "silent") as broker:
        with pytest.raises(TimeoutError):
            await endpoint.open_socket(broker.url, timeout=0.3)


# ---- the httpx transport ---------------------------------------------------------------


async def test_transport_reaches_server_through_sandbox_endpoint(server: EchoServer) -> None:
    with FdBroker(server.address) as broker:
        async with endpoint_client(timeout=5) as client:
            for i in range(3):
                r = await client.get(f"{broker.url}/notebook/ns/nb/api/status?i={i}")
                assert r.status_code == 200
                assert r.json() == {
                    "target": f"/notebook/ns/nb/api/status?i={i}",
                    "host": "localhost",
                }
        # One socket from the broker served all three: the connection was kept alive.
        assert broker.requests == 1 and server.connections == 1


async def test_transport_plain_http_endpoint(server: EchoServer) -> None:
    async with endpoint_client(timeout=5) as client:
        r = await client.get(f"{server.url}/api/status")
    assert r.json() == {"target": "/api/status", "host": server.url.removeprefix("http://")}


async def test_transport_refused_is_connect_error_with_reason(server: EchoServer) -> None:
    with FdBroker(server.address, "refuse", reason="workload nb is not running") as broker:
        async with endpoint_client(timeout=5) as client:
            with pytest.raises(httpx.ConnectError, match="workload nb is not running"):
                await client.get(f"{broker.url}/api/status")


async def test_transport_broker_passing_a_pipe_is_connect_error(server: EchoServer) -> None:
    with FdBroker(server.address, "pipe") as broker:
        async with endpoint_client(timeout=5) as client:
            with pytest.raises(httpx.ConnectError, match="not a socket"):
                await client.get(f"{broker.url}/api/status")


def test_assert_endpoint_accepts_both_forms_only() -> None:
    assert_endpoint("http://127.0.0.1:8888")
    assert_endpoint(endpoint.sandbox_endpoint("/run/x.sock"))
    with pytest.raises(endpoint.EndpointError):
        assert_endpoint("/notebook/ns/nb/")
