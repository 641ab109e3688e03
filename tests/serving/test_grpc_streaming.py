"""gateway/grpc_server.py's streaming calls at the HTTP/2 level: flow control and limits.

tests/serving/test_grpc.py calls ModelStreamInfer with tritonclient through the real
platform; what a well-behaved client never shows is checked here, with an h2 client talking
to one GRPCProtocol in this process (its transport a buffer): a client that sends faster
than the handler takes messages is held by the stream's flow-control window (the connection's
stays open, so a unary call beside it is answered), and a message over the limit ends the
stream with RESOURCE_EXHAUSTED after the answers before it. Then InferenceService's stream
handler alone, its model server replaced: answers in order, a bounded number in flight.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from gateway.grpc_server import (
    MAX_QUEUED_MESSAGES,
    RECEIVE_WINDOW,
    Call,
    GRPCProtocol,
    StreamHandler,
)

STREAM = "/test.Svc/Stream"
UNARY = "/test.Svc/Unary"


class BufferTransport(asyncio.Transport):
    """What the server writes, kept for the client to read."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


def message(payload: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(payload).to_bytes(4, "big") + payload


class Client:
    """An h2 client connection wired to a GRPCProtocol."""

    def __init__(self, handler: StreamHandler, max_message_bytes: int = 32 << 20) -> None:
        async def unary(call: Call) -> bytes:
            return b"pong:" + call.message

        self.server = GRPCProtocol(unary, max_message_bytes, {STREAM: handler})
        self.transport = BufferTransport()
        self.server.connection_made(self.transport)
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.initiate_connection()
        self.data: dict[int, bytearray] = {}
        self.trailers: dict[int, dict[str, str]] = {}
        self.ended: set[int] = set()

    def open(self, path: str, *extra: tuple[str, str]) -> int:
        sid = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "test"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *extra,
        ]
        self.h2.send_headers(sid, headers)
        self.data[sid] = bytearray()
        return sid

    def send(self, sid: int, body: memoryview) -> memoryview:
        """Send what the windows allow of ``body``; the rest."""
        while body and (room := self.h2.local_flow_control_window(sid)) > 0:
            size = min(len(body), room, self.h2.max_outbound_frame_size)
            self.h2.send_data(sid, bytes(body[:size]))
            body = body[size:]
        return body

    async def settle(self) -> None:
        """Move bytes both ways, letting the server's tasks run, until nothing moves."""
        for _ in range(1000):
            moved = False
            if to_server := self.h2.data_to_send():
                self.server.data_received(to_server)
                moved = True
            for _ in range(5):
                await asyncio.sleep(0)
            if self.transport.out:
                to_client = bytes(self.transport.out)
                self.transport.out.clear()
                for event in self.h2.receive_data(to_client):
                    self.on_event(event)
                moved = True
            if not moved:
                return
        raise AssertionError("the connection never settled")

    def on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            self.data[event.stream_id] += event.data or b""
            self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
        elif isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            assert event.stream_id is not None
            self.trailers.setdefault(event.stream_id, {}).update(dict(event.headers))  # type: ignore[arg-type]
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            self.ended.add(event.stream_id)

    def messages(self, sid: int) -> list[bytes]:
        out, body = [], bytes(self.data[sid])
        while body:
            size = int.from_bytes(body[1:5], "big")
            out.append(body[5 : 5 + size])
            body = body[5 + size :]
        return out


