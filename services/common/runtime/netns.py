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
* **ingress**: a server's port. For servers the agent stays, and makes a fresh socket in
  the namespace whenever the supervisor asks. The supervisor connects it to the server's port
  (loopback inside) and hands the connected socket to whoever asked on the workload's
  endpoint socket (endpoint.py has the client side), or uses it for the readiness probe.
  A server may also listen on the unix socket :func:`local_socket_name` names beside its
  port (shipyard's model server does): the endpoint's connections then go there, a cheaper
  hop than loopback TCP (a round trip about 10 us shorter on the reference VM). Its name
  is abstract, and abstract names belong to a network namespace, so the lookup (made on a
  socket the agent created inside) finds only what the workload itself bound.

Standard library only, imported by the supervisor by path (it runs with ``-I -S``), and lean
for the same reason as the supervisor: every job waits for this module, so it uses the C
modules (``_socket``, ``_thread``, ``_ctypes``) rather than ``socket``, ``threading`` and
``ctypes``, which would add some 20 ms of imports to each trivial job.
"""

from __future__ import annotations

import _ctypes
import _socket
import _thread
import os
import sys
import time


class _Int(_ctypes._SimpleCData):  # type: ignore[name-defined,misc]
    _type_ = "i"


class _CFunction(_ctypes.CFuncPtr):  # type: ignore[name-defined,misc]
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO  # type: ignore[attr-defined]
    _restype_ = _Int


# Looked up once, by the supervisor while bubblewrap builds the sandbox, so the forked agent
# pays nothing for it.
_libc = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]
_setns_call = _CFunction(_ctypes.dlsym(_libc, "setns"))  # type: ignore[attr-defined]
Socket = _socket.socket
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
NS_GET_USERNS = 0xB701
RELAY_CHUNK = 256 * 1024
_REQUEST = b"C"  # the agent's protocol: a fresh TCP socket in the namespace
_REQUEST_LOCAL = b"L"  # a fresh unix socket in the namespace
_OK = b"\0"
_ERROR = b"E"


#: The variable that tells a sandboxed server :func:`local_socket_name`, written the way
#: ``ss`` prints an abstract name: ``@shipyard-http-<port>`` ("@" for the leading NUL).
LOCAL_SOCKET_ENV = "SHIPYARD_HTTP_SOCKET"


def local_socket_name(port: int) -> str:
    """The abstract unix socket a sandboxed server may listen on beside TCP ``port``, for the
    gateway's hop (see the module docstring)."""
    return f"\0shipyard-http-{port}"


class AgentError(Exception):
    """The agent could not enter the namespace or make a socket there."""


def _setns(fd: int, nstype: int) -> None:
    if _setns_call(fd, nstype) != 0:
        err = _ctypes.get_errno()  # type: ignore[attr-defined]
        raise OSError(err, os.strerror(err))


def send_fds(sock: Socket, message: bytes, fds: list[int]) -> None:
    """``socket.send_fds`` without the socket module."""
    data = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
    sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, data)] if fds else [])


