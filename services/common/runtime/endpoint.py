"""Opening a workload's endpoint, whatever runtime gave it.

A runtime hands out *opaque* endpoints (DESIGN.md, Runtime). Two forms exist:

``http://host:port``
    A server reachable over TCP (the kubernetes runtime's Service address).
``http+sandbox://<percent-encoded path of a unix socket>``
    A server inside a local sandbox. The sandbox has its own network namespace, so nothing on
    the host can connect to its port. Its supervisor (outside the sandbox, trusted) listens on
    a unix socket that only the platform's user may open; for every connection it makes a
    socket *inside* the workload's network namespace, connects it to the server (its TCP port,
    or the unix socket it listens on beside it: netns.py), and passes the connected
    descriptor back with ``SCM_RIGHTS``. The caller then speaks HTTP straight to
    the server: no process copies the bytes, so a pooled keep-alive connection costs nothing
    after its first request.

The broker's protocol is one byte each way: the client sends ``C``; the broker answers ``\\0``
with the descriptor attached, or ``E`` followed by a short UTF-8 reason and no descriptor.

Callers use :func:`open_socket` (asyncio) or :func:`connect` (blocking), and get a connected
``socket.socket`` either way; :func:`host_header` gives what to send as ``Host``. A broker's
refusal is :class:`EndpointRefused`, whose reason is the runtime's own and fit to show a user.
Everything here is standard library only (``endpoint_http`` adds an httpx transport).
"""

from __future__ import annotations

import array
import asyncio
import os
import socket
from urllib.parse import unquote, urlsplit

SANDBOX_SCHEME = "http+sandbox"
REQUEST = b"C"
OK = b"\0"
ERROR = b"E"
_MAX_REASON = 512
# Characters a sandbox endpoint's host keeps as they are. Upper-case letters are not among
# them: a URL's host is case-insensitive (RFC 3986 section 3.2.2) and URL libraries lower-case
# it (httpx does), so a socket path must survive that. ``%2F`` lower-cased still decodes.
_HOST_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-._~")


class EndpointError(OSError):
    """The endpoint could not be opened (the workload is gone, not ready, or the URL is bad)."""


class EndpointRefused(EndpointError):
    """The workload's broker answered, and refused: ``reason`` is its own words."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the workload's endpoint refused the connection: {reason}")
        self.reason = reason


def sandbox_endpoint(socket_path: str) -> str:
    """The endpoint URL of a sandboxed server whose broker listens on ``socket_path``."""
    host = "".join(chr(b) if b in _HOST_SAFE else f"%{b:02X}" for b in os.fsencode(socket_path))
    return f"{SANDBOX_SCHEME}://{host}"


def parse(url: str) -> tuple[str, str, int]:
    """``("tcp", host, port)`` or ``("sandbox", socket_path, 0)``; EndpointError if neither."""
    parts = urlsplit(url)
    if parts.scheme == SANDBOX_SCHEME:
        path = unquote(parts.netloc, errors="surrogateescape")  # sandbox_endpoint, reversed
        if not path.startswith("/"):
            raise EndpointError(f"endpoint {url!r}: the socket path must be absolute")
        return "sandbox", path, 0
    if parts.scheme == "http" and parts.hostname:
        try:
            return "tcp", parts.hostname, parts.port or 80
        except ValueError:  # a port out of range or not a number
            raise EndpointError(f"endpoint {url!r}: bad port") from None
    raise EndpointError(f"unsupported endpoint {url!r} (http:// or {SANDBOX_SCHEME}://)")


def host_header(url: str) -> str:
    """What to send as ``Host`` to the server behind ``url``.

    A sandboxed server is told ``localhost``: the name it listens under in its own network
    namespace, which servers that guard against DNS rebinding (Jupyter) accept.
    """
    kind, _, _ = parse(url)
    if kind == "sandbox":
        return "localhost"
    return urlsplit(url).netloc.rpartition("@")[2]  # as written: IPv6 keeps its brackets


def _receive_socket(broker: socket.socket) -> socket.socket:
    """Finish the handshake on a connected broker socket: return the server's socket."""
    fds = array.array("i")
    msg, ancdata, flags, _ = broker.recvmsg(_MAX_REASON, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if msg[:1] != OK or len(fds) != 1 or flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        if msg[:1] == ERROR:
            raise EndpointRefused(msg[1:].decode(errors="replace").strip() or "no reason given")
        raise EndpointError("the workload's endpoint passed no socket")
    try:
        server = socket.socket(fileno=fds[0])
    except OSError:  # not a socket at all (a pipe, a file): ENOTSOCK
        os.close(fds[0])
        raise EndpointError(
            "the workload's endpoint passed something that is not a socket"
        ) from None
    # Only a connected stream socket is a server connection: TCP, or the unix socket the
    # supervisor connected to the server inside its network namespace (netns.py,
    # local_socket_name); anything else (a datagram socket, a listening one) is not ours.
    families = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
    if server.family not in families or server.type != socket.SOCK_STREAM:
        server.close()
        raise EndpointError("the workload's endpoint passed a socket that is not a stream")
    try:
        server.getpeername()
    except OSError:  # ENOTCONN: a listening or never-connected socket
        server.close()
        raise EndpointError("the workload's endpoint passed an unconnected socket") from None
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
    """A non-blocking socket connected to the server behind ``url`` (for asyncio transports).

    ``timeout`` bounds the whole: resolving, connecting and the broker's answer.
    """
    loop = asyncio.get_running_loop()
    kind, host, port = parse(url)
    async with asyncio.timeout(timeout):
        if kind == "tcp":
            return await _open_tcp(loop, host, port)
        return await _open_sandbox(loop, host)


async def _open_tcp(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    try:  # an address literal needs no resolver (and no trip to the executor's thread)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, type_, proto, _, address in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
    raise last or EndpointError(f"cannot resolve {host!r}")


async def _open_sandbox(loop: asyncio.AbstractEventLoop, socket_path: str) -> socket.socket:
    broker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    broker.setblocking(False)
    try:
        try:
            await loop.sock_connect(broker, socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise EndpointError(f"the workload's endpoint is not there: {exc}") from None
        await loop.sock_sendall(broker, REQUEST)
        # The answer carries a descriptor, which only recvmsg can take: wait until readable.
        readable = loop.create_future()

        def on_readable() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(broker.fileno(), on_readable)
        try:
            await readable
        finally:
            loop.remove_reader(broker.fileno())
        server = _receive_socket(broker)
    finally:
        broker.close()
    server.setblocking(False)
    return server