async def test_stream_window_held_while_handler_is_behind() -> None:
    gate = asyncio.Event()
    taken: list[bytes] = []

    async def slow(call: Call, requests: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        async for request in requests:
            taken.append(request)
            await gate.wait()
            yield b"answer:" + request[:8]

    client = Client(slow)
    await client.settle()
    sid = client.open(STREAM)
    count, size = 64, 256 * 1024  # 16 MiB, four times the receive window
    payloads = [b"%08d" % i + bytes(size - 8) for i in range(count)]
    rest = memoryview(b"".join(message(p) for p in payloads))
    for _ in range(50):
        rest = client.send(sid, rest)
        await client.settle()
    # The handler has the first message; the server queued more until its queue was full,
    # then stopped reopening the stream's window: the client cannot send the rest. What
    # waits is what was let in before (a receive window) and the window the client held.
    assert len(taken) == 1
    queued = client.server.streams[sid]
    assert queued.full() and queued.queued >= MAX_QUEUED_MESSAGES
    assert queued.queued_bytes <= 2 * RECEIVE_WINDOW
    assert rest and client.h2.local_flow_control_window(sid) == 0
    assert queued.held > 0
    # The connection's window was given back: a unary call on it is answered meanwhile.
    assert client.h2.outbound_flow_control_window > 0
    ping = client.open(UNARY)
    client.send(ping, memoryview(message(b"x")))
    client.h2.end_stream(ping)
    await client.settle()
    assert client.messages(ping) == [b"pong:x"] and client.trailers[ping]["grpc-status"] == "0"
    # The handler catches up: the rest is sent, every answer comes, in order.
    gate.set()
    while rest:
        rest = client.send(sid, rest)
        await client.settle()
    client.h2.end_stream(sid)
    await client.settle()
    assert client.messages(sid) == [b"answer:" + p[:8] for p in payloads]
    assert sid in client.ended and client.trailers[sid]["grpc-status"] == "0"


async def test_stream_message_over_limit_after_answers() -> None:
    async def echo(call: Call, requests: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        async for request in requests:
            yield request

    client = Client(echo, max_message_bytes=1000)
    await client.settle()
    sid = client.open(STREAM, ("grpc-encoding", "gzip"))
    body = message(b"one") + message(gzip.compress(b"two"), flag=1)
    body += message(gzip.compress(bytes(5000)), flag=1) + message(b"never")
    client.send(sid, memoryview(body))
    client.h2.end_stream(sid)
    await client.settle()
    assert client.messages(sid) == [b"one", b"two"]
    trailers = client.trailers[sid]
    assert trailers["grpc-status"] == "8", trailers  # RESOURCE_EXHAUSTED
    assert "larger than 1000 bytes once decompressed" in trailers["grpc-message"]

    big = client.open(STREAM)  # over the limit by its length prefix: never read
    client.send(big, memoryview(message(b"ok") + bytes([0]) + (2000).to_bytes(4, "big")))
    await client.settle()
    assert client.messages(big) == [b"ok"] and client.trailers[big]["grpc-status"] == "8"
    assert "larger than 1000 bytes" in client.trailers[big]["grpc-message"]


async def test_stream_infer_bounded_in_flight_answers_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """InferenceService.stream_infer with the model server's part replaced: requests that
    finish out of order are answered in order, never more than MAX_IN_FLIGHT at once, and a
    request that does not parse is its own error_message."""
    from gateway import grpc_inference
    from services.common.eventspb.inference import grpc_predict_v2_pb2 as wire

    service = grpc_inference.InferenceService.__new__(grpc_inference.InferenceService)
    service.domain = "example.com"
    running, peak = 0, 0

    async def authorize(call: Call, namespace: str, name: str) -> None:
        assert (namespace, name) == ("grpc-a", "iris")

    async def answer(namespace: str, name: str, handler: Any, request: Any) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02 * (3 - int(request.id) % 3))  # later ones finish sooner
        running -= 1
        return wire.ModelInferResponse(model_name=request.model_name, id=request.id)

    monkeypatch.setattr(service, "authorize", authorize)
    monkeypatch.setattr(service, "answer", answer)

    async def requests() -> AsyncIterator[bytes]:
        for i in range(30):
            yield wire.ModelInferRequest(model_name="iris", id=str(i)).SerializeToString()
        yield b"\xff\xff"  # not a ModelInferRequest

    call = Call(STREAM, "iris.grpc-a.example.com", [], None)
    answers = [a async for a in service.stream_infer(call, requests())]
    expected = [
        grpc_inference.stream_response(
            wire.ModelInferResponse(model_name="iris", id=str(i)).SerializeToString()
        )
        for i in range(30)
    ]
    assert answers[:30] == expected
    error = b"the ModelInferRequest does not parse"
    assert answers[30] == b"\x0a" + bytes([len(error)]) + error  # error_message = 1
    assert 1 < peak <= grpc_inference.MAX_IN_FLIGHT, peak