def recv_fds(sock: Socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    """``socket.recv_fds`` without the socket module: (message, descriptors)."""
    msg, ancdata, _, _ = sock.recvmsg(size, _socket.CMSG_SPACE(4 * max_fds))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds += [
                int.from_bytes(data[i : i + 4], sys.byteorder, signed=True)
                for i in range(0, usable, 4)
            ]
    return msg, fds


def _accept(listener: Socket) -> Socket:
    fd, _ = listener._accept()  # type: ignore[attr-defined]
    return Socket(fileno=fd)


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


def join(netfd: int) -> None:
    """Move the calling (single-threaded, just forked) process into the network namespace
    ``netfd`` refers to: a workload group's shared network (supervision/group.py)."""
    _setns(netfd, CLONE_NEWNET)


def _listen(host: str, port: int, reuse_port: bool = False) -> Socket:
    sock = Socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    if reuse_port:  # a group's members each relay the same egress address (local_network.py)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
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


def _agent_main(
    pid: int, control: Socket, listen: list[tuple[str, int]], stay: bool, reuse_port: bool
) -> int:
    try:
        _enter(pid)
        listeners = [_listen(host, port, reuse_port) for host, port in listen]
    except OSError as exc:
        control.sendall(_ERROR + str(exc).encode()[:400])
        return 1
    send_fds(control, _OK, [s.fileno() for s in listeners])
    for s in listeners:
        s.close()
    while stay:
        try:
            request = control.recv(1)
        except OSError:
            return 0
        if not request:
            return 0
        family = _socket.AF_UNIX if request == _REQUEST_LOCAL else _socket.AF_INET
        fresh = Socket(family, _socket.SOCK_STREAM)
        try:
            send_fds(control, _OK, [fresh.fileno()])
        except OSError:
            return 0
        finally:
            fresh.close()
    return 0


class Agent:
    """The forked helper in a workload's network namespace (see the module docstring)."""

    def __init__(
        self, pid: int, listen: list[tuple[str, int]], stay: bool, reuse_port: bool = False
    ) -> None:
        parent, child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.pid = os.fork()
        if self.pid == 0:  # the agent: never returns into the supervisor
            code = 1
            try:
                parent.close()
                code = _agent_main(pid, child, listen, stay, reuse_port)
            finally:
                os._exit(code)
        child.close()
        self.control = parent
        self.control.settimeout(5.0)
        msg, fds = recv_fds(self.control, 512, max(1, len(listen)))
        if msg[:1] != _OK:
            for fd in fds:
                os.close(fd)
            self.close()
            raise AgentError(msg[1:].decode(errors="replace") or "the agent exited")
        self.listeners = [Socket(fileno=fd) for fd in fds]
        self.stay = stay
        #: Per server port: whether the server listens on its local_socket_name too.
        self._local: dict[int, bool] = {}
        if not stay:  # a job's agent is done: it exits on its own, reaped in close()
            self.control.close()

    def new_socket(self, request: bytes = _REQUEST) -> Socket:
        """A fresh, unconnected TCP socket inside the workload's network namespace (a unix
        one for ``_REQUEST_LOCAL``)."""
        self.control.sendall(request)
        msg, fds = recv_fds(self.control, 16, 1)
        if msg[:1] != _OK or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise AgentError("the network agent is gone")
        return Socket(fileno=fds[0])

    def connect(self, port: int, timeout: float = 2.0) -> Socket:
        """A socket connected to ``127.0.0.1:port`` inside the namespace."""
        sock = self.new_socket()
        sock.settimeout(timeout)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return sock

    def connect_server(self, port: int, timeout: float = 2.0) -> Socket:
        """A socket connected to the server on ``port``: on its unix socket
        (:func:`local_socket_name`) where it listens on one, else on ``127.0.0.1:port``."""
        if self._local.get(port, True):
            sock = self.new_socket(_REQUEST_LOCAL)
            sock.settimeout(timeout)
            try:
                sock.connect(local_socket_name(port))
                self._local[port] = True
                return sock
            except OSError:
                sock.close()
                self._local[port] = False  # a server that did not listen there will not later
        return self.connect(port, timeout)

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


def _pump(src: Socket, dst: Socket, done: list[int]) -> None:
    try:
        while True:
            data = src.recv(RELAY_CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, _socket.SHUT_WR), (src, _socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass
        with _close_lock:
            done.append(1)
            if len(done) == 2:  # the second direction to finish closes both
                src.close()
                dst.close()


_close_lock = _thread.allocate_lock()


def relay(listener: Socket, target: tuple[str, int]) -> None:
    """Accept one connection and forward it to ``target`` on the host, in two threads."""
    try:
        inside = _accept(listener)
    except OSError:
        return
    outside = Socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        outside.settimeout(5.0)
        outside.connect(target)
    except OSError as exc:
        sys.stderr.write(f"egress to {target[0]}:{target[1]} failed: {exc}\n")
        inside.close()
        outside.close()
        return
    outside.settimeout(None)
    inside.settimeout(None)
    # A relay forwards what it reads at once: with Nagle's algorithm on, a client that writes
    # a request's head and body apart would wait on the peer's delayed ACK (about 40 ms).
    for sock in (inside, outside):
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass
    done: list[int] = []
    _thread.start_new_thread(_pump, (inside, outside, done))
    _thread.start_new_thread(_pump, (outside, inside, done))


def serve_endpoint(listener: Socket, agent: Agent | None, port: int | None) -> None:
    """Answer one client of the workload's endpoint socket (endpoint.py's protocol)."""
    try:
        conn = _accept(listener)
    except OSError:
        return
    conn.settimeout(2.0)
    try:
        if conn.recv(1) != _REQUEST:
            return
        if agent is None or port is None:
            conn.sendall(_ERROR + b"the workload is not running")
            return
        try:
            server = agent.connect_server(port)
        except (OSError, AgentError) as exc:
            conn.sendall(_ERROR + f"cannot connect to the server's port {port}: {exc}".encode())
            return
        try:
            send_fds(conn, _OK, [server.fileno()])
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
    try:
        if not path:
            return True
        request = f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
        request += "User-Agent: shipyard-probe\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode("latin-1"))
        head = b""
        while b"\r\n" not in head and len(head) < 1024:
            chunk = sock.recv(1024)
            if not chunk:
                break
            head += chunk
        parts = head.split(b" ", 2)
        return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and 200 <= int(parts[1]) < 400
    except (OSError, ValueError):
        return False
    finally:
        sock.close()
