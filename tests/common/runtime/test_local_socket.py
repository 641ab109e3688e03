"""A sandboxed server's unix socket beside its port (services/common/runtime/netns.py).

The endpoint connects to the server's abstract unix socket (``$SHIPYARD_HTTP_SOCKET``, a
shorter hop than loopback TCP) where the server listens on one, and to its TCP port where it
does not. The name is looked up in the workload's own network namespace: the same name bound
on the host, or by another workload, is never reached. Real sandboxes, real sockets.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from services.common.runtime import LocalRuntime, netns
from services.common.runtime.netns import local_socket_name
from services.serving.modelserver.__main__ import LOCAL_SOCKET_ENV
from tests.endpoints import endpoint_client

pytestmark = pytest.mark.timeout(60)

#: Answers every request with its label and which listener took it, then closes.
SERVER = r"""
import os, socket, sys, threading
label, unix = sys.argv[1], sys.argv[2] == "unix"
def serve(sock, answer):
    while True:
        conn, _ = sock.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%b"
                     % (len(answer), answer))
        conn.close()
if unix:
    name = os.environ["SHIPYARD_HTTP_SOCKET"]
    local = socket.socket(socket.AF_UNIX)
    local.bind("\0" + name[1:])
    local.listen(8)
    threading.Thread(target=serve, args=(local, (label + " unix").encode()), daemon=True).start()
serve(socket.create_server(("0.0.0.0", int(os.environ["PORT"]))), (label + " tcp").encode())
"""


def server(namespace: str, label: str, listens: str) -> dict[str, object]:
    return {
        "kind": "server",
        "namespace": namespace,
        "name": label,
        "command": ["python3", "-c", SERVER, label, listens],
        "readinessProbe": {"httpGet": {"path": "/"}},
    }


async def test_endpoint_takes_the_servers_own_unix_socket_and_nothing_else(
    tmp_path: Path,
) -> None:
    assert LOCAL_SOCKET_ENV == netns.LOCAL_SOCKET_ENV  # the model server reads what is set
    # The name every server on 8080 gets, bound on the host: a lookup outside the workload's
    # network namespace would find this one.
    host = socket.socket(socket.AF_UNIX)
    host.bind(local_socket_name(8080))
    host.listen(8)
    runtime = LocalRuntime(tmp_path)
    try:
        await runtime.apply(server("sock-a", "alpha", "unix"))
        await runtime.apply(server("sock-b", "beta", "tcp"))
        answers: dict[str, list[str]] = {}
        async with endpoint_client() as client:
            for name, namespace in (("alpha", "sock-a"), ("beta", "sock-b")):
                status = await runtime.wait(namespace, name, timeout=30, ready=True)
                assert status.endpoint is not None
                for _ in range(2):  # the second connection, after the endpoint remembered
                    r = await client.get(status.endpoint + "/", timeout=10)
                    answers.setdefault(name, []).append(r.text)
        assert answers == {"alpha": ["alpha unix"] * 2, "beta": ["beta tcp"] * 2}
        host.settimeout(0)
        with pytest.raises(BlockingIOError):
            host.accept()  # nobody came to the host's socket of that name
    finally:
        host.close()
        await runtime.stop_all()
        await runtime.close()
