"""The model server's HTTP/1.1 protocol: an inference request answered as its last byte
arrives, with no ASGI request cycle.

At concurrency 1 a V2 request for a scikit-learn model spends about as long in uvicorn's ASGI
machinery (the scope, a task, ``receive``, two ``send`` messages, the end-of-turn write) as
in ``predict``. When the request is a POST to this model's ``infer`` or ``:predict`` and its
answer needs no await (an inline model, no batcher: ``InferFastPath.answerer``), this
protocol keeps its body as llhttp hands it over and, on the last byte, computes the answer
and writes head and body to the socket in one write. Everything else goes the ASGI way,
unchanged: other paths and methods, a ``%``-escaped path, ``Expect: 100-continue``, an
upgrade, a request pipelined behind one still in the ASGI cycle, and any request while the
client is not reading its answers (the transport's buffer over its high-water mark).
tests/serving/test_modelserver_protocol.py checks both ways answer alike.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from services.common.http_server import CoalescingHttpProtocol, CoalescingTransport

from .fastpath import Answerer
from .handlers import MAX_BODY, TOO_LARGE, Answer, error

log = logging.getLogger(__name__)


class _NoEvent:
    """uvicorn sets its cycle's ``message_event`` when the connection goes: nobody waits."""

    __slots__ = ()

    def set(self) -> None:
        pass


class DirectRequest:
    """The request cycle's stand-in (uvicorn reads ``response_complete``, ``disconnected``,
    ``keep_alive`` and ``message_event``) for a request this protocol answers itself."""

    __slots__ = ("answer", "body", "size", "keep_alive", "response_complete", "disconnected")
    message_event = _NoEvent()

    def __init__(self, answer: Answerer, keep_alive: bool) -> None:
        self.answer = answer
        self.body: list[bytes] = []
        self.size = 0
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= MAX_BODY:
            self.body.append(chunk)
        else:
            self.body.clear()  # refused at the end; nothing more is kept


class ModelHttpProtocol(CoalescingHttpProtocol):
    """uvicorn's HTTP/1.1 protocol, coalescing writes, answering inference requests itself
    when it can (the module docstring says when)."""

    transport: CoalescingTransport  # type: ignore[assignment]

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.answerer = getattr(config.app, "answerer", None)

    def on_headers_complete(self) -> None:
        cycle = self.cycle
        if (
            self.answerer is not None
            and (cycle is None or cycle.response_complete)
            and not self.expect_100_continue
            and not self.flow.write_paused
            and not self.parser.should_upgrade()
        ):
            path = self.url.partition(b"?")[0]
            answer = self.answerer(self.parser.get_method(), path)
            if answer is not None:
                keep_alive = (
                    self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
                )
                self.cycle = DirectRequest(answer, keep_alive)  # type: ignore[assignment]
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is DirectRequest:
            cycle.add(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is DirectRequest:
            if not cycle.response_complete:
                self._answer(cycle)
            return
        super().on_message_complete()

    def _answer(self, cycle: DirectRequest) -> None:
        encoding, length = "", None
        for name, value in self.headers:
            if name == b"content-encoding":
                encoding = value.decode("latin-1")
            elif name == b"inference-header-content-length":
                length = value.decode("latin-1")
        if cycle.size > MAX_BODY:
            answer = TOO_LARGE
        else:
            body = cycle.body[0] if len(cycle.body) == 1 else b"".join(cycle.body)
            try:
                answer = cycle.answer(body, encoding, length)
            except Exception as exc:  # the handlers answer their own errors; this is a bug
                log.exception("answering an inference request failed")
                answer = error(f"internal error: {type(exc).__name__}", 500)
                cycle.keep_alive = False
        self.transport.write_now(self._head(answer, cycle.keep_alive) + answer.body)
        cycle.response_complete = True
        if cycle.keep_alive:
            self.on_response_complete()
        else:
            self.server_state.total_requests += 1
            self.transport.close()

    def _head(self, answer: Answer, keep_alive: bool) -> bytes:
        """The response head as uvicorn writes it for the ASGI way: its default headers (date,
        server), the answer's, ``connection: close`` when the connection ends."""
        parts = [STATUS_LINE[answer.status]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"content-type: ", answer.media_type.encode(), b"\r\n")
        parts.append(b"content-length: %d\r\n" % len(answer.body))
        for key, text in answer.headers.items():
            parts += (key.lower().encode(), b": ", text.encode(), b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)
