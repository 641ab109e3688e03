"""The HTTP/1.1 server protocol of the gateway and the model server: uvicorn's httptools
protocol, writing each response in as few socket writes as it can.

uvicorn writes a response's head as soon as the app sends ``http.response.start`` and the
body on ``http.response.body``: two ``send`` calls and, with ``TCP_NODELAY``, two segments
for every small proxied answer (a V2 inference result), so the client wakes up twice too.
``CoalescingTransport`` gathers what the protocol writes in one turn of the event loop and
hands it to the socket at the end of that turn, in one write. Order is kept, nothing waits
longer than the current turn, and flow control is the socket transport's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport wrapper that joins the writes of one event-loop turn into one.

    Everything but writing and closing is the wrapped transport's. Once the connection is
    handed to another protocol (a WebSocket upgrade), writes go straight through.
    """

    __slots__ = ("_transport", "_loop", "_pending", "_direct")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None
        self._direct = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._direct:
            self._transport.write(data)
            return
        if self._pending is None:
            self._pending = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def write_now(self, data: bytes) -> None:
        """Write ``data`` at once, after anything pending: a whole response made in one
        piece (gateway/inference_lane.py), where the end of the turn would only add latency."""
        self.flush()
        if not self._transport.is_closing():
            self._transport.write(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        # A connection lost meanwhile (the client left) takes nothing more; uvloop would
        # raise from this callback, where nobody could handle it.
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def is_closing(self) -> bool:  # asked on every request: not through __getattr__
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        pending = sum(len(p) for p in self._pending) if self._pending else 0
        return self._transport.get_write_buffer_size() + pending

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._direct = True
        self._transport.set_protocol(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)  # type: ignore[arg-type]
