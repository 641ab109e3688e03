"""A small keep-alive HTTP/1.1 client (h11 on asyncio streams) that sends each request in
one write.

Why not httpx: httpcore writes a request's head and body in two ``send`` calls. Out of a
local sandbox, the supervisor's egress relay forwards each on a socket without
``TCP_NODELAY``, so Nagle's algorithm holds the body until the gateway acknowledges the head,
which its delayed ACK does only after ~40 ms: every step of a graph paid that (a one-step
graph answered in ~46 ms where the InferenceService itself took ~7 ms). One write per request
keeps head and body in one segment on every hop.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import h11

#: Idle connections kept to the gateway (a graph's steps run concurrently in Ensembles).
MAX_IDLE = 64
READ_CHUNK = 256 * 1024


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)

    def close(self) -> None:
        self.writer.close()


class StaleConnection(Exception):
    """A kept-alive connection the server had closed before the request was sent."""


class KeepAliveClient:
    """POSTs to one ``http://host:port`` base with a pool of kept-alive connections."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{base_url!r}: an http://host[:port] URL is needed")
        self.host, self.port = parts.hostname, parts.port or 80
        self.authority = parts.netloc
        self.prefix = parts.path.rstrip("/")
        self._idle: list[_Connection] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(status, body) of one POST; OSError or h11's errors when the exchange fails."""
        while self._idle:
            conn = self._idle.pop()
            try:
                return await self._exchange(conn, path, body, headers)
            except StaleConnection:
                continue  # closed while idle (the server's keep-alive timeout): next one
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            return await self._exchange(_Connection(reader, writer), path, body, headers)
        except StaleConnection:
            raise ConnectionResetError("the gateway closed the connection") from None

    async def _exchange(
        self, conn: _Connection, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        fields = [
            ("host", self.authority),
            ("content-length", str(len(body))),
            *headers.items(),
        ]
        request = h11.Request(method="POST", target=self.prefix + path, headers=fields)
        data = conn.h11.send(request) or b""
        data += conn.h11.send(h11.Data(data=body)) or b""
        data += conn.h11.send(h11.EndOfMessage()) or b""
        status, chunks, answered = 0, [], False
        try:
            conn.writer.write(data)  # head and body in one write: see the module docstring
            await conn.writer.drain()
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    try:
                        received = await conn.reader.read(READ_CHUNK)
                    except ConnectionResetError:
                        received = b""
                    if not received and not answered:
                        raise StaleConnection  # nothing came back: the request was not served
                    conn.h11.receive_data(received)
                elif isinstance(event, h11.Response):
                    status, answered = event.status_code, True
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionResetError("the gateway closed the connection")
        except BaseException:
            conn.close()
            raise
        self._keep(conn)
        return status, b"".join(chunks)

    def _keep(self, conn: _Connection) -> None:
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            with contextlib.suppress(h11.LocalProtocolError):
                conn.h11.start_next_cycle()
                if len(self._idle) < MAX_IDLE:
                    self._idle.append(conn)
                    return
        conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
