"""``EndpointTransport``: httpx requests to a workload's endpoint, whichever form it has.

A service that calls a workload itself (the notebook culler asks Jupyter for its kernels)
is given the workload's opaque endpoint (``services.common.runtime.endpoint``) and appends a
path: ``http://10.0.0.7:8888/api/kernels`` or ``http+sandbox://%2F...%2Fbroker.sock/api/kernels``.
httpx speaks neither ``http+sandbox`` nor a broker, so this transport does:

* ``http://`` goes to httpx's own transport unchanged (no environment proxies: an endpoint
  is never reached through one);
* ``http+sandbox://`` goes to an httpcore connection pool whose network backend opens each
  connection with ``endpoint.open_socket`` (the broker hands back a socket connected inside
  the sandbox), and is plain HTTP/1.1 from then on, keep-alive included. The server is told
  ``Host: localhost`` (``endpoint.host_header``).

It lives beside ``endpoint`` rather than in it so that ``endpoint`` stays standard library
only: the gateway, which has its own HTTP client, never imports httpx through it.

    async with httpx.AsyncClient(transport=EndpointTransport(), timeout=5) as client:
        await client.get(f"{status.endpoint}/api/status")
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import typing
from collections.abc import AsyncIterator, Iterable, Iterator

import httpcore
import httpx

from . import endpoint

# httpcore's errors as httpx's (each has the same name in both), most specific first (httpx
# does the same for its transport).
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = tuple(
    (getattr(httpcore, error), getattr(httpx, error))
    for error in (
        "ConnectTimeout",
        "ReadTimeout",
        "WriteTimeout",
        "PoolTimeout",
        "TimeoutException",
        "ConnectError",
        "ReadError",
        "WriteError",
        "NetworkError",
        "UnsupportedProtocol",
        "LocalProtocolError",
        "RemoteProtocolError",
        "ProtocolError",
    )
)


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _EXCEPTIONS:
            if isinstance(exc, core):
                raise mapped(str(exc) or core.__name__, request=request) from exc
        raise


class _SocketStream(httpcore.AsyncNetworkStream):
    """An httpcore stream over a connected, non-blocking socket (asyncio only)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                return await loop.sock_recv(self._sock, max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("reading from the workload timed out") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_sendall(self._sock, buffer)
        except TimeoutError:
            raise httpcore.WriteTimeout("writing to the workload timed out") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._sock.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("a sandboxed endpoint is plain HTTP")

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "socket":
            return self._sock
        if info == "is_readable":
            # httpcore asks this of an idle kept-alive connection: readable means the server
            # closed it (or sent junk), so it must not be reused.
            if self._sock.fileno() < 0:
                return True
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(0))
        return None


class _SandboxBackend(httpcore.AsyncNetworkBackend):
    """Connects to ``http+sandbox://<host>``: httpcore's origin host is the encoded socket
    path, exactly as it appears in the endpoint URL."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        url = f"{endpoint.SANDBOX_SCHEME}://{host}"
        try:
            sock = await endpoint.open_socket(url, 10.0 if timeout is None else timeout)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"opening {url} timed out") from None
        except OSError as exc:  # EndpointError (and a refusal's reason) included
            raise httpcore.ConnectError(str(exc)) from exc
        return _SocketStream(sock)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("a sandboxed endpoint is reached through its broker")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


class EndpointTransport(httpx.AsyncBaseTransport):
    """httpx transport for workload endpoints: ``http://`` and ``http+sandbox://`` alike."""

    def __init__(self, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._tcp = httpx.AsyncHTTPTransport(limits=limits)
        self._sandbox = httpcore.AsyncConnectionPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_SandboxBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != endpoint.SANDBOX_SCHEME:
            return await self._tcp.handle_async_request(request)
        try:
            host = endpoint.host_header(str(url))
        except endpoint.EndpointError as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from None
        headers = [(b"Host", host.encode())]
        headers += [(k, v) for k, v in request.headers.raw if k.lower() != b"host"]
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=b"http", host=url.raw_host, port=None, target=url.raw_path),
            headers=headers,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors(request):
            response = await self._sandbox.handle_async_request(core_request)
        assert isinstance(response.stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream, request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._sandbox.aclose()
        await self._tcp.aclose()
