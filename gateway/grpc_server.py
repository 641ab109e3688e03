"""A small gRPC server over h2c (HTTP/2 without TLS, prior knowledge).

Why not grpcio's server: a gRPC call's ``:authority`` is how KServe routes inference by host
name (``{name}.{namespace}.{domain}``), and grpcio's servers do not show it to handlers (it is
neither in the invocation metadata nor in the handler call details). This module speaks the
gRPC wire protocol (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md) itself on
the ``h2`` state machine, and hands each call to an async handler with everything the
gateway routes and authenticates on: method, authority, metadata and peer. Only what the Open
Inference Protocol needs is served: unary calls (one request message in, one answer out) and
bidirectional streams (``ModelStreamInfer``: request messages handed to the handler as their
DATA frames complete them, answers sent as the handler yields them, the status in trailers).

Request messages may be compressed (``grpc-encoding: gzip`` or ``deflate``); any other
encoding is UNIMPLEMENTED, and every answer says ``grpc-accept-encoding``. Answers are sent
uncompressed (identity, which every client accepts). Messages are bounded: RESOURCE_EXHAUSTED
past the limit, checked on the length prefix before the body is read, and again while a
compressed one is inflated (never more than the limit is inflated, so a "zip bomb" costs the
limit, not its decompressed size). A ``grpc-timeout`` is honoured (DEADLINE_EXCEEDED), and
bytes are sent within HTTP/2 flow control. A stream's request messages wait for its handler
in a short queue: once that holds ``MAX_QUEUED_MESSAGES`` (or a receive window's worth of
bytes), the stream's flow-control window is not reopened until the handler takes one (the
connection's is, so the connection's other calls go on), so a client that sends faster than
its answers come is slowed, not buffered without end: about two receive windows wait at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from urllib.parse import quote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

log = logging.getLogger(__name__)

#: The receive window the server grants per stream and per connection (bytes): large enough
#: that a multi-megabyte tensor is not sent in 64 KiB round trips.
RECEIVE_WINDOW = 4 * 1024 * 1024
MAX_CONCURRENT_STREAMS = 256
#: A streaming call's request messages received but not yet taken by its handler, past which
#: the stream's window stays shut (the client waits; nothing is refused).
MAX_QUEUED_MESSAGES = 16
#: Metadata a handler never sees: HTTP/2 and gRPC protocol headers.
RESERVED = frozenset(
    {"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "user-agent"}
)
TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
#: The request encodings read, as zlib's ``wbits``: gRPC's "deflate" is the zlib format
#: (RFC 1950), "gzip" RFC 1952.
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
ACCEPT_ENCODING = b"identity,deflate,gzip"
#: Characters a grpc-message keeps as they are (the protocol percent-encodes the rest).
MESSAGE_SAFE = " !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"


class Code(IntEnum):
    """gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class GRPCError(Exception):
    """A call's failure, sent as its ``grpc-status`` and ``grpc-message``."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Call:
    """One call as it arrived."""

    method: str  # "/package.Service/Method"
    authority: str
    metadata: list[tuple[str, str]]  # lower-case keys; binary ("-bin") values as sent
    peer: tuple[str, int] | None
    message: bytes = b""  # a unary call's request message (decompressed); b"" for a stream


#: A unary call's handler: the serialized answer.
Handler = Callable[[Call], Awaitable[bytes]]
#: A streaming call's handler: given the request messages (decompressed) as they arrive, it
#: yields serialized answers; returning ends the call OK, a GRPCError ends it with that status.
StreamHandler = Callable[[Call, AsyncIterator[bytes]], AsyncGenerator[bytes, None]]
#: A request message still as sent: (compressed flag, payload).
_Message = tuple[int, bytes]


@dataclass
class _Stream:
    call: Call
    timeout: float | None
    encoding: str = "identity"
    body: bytearray = field(default_factory=bytearray)
    task: asyncio.Task[None] | None = None
    headers_sent: bool = False
    # Streaming calls only: messages for the handler (None ends them, a GRPCError breaks them),
    # how many and how large, and flow-controlled bytes not yet given back to the stream window.
    inbox: asyncio.Queue[_Message | GRPCError | None] | None = None
    queued: int = 0
    queued_bytes: int = 0
    held: int = 0
    broken: bool = False  # the rest of its request frames are read and dropped

    def full(self) -> bool:
        return self.queued >= MAX_QUEUED_MESSAGES or self.queued_bytes >= RECEIVE_WINDOW


def parse_timeout(value: str | None) -> float | None:
    """Seconds of a ``grpc-timeout`` header ("100m", "5S"), None when absent or malformed."""
    if not value or value[-1] not in TIMEOUT_UNITS or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * TIMEOUT_UNITS[value[-1]]


def frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message, uncompressed."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def decompress(payload: bytes, encoding: str, limit: int) -> bytes:
    """A compressed message's bytes, inflating at most ``limit`` + 1 of them: a message that
    inflates past ``limit`` is RESOURCE_EXHAUSTED having cost that much memory, whatever its
    claimed size."""
    inflater = zlib.decompressobj(ENCODINGS[encoding])
    try:
        data = inflater.decompress(payload, limit + 1)
    except zlib.error as exc:
        raise GRPCError(Code.INTERNAL, f"the {encoding} message does not inflate: {exc}") from None
    if len(data) > limit:
        raise GRPCError(
            Code.RESOURCE_EXHAUSTED,
            f"request message larger than {limit} bytes once decompressed ({encoding})",
        )
    if not inflater.eof:
        raise GRPCError(Code.INTERNAL, f"the {encoding} message is truncated")
    return data


@contextlib.contextmanager
def grpc_errors(method: str) -> Iterator[None]:
    """A call's failure as the GRPCError its client gets: a deadline, the handler's own
    status, or INTERNAL (logged here; the client learns nothing of the gateway's insides)."""
    try:
        yield
    except TimeoutError:
        raise GRPCError(Code.DEADLINE_EXCEEDED, "the call's deadline passed") from None
    except GRPCError:
        raise
    except Exception:
        log.exception("gRPC %s failed", method)
        raise GRPCError(Code.INTERNAL, "internal error in the gateway") from None


def status_headers(code: Code, message: str) -> list[tuple[bytes, bytes]]:
    """A call's status as trailers."""
    headers = [(b"grpc-status", str(int(code)).encode())]
    if message:
        headers.append((b"grpc-message", quote(message, safe=MESSAGE_SAFE).encode()))
    return headers


RESPONSE_HEADERS = [
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
    (b"grpc-accept-encoding", ACCEPT_ENCODING),
]


class GRPCProtocol(asyncio.Protocol):
    """One client connection: HTTP/2 frames in, one handler task per call."""

    def __init__(
        self,
        handler: Handler,
        max_message_bytes: int,
        stream_handlers: dict[str, StreamHandler] | None = None,
    ) -> None:
        self.handler = handler
        self.stream_handlers = stream_handlers or {}
        self.max_message_bytes = max_message_bytes
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.streams: dict[int, _Stream] = {}
        self.window_open = asyncio.Event()

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(RECEIVE_WINDOW - 65535)
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("gRPC connection from %s broke the HTTP/2 protocol: %s", self.peer, exc)
            self.flush()
            self.close()
            return
        for event in events:
            self.on_event(event)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for stream in self.streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self.streams.clear()
        self.window_open.set()
        self.transport = None

    # ---- HTTP/2 events ---------------------------------------------------------------------

    def on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.on_request(event.stream_id, event.headers or [])
        elif isinstance(event, h2.events.DataReceived):
            self.on_data(event.stream_id, event.data or b"", event.flow_controlled_length or 0)
        elif isinstance(event, h2.events.StreamEnded):
            self.on_end(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None and stream.task is not None:
                stream.task.cancel()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self.window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.close()

    def on_request(self, stream_id: int, raw: list[tuple[bytes, bytes]]) -> None:
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        plain = {k: v for k, v in headers if not k.startswith(":")}
        call = Call(
            method=pseudo.get(":path", ""),
            authority=pseudo.get(":authority") or plain.get("host", ""),
            metadata=[(k, v) for k, v in headers if not k.startswith(":") and k not in RESERVED],
            peer=self.peer,
        )
        encoding = plain.get("grpc-encoding", "identity").strip().lower()
        stream = _Stream(call, parse_timeout(plain.get("grpc-timeout")), encoding)
        self.streams[stream_id] = stream
        if pseudo.get(":method") != "POST" or not plain.get("content-type", "").startswith(
            "application/grpc"
        ):
            self.refuse(stream_id, Code.INTERNAL, "not a gRPC request (POST application/grpc)")
        elif encoding != "identity" and encoding not in ENCODINGS:
            self.refuse(
                stream_id,
                Code.UNIMPLEMENTED,
                f"grpc-encoding {encoding!r} is not supported: send identity, deflate or gzip",
            )
        elif (handler := self.stream_handlers.get(call.method)) is not None:
            stream.inbox = asyncio.Queue()
            stream.task = asyncio.get_running_loop().create_task(
                self.serve_stream(stream_id, stream, handler)
            )

    def on_data(self, stream_id: int, data: bytes, flow_length: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.inbox is None or stream.broken:
            self.h2.acknowledge_received_data(flow_length, stream_id)
            if stream is not None and stream.inbox is None:
                self.on_unary_data(stream_id, stream, data)
            return
        stream.body += data
        self.take_messages(stream)
        if not stream.full() or stream.broken:
            self.h2.acknowledge_received_data(flow_length, stream_id)
        elif flow_length:
            # The handler is behind: the connection gets its window back (other calls go
            # on), this stream's waits until the handler takes a message (``release``).
            stream.held += flow_length
            self.h2.increment_flow_control_window(flow_length)

    def on_unary_data(self, stream_id: int, stream: _Stream, data: bytes) -> None:
        stream.body += data
        if len(stream.body) >= 5:
            declared = int.from_bytes(stream.body[1:5], "big")
            if declared > self.max_message_bytes or len(stream.body) > 5 + declared:
                self.refuse(
                    stream_id,
                    Code.RESOURCE_EXHAUSTED,
                    f"request message larger than {self.max_message_bytes} bytes"
                    if declared > self.max_message_bytes
                    else "a unary call carries one request message",
                )

    def take_messages(self, stream: _Stream) -> None:
        """Queue the streaming call's complete request messages for its handler."""
        assert stream.inbox is not None
        body = stream.body
        while len(body) >= 5:
            declared = int.from_bytes(body[1:5], "big")
            if declared > self.max_message_bytes:
                stream.inbox.put_nowait(
                    GRPCError(
                        Code.RESOURCE_EXHAUSTED,
                        f"request message larger than {self.max_message_bytes} bytes",
                    )
                )
                stream.broken = True
                stream.body = bytearray()
                return
            if len(body) < 5 + declared:
                return
            stream.inbox.put_nowait((body[0], bytes(body[5 : 5 + declared])))
            stream.queued += 1
            stream.queued_bytes += declared
            del body[: 5 + declared]

    def on_end(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if stream.inbox is not None:
            if stream.body and not stream.broken:
                stream.inbox.put_nowait(
                    GRPCError(Code.INTERNAL, "the request stream ended inside a message")
                )
            stream.inbox.put_nowait(None)
            return
        body = stream.body
        if len(body) < 5 or len(body) != 5 + int.from_bytes(body[1:5], "big"):
            self.refuse(stream_id, Code.INTERNAL, "the request is not one gRPC message")
            return
        message = (body[0], bytes(body[5:]))
        stream.body = bytearray()
        stream.task = asyncio.get_running_loop().create_task(self.serve(stream_id, stream, message))

    # ---- request messages ----------------------------------------------------------------

    def unpack(self, stream: _Stream, message: _Message) -> bytes:
        """A request message's bytes, decompressed with the call's ``grpc-encoding``."""
        flag, payload = message
        if flag == 0:
            return payload
        if flag != 1 or stream.encoding == "identity":
            raise GRPCError(Code.INTERNAL, "a compressed message on a call without a grpc-encoding")
        return decompress(payload, stream.encoding, self.max_message_bytes)

    async def requests(self, stream_id: int, stream: _Stream) -> AsyncIterator[bytes]:
        """A streaming call's request messages, as the handler takes them."""
        assert stream.inbox is not None
        while (item := await stream.inbox.get()) is not None:
            if isinstance(item, GRPCError):
                raise item
            stream.queued -= 1
            stream.queued_bytes -= len(item[1])
            self.release(stream_id, stream)
            yield self.unpack(stream, item)

    def release(self, stream_id: int, stream: _Stream) -> None:
        """Reopen the stream's window held while its queue was full, once it is not."""
        if not stream.held or stream.full():
            return
        held, stream.held = stream.held, 0
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            self.h2.increment_flow_control_window(held, stream_id)
        self.flush()

    # ---- responses ---------------------------------------------------------------------------

    async def serve(self, stream_id: int, stream: _Stream, message: _Message) -> None:
        try:
            with grpc_errors(stream.call.method):
                stream.call.message = self.unpack(stream, message)
                async with asyncio.timeout(stream.timeout):
                    reply = await self.handler(stream.call)
            self.h2.send_headers(stream_id, RESPONSE_HEADERS)
            await self.send_body(stream_id, frame(reply))
            self.h2.send_headers(stream_id, status_headers(Code.OK, ""), end_stream=True)
        except GRPCError as exc:
            self.refuse(stream_id, exc.code, exc.message)
        except h2.exceptions.StreamClosedError:
            pass  # the client reset the call meanwhile
        finally:
            self.streams.pop(stream_id, None)
            self.flush()

    async def serve_stream(self, stream_id: int, stream: _Stream, handler: StreamHandler) -> None:
        """Run a streaming call: each answer the handler yields is sent as it comes, then the
        status (trailers-only when it failed before its first answer)."""
        code, message = Code.OK, ""
        try:
            with grpc_errors(stream.call.method):
                async with asyncio.timeout(stream.timeout):
                    replies = handler(stream.call, self.requests(stream_id, stream))
                    async with contextlib.aclosing(replies):
                        async for reply in replies:
                            if not stream.headers_sent:
                                self.h2.send_headers(stream_id, RESPONSE_HEADERS)
                                stream.headers_sent = True
                            await self.send_body(stream_id, frame(reply))
        except GRPCError as exc:
            code, message = exc.code, exc.message
        except h2.exceptions.StreamClosedError:
            self.streams.pop(stream_id, None)
            return  # the client reset the call meanwhile
        try:
            if stream.headers_sent:
                self.h2.send_headers(stream_id, status_headers(code, message), end_stream=True)
                self.stop_reading(stream_id)
            else:
                self.refuse(stream_id, code, message)
        except h2.exceptions.ProtocolError:
            pass  # the stream is closed already
        finally:
            self.streams.pop(stream_id, None)
            self.flush()

    async def send_body(self, stream_id: int, data: bytes) -> None:
        """Send ``data`` on the stream as flow control allows."""
        view = memoryview(data)
        while view:
            if self.transport is None or stream_id not in self.streams:
                raise h2.exceptions.StreamClosedError(stream_id)
            size = min(
                len(view),
                self.h2.local_flow_control_window(stream_id),
                self.h2.max_outbound_frame_size,
            )
            if size <= 0:
                self.window_open.clear()
                await self.window_open.wait()
                continue
            self.h2.send_data(stream_id, bytes(view[:size]))
            view = view[size:]
            self.flush()

    def refuse(self, stream_id: int, code: Code, message: str) -> None:
        """A trailers-only response: the call failed with ``code``."""
        self.streams.pop(stream_id, None)  # answered: the rest of its frames are ignored
        try:
            self.h2.send_headers(
                stream_id, RESPONSE_HEADERS + status_headers(code, message), end_stream=True
            )
        except h2.exceptions.ProtocolError:
            return  # the stream is closed or already answered
        self.stop_reading(stream_id)

    def stop_reading(self, stream_id: int) -> None:
        """After the status: a client still sending gets the stream reset (NO_ERROR)."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            state = self.h2.streams.get(stream_id)
            if state is not None and not state.closed:
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def start_server(
    handler: Handler,
    host: str,
    port: int,
    max_message_bytes: int,
    stream_handlers: dict[str, StreamHandler] | None = None,
) -> asyncio.Server:
    """Listen on ``host:port``: unary calls go to ``handler``, the methods (``/pkg.Svc/M``)
    of ``stream_handlers`` are streaming calls served by theirs."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: GRPCProtocol(handler, max_message_bytes, stream_handlers),
        host,
        port,
        reuse_address=True,
    )
