"""A small gRPC server for unary calls over h2c (HTTP/2 without TLS, prior knowledge).

Why not grpcio's server: a gRPC call's ``:authority`` is how KServe routes inference by host
name (``{name}.{namespace}.{domain}``), and grpcio's servers do not show it to handlers (it is
neither in the invocation metadata nor in the handler call details). This module speaks the
gRPC wire protocol (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md) itself on
the ``h2`` state machine, and hands each call to one async handler with everything the
gateway routes and authenticates on: method, authority, metadata, peer and the one request
message. Only what the Open Inference Protocol needs is served: unary calls, no compression
(a compressed message gets UNIMPLEMENTED). Messages are bounded (RESOURCE_EXHAUSTED past the
limit, checked on the length prefix before the body is read), a ``grpc-timeout`` is honoured
(DEADLINE_EXCEEDED), and response bytes are sent within HTTP/2 flow control.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
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
#: Metadata a handler never sees: HTTP/2 and gRPC protocol headers.
RESERVED = frozenset({"content-type", "te", "grpc-timeout", "grpc-encoding", "user-agent"})
TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


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
    """One unary call as it arrived."""

    method: str  # "/package.Service/Method"
    authority: str
    metadata: list[tuple[str, str]]  # lower-case keys; binary ("-bin") values as sent
    peer: tuple[str, int] | None
    message: bytes = b""


Handler = Callable[[Call], Awaitable[bytes]]


@dataclass
class _Stream:
    call: Call
    timeout: float | None
    body: bytearray = field(default_factory=bytearray)
    task: asyncio.Task[None] | None = None


def parse_timeout(value: str | None) -> float | None:
    """Seconds of a ``grpc-timeout`` header ("100m", "5S"), None when absent or malformed."""
    if not value or value[-1] not in TIMEOUT_UNITS or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * TIMEOUT_UNITS[value[-1]]


def frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message, uncompressed."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


class GRPCProtocol(asyncio.Protocol):
    """One client connection: HTTP/2 frames in, one handler task per call."""

    def __init__(self, handler: Handler, max_message_bytes: int) -> None:
        self.handler = handler
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
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.on_data(event.stream_id, event.data or b"")
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
        stream = _Stream(call, parse_timeout(plain.get("grpc-timeout")))
        self.streams[stream_id] = stream
        if pseudo.get(":method") != "POST" or not plain.get("content-type", "").startswith(
            "application/grpc"
        ):
            self.refuse(stream_id, Code.INTERNAL, "not a gRPC request (POST application/grpc)")
        elif plain.get("grpc-encoding", "identity") != "identity":
            self.refuse(stream_id, Code.UNIMPLEMENTED, "compressed messages are not supported")

    def on_data(self, stream_id: int, data: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
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

    def on_end(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        body = stream.body
        if len(body) < 5 or len(body) != 5 + int.from_bytes(body[1:5], "big"):
            self.refuse(stream_id, Code.INTERNAL, "the request is not one gRPC message")
            return
        if body[0] != 0:
            self.refuse(stream_id, Code.UNIMPLEMENTED, "compressed messages are not supported")
            return
        stream.call.message = bytes(body[5:])
        stream.body = bytearray()
        stream.task = asyncio.get_running_loop().create_task(self.serve(stream_id, stream))

    # ---- responses ---------------------------------------------------------------------------

    async def serve(self, stream_id: int, stream: _Stream) -> None:
        try:
            try:
                reply = await asyncio.wait_for(self.handler(stream.call), stream.timeout)
            except TimeoutError:
                raise GRPCError(Code.DEADLINE_EXCEEDED, "the call's deadline passed") from None
            except GRPCError:
                raise
            except Exception:
                log.exception("gRPC %s failed", stream.call.method)
                raise GRPCError(Code.INTERNAL, "internal error in the gateway") from None
            self.h2.send_headers(
                stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")]
            )
            await self.send_body(stream_id, frame(reply))
            self.h2.send_headers(stream_id, [(b"grpc-status", b"0")], end_stream=True)
        except GRPCError as exc:
            self.refuse(stream_id, exc.code, exc.message)
        except h2.exceptions.StreamClosedError:
            pass  # the client reset the call meanwhile
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
        headers = [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", str(int(code)).encode()),
            # Percent-encoded as the protocol says (non-ASCII and "%" are escaped).
            (b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()),
        ]
        try:
            self.h2.send_headers(stream_id, headers, end_stream=True)
        except h2.exceptions.ProtocolError:
            return  # the stream is closed or already answered
        with contextlib.suppress(h2.exceptions.ProtocolError):
            state = self.h2.streams.get(stream_id)
            if state is not None and not state.closed:
                # The client is still sending a message we will not read.
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def start_server(
    handler: Handler, host: str, port: int, max_message_bytes: int
) -> asyncio.Server:
    """Listen on ``host:port`` and serve every call with ``handler``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: GRPCProtocol(handler, max_message_bytes), host, port, reuse_address=True
    )
