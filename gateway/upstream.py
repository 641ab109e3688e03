"""A lean HTTP/1.1 client for the proxy's hot path: keep-alive pools over asyncio protocols.

Why not httpx: on every proxied request httpx builds URL, Request and Response models, runs
its transport and connection-pool state machines and the h11 parser in Python; profiling put
about a third of the gateway's CPU there. The proxy needs much less: send bytes it already
has, parse the response head with ``httptools`` (llhttp in C, as uvicorn does) and relay body
chunks as they arrive. This module does exactly that:

* one ``UpstreamPool`` per gateway, one keep-alive pool per endpoint, bounded both in
  open connections and in idle ones, idle connections dropped before the upstream's own
  keep-alive timeout (uvicorn closes idle connections after 5 s);
* an endpoint is whatever the runtime hands out, ``http://host:port`` or a sandboxed
  server's ``http+sandbox://`` broker (``services.common.runtime.endpoint``): a connection
  starts as a socket from ``endpoint.open_socket``, and is plain HTTP/1.1 from then on, so
  a kept-alive connection into a sandbox costs the same as any other;
* request bodies are streamed (Content-Length when the caller knows it, else chunked,
  RFC 9112 section 7.1) with write flow control, so uploads are never buffered;
* response bodies are streamed chunk by chunk with read flow control (``pause_reading``
  above a high-water mark), so watch streams and log follows relay with bounded memory;
* HEAD and 1xx/204/304 responses carry no body (RFC 9110 section 6.4.1);
* a kept-alive connection the upstream closed before answering is retried once on a fresh
  connection, only for idempotent requests whose body can be replayed (RFC 9110 section
  9.2.2; the same rule browsers and httpcore follow);
* failures raise ``UpstreamError`` (502 for the proxy) or ``UpstreamTimeout`` (504);
  ``UpstreamRefused`` when a workload's broker refused, with its reason.

Measured against the libraries (bench/bench_gateway.py ``--stacks pool,httpx,aiohttp``, the
same proxy on each; docs/benchmarks.md, "Gateway client stacks"), this pool is kept. The
gateway's other HTTP calls are the control plane's: OIDC discovery, JWKS and the token
endpoint, the services' readiness and workload-run checks, the Kubernetes TokenReview. They
are few (most are cached), need TLS with a chosen CA, and are not on the proxy's path, so they
use httpx, and every httpx client of the gateway is made by :func:`control_client`, here.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from urllib.parse import urlsplit

import httptools
import httpx

from services.common.runtime import endpoint

from .same_head import SameHead

log = logging.getLogger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: A response declaring at most this many body bytes is handed over whole: the waiting
#: request wakes once, when it has all arrived (servers often write head and body apart).
SMALL_BODY = 64 * 1024
READ_HIGH_WATER = 256 * 1024
READ_LOW_WATER = 64 * 1024

Body = bytes | AsyncIterator[bytes] | None


class UpstreamError(Exception):
    """The upstream could not be reached or broke the protocol (the proxy answers 502)."""


class UpstreamTimeout(UpstreamError):
    """Connecting or waiting for the upstream took too long (the proxy answers 504)."""


class UpstreamRefused(UpstreamError):
    """A workload's broker refused the connection; the message is the runtime's reason, fit
    to show the client (it names no address), where other errors stay in the log."""


class _StaleConnection(UpstreamError):
    """A reused connection was closed by the upstream before any byte of a response."""


def control_client(
    timeout: float,
    *,
    connect_timeout: float | None = None,
    base_url: str = "",
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """The gateway's one httpx configuration, for its control-plane calls (never the proxy).

    Redirects are not followed (a control-plane answer is the answer; a redirect from an
    issuer or a service is an error, not somewhere to send the gateway's credentials).
    """
    return httpx.AsyncClient(
        base_url=base_url,
        verify=verify,
        timeout=httpx.Timeout(timeout, connect=connect_timeout or timeout),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        follow_redirects=False,
    )


@lru_cache(maxsize=1024)
def parse_base_url(base: str) -> tuple[str, bytes, bytes]:
    """``<endpoint>/prefix`` -> (endpoint, path prefix, Host header value).

    The endpoint (scheme and authority: ``http://host:port`` or ``http+sandbox://...``) is
    what a connection is opened to, and keys the pool.
    """
    parts = urlsplit(base)
    where = f"{parts.scheme}://{parts.netloc}"
    try:
        host = endpoint.host_header(where)
    except endpoint.EndpointError as exc:
        raise UpstreamError(str(exc)) from None
    return where, parts.path.rstrip("/").encode(), host.encode()


def _fail_waiter(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class _Connection(asyncio.Protocol):
    """One upstream connection: writes requests, parses responses as they arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        #: Called instead of waking a waiter, for a caller driven by callbacks rather than
        #: awaits (gateway/inference_lane.py); it reads the exchange's state itself.
        self.on_progress: Callable[[], None] | None = None
        self._parser_reusable = False
        #: The last lane answer's head (gateway/same_head.py) and what llhttp made of it:
        #: (memo, status, headers, keep-alive).
        self._same: tuple[SameHead, int, list[tuple[bytes, bytes]], bool] | None = None
        self._reset_exchange(head=False)

    def _reset_exchange(self, head: bool) -> None:
        # llhttp parses one message after the other on a kept-alive connection, as uvicorn
        # uses it: a new parser only when the last exchange did not end with a whole message
        # that llhttp saw end (a HEAD response, a failure, the first exchange).
        if not self._parser_reusable:
            self.parser = httptools.HttpResponseParser(self)
        self._parser_reusable = False
        self.head_request = head
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.hold_head = False
        self.message_done = False
        self.keep_alive = True
        self.received = 0
        self.until_eof = False
        self._interim = False
        self._has_length = False
        self._chunked = False
        self.content_length: int | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.error: BaseException | None = None

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        first = self.received == 0 and self.on_progress is not None and not self.head_request
        if first and self._same is not None and self._answer_same(data):
            return
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed upstream response: {exc}"))
            self.abort()
            return
        if first:
            self._remember_head(data)
        if self.head_request and self.head_done and not self.message_done:
            # llhttp cannot be told the request was HEAD: the head is the whole message.
            self.message_done = True
            self._wake()
        if self.buffered > READ_HIGH_WATER and not self._read_paused and self.transport:
            self._read_paused = True
            self.transport.pause_reading()

    def _answer_same(self, data: bytes) -> bool:
        """``data`` is a whole answer with the last one's head: taken as llhttp took that."""
        same, status, headers, keep_alive = self._same  # type: ignore[misc]
        length = same.body_length(data)
        if length < 0:
            return False
        self.received = len(data)
        self.status, self.headers, self.keep_alive = status, headers, keep_alive
        self._has_length = True
        self.content_length = length
        if length:
            self.chunks.append(data[len(data) - length :])
            self.buffered = length
        self.head_done = self.message_done = self._parser_reusable = True
        self._wake()
        return True

    def _remember_head(self, data: bytes) -> None:
        """After llhttp parsed ``data``, the first read of a lane answer: its head, if
        ``data`` was exactly one whole answer with a Content-Length body."""
        self._same = None
        if not (self.message_done and self._has_length and self.error is None):
            return
        if self.status < 200 or self.status in (204, 304) or self._chunked:
            return
        end = data.find(b"\r\n\r\n") + 4
        if end < 4 or end + (self.content_length or 0) != len(data):
            return
        same = SameHead.of(data[:end])
        if same is not None:
            self._same = (same, self.status, self.headers, self.keep_alive)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and not self.message_done and self.until_eof:
            self.message_done = True  # body delimited by close (RFC 9112 section 6.3 item 8)
        elif not self.message_done:
            self._fail(
                _StaleConnection("upstream closed the connection")
                if self.received == 0
                else UpstreamError("upstream closed the connection mid-response")
            )
        self.keep_alive = False
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # ---- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"content-length":
            self._has_length = True
            self.content_length = int(value) if value.isdigit() else None
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            self._chunked = True
        self.headers.append((lname, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            # An interim response (e.g. 100 Continue): its head is not the answer.
            self._interim = True
            self.headers = []
            self._has_length = self._chunked = False
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        no_body = self.head_request or status in (204, 304)
        self.until_eof = not (no_body or self._has_length or self._chunked)
        if self.until_eof:
            self.keep_alive = False
        self.head_done = True
        length = self.content_length
        # A small body still on its way: wake the reader once, with the message complete.
        self.hold_head = not no_body and length is not None and 0 < length <= SMALL_BODY
        if not self.hold_head:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if not self.hold_head:  # a held small body wakes the reader once, when it is whole
            self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.message_done = True
        self._parser_reusable = not self.head_request
        self._wake()

    # ---- waiting ---------------------------------------------------------------------------

    def _wake(self) -> None:
        if self.on_progress is not None:
            self.on_progress()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    async def _wait(self, seconds: float) -> None:
        fut = self.loop.create_future()
        self._waiter = fut
        handle = self.loop.call_later(
            seconds, _fail_waiter, fut, UpstreamTimeout("upstream timed out")
        )
        try:
            await fut
        finally:
            handle.cancel()
            self._waiter = None

    async def drain(self, seconds: float) -> None:
        if not self._write_paused or self.closed:
            return
        fut = self.loop.create_future()
        self._drain = fut
        handle = self.loop.call_later(
            seconds, _fail_waiter, fut, UpstreamTimeout("upstream stopped reading the body")
        )
        try:
            await fut
        finally:
            handle.cancel()
            self._drain = None

    # ---- the exchange ----------------------------------------------------------------------

    def start(self, head: bool) -> None:
        self._reset_exchange(head)

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise self.error or _StaleConnection("upstream connection is closed")
        self.transport.write(data)

    async def read_head(self, seconds: float) -> None:
        """Until the response head is here (and a small body with it: ``hold_head``)."""
        while not self.head_done or (self.hold_head and not self.message_done):
            if self.error is not None:
                raise self.error
            if self.closed:
                raise UpstreamError("upstream closed the connection")
            await self._wait(seconds)

    async def read_chunk(self, seconds: float) -> bytes | None:
        """The next body chunk, or None at the end of the message."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self._read_paused and self.buffered < READ_LOW_WATER and self.transport:
                    self._read_paused = False
                    self.transport.resume_reading()
                return chunk
            if self.message_done:
                return None
            if self.error is not None:
                raise self.error
            if self.closed:
                raise UpstreamError("upstream closed the connection mid-response")
            await self._wait(seconds)

    def take_body(self) -> bytes | None:
        """The whole body if it has already arrived (the common small response), else None."""
        if not self.message_done:
            return None
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        return body

    def reusable(self) -> bool:
        return (
            self.message_done
            and self.keep_alive
            and not self.closed
            and not self.chunks
            and self.error is None
        )

    def abort(self) -> None:
        """Drop the connection: gracefully after a finished exchange, else with a reset."""
        self.keep_alive = False
        if self.transport is not None and not self.closed:
            if self.message_done:
                self.transport.close()
            else:
                self.transport.abort()


class UpstreamResponse:
    """A response whose head has arrived; read the body, then ``close`` (always)."""

    __slots__ = ("status", "headers", "_conn", "_pool", "_key", "_read_timeout", "_done", "_slot")

    def __init__(
        self, conn: _Connection, pool: UpstreamPool, key: str, read_timeout: float
    ) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._conn = conn
        self._pool = pool
        self._key = key
        self._read_timeout = read_timeout
        self._done = False
        self._slot = True  # counted against the endpoint's max_connections_per_host

    def long_running(self) -> None:
        """Stop counting this response against its endpoint's limit of concurrent requests.

        A watch or a log follow holds its connection for minutes or hours. Counted, 512
        watches on one service left no slot for any other request to it: each waited
        ``connect_timeout`` and got a 504 (bench/bench_load.py). The Kubernetes API server
        likewise leaves long-running requests out of its max-requests-inflight limit.
        """
        if self._slot:
            self._slot = False
            self._pool._release_slot(self._key)

    def complete_body(self) -> bytes | None:
        """The whole body when it is already here (no waiting), else None: stream it."""
        return self._conn.take_body()

    async def small_body(self, limit: int) -> bytes | None:
        """The whole body if its declared length is at most ``limit``, else None: stream it.

        Servers often write the head and a small body in two sends; waiting for such a body
        costs one wake-up, where streaming it costs a disconnect watcher and two ASGI sends.
        """
        whole = self._conn.take_body()
        if whole is not None:
            return whole
        length = self._conn.content_length
        if length is None or length > limit:
            return None
        chunks = []
        while (chunk := await self.read_chunk()) is not None:
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_chunk(self) -> bytes | None:
        """The next body chunk (never empty), or None at the end; raises UpstreamError."""
        while True:
            chunk = await self._conn.read_chunk(self._read_timeout)
            if chunk is None or chunk:
                return chunk

    async def iter_body(self) -> AsyncIterator[bytes]:
        while (chunk := await self.read_chunk()) is not None:
            yield chunk

    def abort(self) -> None:
        """Drop the connection (e.g. the client went away mid-stream)."""
        self._conn.abort()

    def close(self) -> None:
        """Return the connection to the pool if the exchange finished cleanly, else drop it."""
        if self._done:
            return
        self._done = True
        self._pool._release(self._key, self._conn, slot=self._slot)


class _Slots:
    """How many more requests an endpoint may have in flight: a counting semaphore that can
    also be taken without waiting (``try_take``), for callers that never await."""

    __slots__ = ("free", "waiters")

    def __init__(self, n: int) -> None:
        self.free = n
        self.waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def take(self, seconds: float) -> None:
        """A slot, waiting up to ``seconds`` (UpstreamTimeout) behind earlier waiters."""
        if self.try_take():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            async with asyncio.timeout(seconds):
                await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self.release()  # handed over just as the wait ended: pass it on
            else:
                fut.cancel()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout("too many concurrent upstream requests") from None
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes to the first waiter, still taken
                return
        self.free += 1


class _HostPool:
    __slots__ = ("idle", "slots")

    def __init__(self, max_connections: int) -> None:
        self.idle: list[_Connection] = []
        self.slots = _Slots(max_connections)


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections per endpoint, shared by all proxied requests."""

    def __init__(
        self,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        max_connections_per_host: int = 512,
        max_idle_per_host: int = 128,
        idle_expiry: float = 4.0,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections_per_host = max_connections_per_host
        self.max_idle_per_host = max_idle_per_host
        self.idle_expiry = idle_expiry
        self._hosts: dict[str, _HostPool] = {}  # by endpoint
        self.connections_opened = 0  # for tests and metrics: how often keep-alive missed

    async def request(
        self,
        method: str,
        base_url: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Body = None,
        content_length: int | None = None,
    ) -> UpstreamResponse:
        """Send one request and return once the response head has arrived.

        ``target`` is the path and query (it is prefixed with the base URL's path);
        ``headers`` must not contain Host, Content-Length or Transfer-Encoding: they are
        set here. An iterator body is streamed with ``content_length`` if given, else
        chunked. The caller must ``close()`` the response.
        """
        key, prefix, host_header = parse_base_url(base_url)
        hp = self._hosts.get(key)
        if hp is None:
            hp = self._hosts[key] = _HostPool(self.max_connections_per_host)
        head = self.request_head(
            method, prefix + target, host_header, headers, body, content_length
        )
        replayable = method in IDEMPOTENT and not (body is not None and not isinstance(body, bytes))
        await hp.slots.take(self.connect_timeout)
        try:
            for attempt in (0, 1):
                conn, reused = await self._connect(key, hp)
                try:
                    conn.start(head=method == "HEAD")
                    await self._send(conn, head, body, content_length)
                    await conn.read_head(self.read_timeout)
                except _StaleConnection:
                    conn.abort()
                    if reused and attempt == 0 and replayable:
                        log.debug("kept-alive connection to %s was closed; retrying", key)
                        continue
                    raise UpstreamError("upstream closed the connection") from None
                except BaseException:
                    conn.abort()
                    raise
                return UpstreamResponse(conn, self, key, self.read_timeout)
            raise UpstreamError("unreachable")  # pragma: no cover - the loop returns or raises
        except BaseException:
            hp.slots.release()
            raise

    @staticmethod
    def request_head(
        method: str,
        target: bytes,
        host: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Body,
        content_length: int | None = None,
    ) -> bytes:
        """A request's head: ``target`` with the base path, Host, ``headers`` and framing."""
        lines = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        if isinstance(body, bytes):
            if body or method not in ("GET", "HEAD"):
                lines += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        elif body is not None:
            if content_length is not None:
                lines += (b"content-length: ", str(content_length).encode(), b"\r\n")
            else:
                lines.append(b"transfer-encoding: chunked\r\n")
        elif method in ("POST", "PUT", "PATCH"):
            lines.append(b"content-length: 0\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _send(
        self, conn: _Connection, head: bytes, body: Body, content_length: int | None
    ) -> None:
        if body is None or isinstance(body, bytes):
            conn.write(head + body if body else head)
            return
        conn.write(head)
        chunked = content_length is None
        sent = 0
        async for chunk in body:
            if conn.head_done:
                # The upstream answered before reading everything (e.g. an error): stop
                # sending, relay its answer, and never reuse this half-written connection.
                conn.keep_alive = False
                break
            if not chunk:
                continue
            sent += len(chunk)
            if content_length is not None and sent > content_length:
                raise UpstreamError("request body longer than its Content-Length")
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await conn.drain(self.read_timeout)
        else:
            if chunked:
                conn.write(b"0\r\n\r\n")
            elif content_length is not None and sent != content_length:
                raise UpstreamError("request body shorter than its Content-Length")

    def take_idle(self, base_url: str) -> tuple[_Connection, str] | None:
        """A kept-alive connection to ``base_url``'s endpoint with a request slot, without
        waiting, or None (no idle connection, or no free slot): then ``request`` it.

        The caller drives the exchange itself (``start``, ``write``, ``on_progress``) and
        must hand the connection back with ``_release(key, conn)``."""
        key = parse_base_url(base_url)[0]
        hp = self._hosts.get(key)
        if hp is None or not hp.idle or not hp.slots.try_take():
            return None
        conn = self._reuse(hp)
        if conn is None:
            hp.slots.release()
            return None
        return conn, key

    def _reuse(self, hp: _HostPool) -> _Connection | None:
        """The newest idle connection still open and young enough; stale ones are closed."""
        now = time.monotonic()
        idle = hp.idle
        while idle:
            conn = idle.pop()
            if (
                not conn.closed
                and conn.transport is not None
                and not conn.transport.is_closing()
                and now - conn.idle_since < self.idle_expiry
            ):
                return conn
            conn.abort()
        return None

    async def _connect(self, key: str, hp: _HostPool) -> tuple[_Connection, bool]:
        reused = self._reuse(hp)
        if reused is not None:
            return reused, True
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                sock = await endpoint.open_socket(key, self.connect_timeout)
                try:
                    _, proto = await loop.create_connection(lambda: _Connection(loop), sock=sock)
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            raise UpstreamTimeout(f"connecting to {key} timed out") from None
        except endpoint.EndpointRefused as exc:
            raise UpstreamRefused(str(exc)) from None
        except OSError as exc:  # EndpointError included
            raise UpstreamError(f"cannot connect to {key}: {exc}") from None
        self.connections_opened += 1
        return proto, False

    def _release_slot(self, key: str) -> None:
        hp = self._hosts.get(key)
        if hp is not None:
            hp.slots.release()

    def _release(self, key: str, conn: _Connection, slot: bool = True) -> None:
        conn.on_progress = None
        hp = self._hosts.get(key)
        if hp is None:
            conn.abort()
            return
        if slot:
            hp.slots.release()
        if conn.reusable() and len(hp.idle) < self.max_idle_per_host:
            conn.idle_since = time.monotonic()
            hp.idle.append(conn)
        else:
            conn.abort()

    def idle_connections(self, base_url: str) -> int:
        """How many kept-alive connections to ``base_url``'s endpoint wait for reuse."""
        hp = self._hosts.get(parse_base_url(base_url)[0])
        return len(hp.idle) if hp else 0

    async def aclose(self) -> None:
        hosts, self._hosts = self._hosts, {}
        for hp in hosts.values():
            for conn in hp.idle:
                conn.abort()
            hp.idle.clear()
