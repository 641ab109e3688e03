"""Reaching a workload's endpoint from a test, whichever form the runtime gave it.

A runtime's endpoints are opaque (DESIGN.md, Runtime): ``http://host:port`` or a sandboxed
server's ``http+sandbox://`` broker. Tests call a workload through :func:`endpoint_client`
and check an endpoint's form with :func:`assert_endpoint`, never by its prefix.

:class:`FdBroker` is a real broker, as a sandbox's supervisor runs one: a unix socket that
answers each ``C`` with a TCP socket connected to a server, passed with ``SCM_RIGHTS``. It
can also refuse (``E<reason>``) or pass what a broker must not (a pipe, a datagram socket, a
listening socket), so the client side's checks can be tested.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal

import httpx

from services.common.runtime import endpoint
from services.common.runtime.endpoint_http import EndpointTransport

Mode = Literal["tcp", "refuse", "pipe", "datagram", "listening", "silent"]


def endpoint_client(**kwargs: Any) -> httpx.AsyncClient:
    """An httpx client that reaches any workload endpoint: ``client.get(endpoint + path)``."""
    return httpx.AsyncClient(transport=EndpointTransport(), **kwargs)


def assert_endpoint(url: object) -> str:
    """``url``, checked to be an endpoint a runtime may hand out (either form)."""
    assert isinstance(url, str) and url, f"no endpoint: {url!r}"
    endpoint.parse(url)  # raises EndpointError for anything else
    return url


class FdBroker:
    """A sandbox broker on a unix socket, serving ``target`` (host, port) in a thread.

    ``mode`` says how it answers: ``tcp`` (a connected TCP socket, the normal case),
    ``refuse`` (``E`` + ``reason``), ``pipe``, ``datagram``, ``listening`` (descriptors a client
    must refuse), ``silent`` (accepts and never answers). ``requests`` counts connections.
    """

    def __init__(self, target: tuple[str, int], mode: Mode = "tcp", reason: str = "") -> None:
        self.target = target
        self.mode: Mode = mode
        self.reason = reason
        self.requests = 0
        # A short directory with upper-case letters: unix socket paths are limited to 107
        # bytes, and the URL must keep the path's case whatever a URL library does to hosts.
        self._dir = Path(tempfile.mkdtemp(prefix="Brk-", dir="/tmp"))
        self.path = str(self._dir / "Broker.sock")
        self.url = endpoint.sandbox_endpoint(self.path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fd-broker", daemon=True)
        self._held: list[socket.socket] = []

    def __enter__(self) -> FdBroker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for s in self._held:
            s.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            with client:
                client.settimeout(5)
                if client.recv(1) != endpoint.REQUEST:
                    continue
                self.requests += 1
                self._answer(client)

    def _answer(self, client: socket.socket) -> None:
        if self.mode == "refuse":
            client.sendall(endpoint.ERROR + self.reason.encode())
        elif self.mode == "silent":
            self._held.append(client.dup())  # kept open, never answered
        elif self.mode == "tcp":
            with socket.create_connection(self.target, timeout=5) as server:
                socket.send_fds(client, [endpoint.OK], [server.fileno()])
        elif self.mode == "pipe":
            read_end, write_end = os.pipe()
            try:
                socket.send_fds(client, [endpoint.OK], [read_end])
            finally:
                os.close(read_end)
                os.close(write_end)
        elif self.mode == "datagram":
            left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            with left, right:
                socket.send_fds(client, [endpoint.OK], [left.fileno()])
        elif self.mode == "listening":
            with socket.socket() as listening:
                listening.bind(("127.0.0.1", 0))
                listening.listen(1)
                socket.send_fds(client, [endpoint.OK], [listening.fileno()])


def open_fds() -> int:
    """How many descriptors this process has open (to show that nothing leaked)."""
    return len(os.listdir("/proc/self/fd"))
