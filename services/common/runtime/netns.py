"""The supervisor's side of a sandbox's network: sockets made inside, forwarded outside.

A sandboxed workload has its own network namespace holding only a loopback. Nothing on the
host can connect into it and nothing inside can connect out. The supervisor (outside, trusted)
bridges exactly two things, without running any code of ours inside the sandbox:

* **egress**: the platform API. A short-lived *agent*, forked from the supervisor, joins the
  workload's network namespace (``setns``), creates listening sockets there (e.g.
  ``127.0.0.2:18080``) and passes them back over a socketpair (``SCM_RIGHTS``). A socket keeps
  the namespace it was made in, so the supervisor can accept on it from the host and connect
  each accepted connection to the gateway on the host. The workload cannot reach any other
  host address: there is no route.
* **ingress**: a server's port. For servers the agent stays, and makes a fresh TCP socket in
  the namespace whenever the supervisor asks. The supervisor connects it to the server's port
  (loopback inside) and hands the connected socket to whoever asked on the workload's
  endpoint socket (endpoint.py has the client side), or uses it for the readiness probe.

Standard library only, imported by the supervisor by path (it runs with ``-I -S``).
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading
import time

# Loaded once, by the supervisor while bubblewrap builds the sandbox, so the forked agent
# pays nothing for it.
_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
NS_GET_USERNS = 0xB701
RELAY_CHUNK = 256 * 1024
_REQUEST = b"C"
_OK = b"\0"
_ERROR = b"E"


class AgentError(Exception):
    """The agent could not enter the namespace or make a socket there."""


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _enter(pid: int) -> None:
    """Join the network namespace of ``pid`` (and, unprivileged, the user namespace owning it).

    Root has CAP_SYS_ADMIN over every namespace and joins the network namespace directly. An
    unprivileged platform owns the sandbox's user namespace (it created it), so it may join
    that first, which grants it the capability over the network namespace.
    """
    netfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(netfd, CLONE_NEWNET)
            return
        except PermissionError:
            pass
        import fcntl

        userfd = fcntl.ioctl(netfd, NS_GET_USERNS)
        try:
            _setns(userfd, CLONE_NEWUSER)
        finally:
            os.close(userfd)
        _setns(netfd, CLONE_NEWNET)
    finally:
        os.close(netfd)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    end = time.monotonic() + 2.0
    while True:  # bubblewrap brings the loopback up itself, a moment after the namespace exists
        try:
            sock.bind((host, port))
            break
        except OSError:
            if time.monotonic() > end:
                sock.close()
                raise
            time.sleep(0.001)
    sock.listen(128)
    return sock


def _agent_main(pid: int, control: socket.socket, listen: list[tuple[str, int]], stay: bool) -> int:
    try:
        _enter(pid)
        listeners = [_listen(host, port) for host, port in listen]
    except OSError as exc:
        control.sendall(_ERROR + str(exc).encode()[:400])
        return 1
    socket.send_fds(control, [_OK], [s.fileno() for s in listeners])
    for s in listeners:
        s.close()
    while stay:
        try:
            request = control.recv(1)
        except OSError:
            return 0
        if not request:
            return 0
        fresh = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            socket.send_fds(control, [_OK], [fresh.fileno()])
        except OSError:
            return 0
        finally:
            fresh.close()
    return 0


class Agent:
    """The forked helper in a workload's network namespace (see the module docstring)."""

    def __init__(self, pid: int, listen: list[tuple[str, int]], stay: bool) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pid = os.fork()
        if self.pid == 0:  # the agent: never returns into the supervisor
            code = 1
            try:
                parent.close()
                code = _agent_main(pid, child, listen, stay)
            finally:
                os._exit(code)
        child.close()
        self.control = parent
        self.control.settimeout(5.0)
        msg, fds, _, _ = socket.recv_fds(self.control, 512, max(1, len(listen)))
        if msg[:1] != _OK:
            for fd in fds:
                os.close(fd)
            self.close()
            raise AgentError(msg[1:].decode(errors="replace") or "the agent exited")
        self.listeners = [socket.socket(fileno=fd) for fd in fds]
        self.stay = stay
        if not stay:
            self.close()

    def new_socket(self) -> socket.socket:
        """A fresh, unconnected TCP socket inside the workload's network namespace."""
        self.control.sendall(_REQUEST)
        msg, fds, _, _ = socket.recv_fds(self.control, 16, 1)
        if msg[:1] != _OK or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise AgentError("the network agent is gone")
        return socket.socket(fileno=fds[0])

    def connect(self, port: int, timeout: float = 2.0) -> socket.socket:
        """A socket connected to ``127.0.0.1:port`` inside the namespace."""
        sock = self.new_socket()
        sock.settimeout(timeout)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        try:
            self.control.close()
        finally:
            if self.pid:
                try:
                    os.waitpid(self.pid, 0)
                except ChildProcessError:
                    pass
                self.pid = 0


# -- forwarding -------------------------------------------------------------------------------


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(RELAY_CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def relay(inside: socket.socket, target: tuple[str, int]) -> None:
    """Forward one accepted connection to ``target`` on the host, in two daemon threads."""
    try:
        outside = socket.create_connection(target, timeout=5.0)
    except OSError as exc:
        sys.stderr.write(f"egress to {target[0]}:{target[1]} failed: {exc}\n")
        inside.close()
        return
    outside.settimeout(None)
    inside.settimeout(None)

    def both() -> None:
        t = threading.Thread(target=_pump, args=(outside, inside), daemon=True)
        t.start()
        _pump(inside, outside)
        t.join()
        inside.close()
        outside.close()

    threading.Thread(target=both, daemon=True).start()


def serve_endpoint(conn: socket.socket, agent: Agent | None, port: int | None) -> None:
    """Answer one client of the workload's endpoint socket (endpoint.py's protocol)."""
    conn.settimeout(2.0)
    try:
        if conn.recv(1) != _REQUEST:
            return
        if agent is None or port is None:
            conn.sendall(_ERROR + b"the workload is not running")
            return
        try:
            server = agent.connect(port)
        except (OSError, AgentError) as exc:
            conn.sendall(_ERROR + f"cannot connect to the server's port {port}: {exc}".encode())
            return
        try:
            socket.send_fds(conn, [_OK], [server.fileno()])
        finally:
            server.close()
    except OSError:
        pass
    finally:
        conn.close()


def probe_http(agent: Agent, port: int, path: str | None, timeout: float) -> bool:
    """The readiness probe, inside the namespace: a TCP connect, or an HTTP GET under 400."""
    try:
        sock = agent.connect(port, timeout)
    except (OSError, AgentError):
        return False
    if not path:
        sock.close()
        return True
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.sock = sock
    try:
        conn.request("GET", path, headers={"User-Agent": "shipyard-probe"})
        return 200 <= conn.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
