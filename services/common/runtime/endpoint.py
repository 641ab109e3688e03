"""Opening a workload's endpoint, whatever runtime gave it.

A runtime hands out *opaque* endpoints (DESIGN.md, Runtime). Two forms exist:

``http://host:port``
    A server reachable over TCP (the kubernetes runtime's Service address).
``http+sandbox://<percent-encoded path of a unix socket>``
    A server inside a local sandbox. The sandbox has its own network namespace, so nothing on
    the host can connect to its port. Its supervisor (outside the sandbox, trusted) listens on
    a unix socket that only the platform's user may open; for every connection it makes a TCP
    socket *inside* the workload's network namespace, connects it to the server, and passes
    the connected descriptor back with ``SCM_RIGHTS``. The caller then speaks HTTP straight to
    the server: no process copies the bytes, so a pooled keep-alive connection costs nothing
    after its first request.

The broker's protocol is one byte each way: the client sends ``C``; the broker answers ``\\0``
with the descriptor attached, or ``E`` followed by a short UTF-8 reason and no descriptor.

Callers use :func:`open_socket` (asyncio) or :func:`connect` (blocking), and get a connected
``socket.socket`` either way; :func:`http_base` gives the base URL to put in a request line's
``Host``. Everything here is standard library only.
"""

from __future__ import annotations

import array
import asyncio
import socket
from urllib.parse import quote, unquote, urlsplit

SANDBOX_SCHEME = "http+sandbox"
REQUEST = b"C"
OK = b"\0"
ERROR = b"E"
_MAX_REASON = 512


class EndpointError(OSError):
    """The endpoint could not be opened (the workload is gone, not ready, or the URL is bad)."""


def sandbox_endpoint(socket_path: str) -> str:
    """The endpoint URL of a sandboxed server whose broker listens on ``socket_path``."""
    return f"{SANDBOX_SCHEME}://{quote(socket_path, safe='')}"


def parse(url: str) -> tuple[str, str, int]:
    """``("tcp", host, port)`` or ``("sandbox", socket_path, 0)``; EndpointError if neither."""
    parts = urlsplit(url)
    if parts.scheme == SANDBOX_SCHEME:
        path = unquote(parts.netloc)
        if not path.startswith("/"):
            raise EndpointError(f"endpoint {url!r}: the socket path must be absolute")
        return "sandbox", path, 0
    if parts.scheme == "http" and parts.hostname:
        return "tcp", parts.hostname, parts.port or 80
    raise EndpointError(f"unsupported endpoint {url!r} (http:// or {SANDBOX_SCHEME}://)")


def host_header(url: str) -> str:
    """What to send as ``Host`` to the server behind ``url``."""
    kind, host, port = parse(url)
    return "localhost" if kind == "sandbox" else f"{host}:{port}"


def _receive_socket(broker: socket.socket) -> socket.socket:
    """Finish the handshake on a connected broker socket: return the server's socket."""
    fds = array.array("i")
    msg, ancdata, flags, _ = broker.recvmsg(_MAX_REASON, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    received = [socket.socket(fileno=fd) for fd in fds]
    if msg[:1] != OK or len(received) != 1 or flags & socket.MSG_CTRUNC:
        for s in received:
            s.close()
        reason = msg[1:].decode(errors="replace") if msg[:1] == ERROR else "no socket received"
        raise EndpointError(f"the workload's endpoint refused the connection: {reason}")
    server = received[0]
    # Only a TCP stream socket is a server connection; anything else is not ours to use.
    if server.family not in (socket.AF_INET, socket.AF_INET6) or server.type != socket.SOCK_STREAM:
        server.close()
        raise EndpointError("the workload's endpoint passed something that is not a TCP socket")
    return server


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    """A blocking socket connected to the server behind ``url``."""
    kind, host, port = parse(url)
    if kind == "tcp":
        return socket.create_connection((host, port), timeout=timeout)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as broker:
        broker.settimeout(timeout)
        try:
            broker.connect(host)
            broker.sendall(REQUEST)
            server = _receive_socket(broker)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise EndpointError(f"the workload's endpoint is not there: {exc}") from None
    server.settimeout(timeout)
    return server


async def open_socket(url: str, timeout: float = 10.0) -> socket.socket:  # noqa: ASYNC109
    """A non-blocking socket connected to the server behind ``url`` (for asyncio transports)."""
    loop = asyncio.get_running_loop()
    kind, host, port = parse(url)
    if kind == "tcp":
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        last: OSError | None = None
        for family, type_, proto, _, address in infos:
            sock = socket.socket(family, type_, proto)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
            except BaseException:
                sock.close()
                raise
        raise last or EndpointError(f"cannot resolve {host!r}")
    broker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    broker.setblocking(False)
    try:
        try:
            await asyncio.wait_for(loop.sock_connect(broker, host), timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise EndpointError(f"the workload's endpoint is not there: {exc}") from None
        await loop.sock_sendall(broker, REQUEST)
        readable = loop.create_future()
        loop.add_reader(broker.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await asyncio.wait_for(readable, timeout)
        finally:
            loop.remove_reader(broker.fileno())
        server = _receive_socket(broker)
    finally:
        broker.close()
    server.setblocking(False)
    return server
