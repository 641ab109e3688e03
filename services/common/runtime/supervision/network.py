"""The workload's network, seen from the supervisor: egress relays, readiness, its endpoint.

The sandbox has its own network namespace with only a loopback. ``netns`` (beside the
supervisor, imported by its plain name: see services/common/runtime/supervisor.py) makes the
sockets inside it; this class holds them for one run of the workload and serves them from the
supervisor's ``select`` loop.
"""

TYPE_CHECKING = False  # typing costs 12 ms at start-up
if TYPE_CHECKING:
    from typing import Any


class WorkloadNetwork:
    """The egress listeners, the namespace agent and the server's endpoint socket."""

    def __init__(self, launch: dict) -> None:
        self.launch = launch
        self.agent: Any = None
        self.egress: list = []  # (listener inside the sandbox, (host, port) it relays to)
        self.endpoint: Any = None
        if launch.get("kind") == "server" and launch.get("endpoint"):
            self.endpoint = _listen_unix(launch["endpoint"])

    def prepare(self) -> None:
        """Load ``netns`` (and ctypes, for the agent's setns) while bubblewrap sets up."""
        import netns  # noqa: F401

    def attach(self, child: int | None, box: dict) -> None:
        """Make the egress listeners inside the sandbox whose first process is ``child``.

        ``child`` is None when bubblewrap failed before the namespaces existed; the workload
        then fails on its own and there is nothing to attach to.
        """
        import netns

        self.agent = None
        if child is None:
            return
        rules = box.get("egress") or []
        self.agent = netns.Agent(
            child,
            [tuple(e["listen"]) for e in rules],
            stay=self.launch.get("kind") == "server",
            reuse_port=bool(box.get("network")),  # a group's shared network
        )
        self.egress = [
            (sock, tuple(e["connect"])) for sock, e in zip(self.agent.listeners, rules, strict=True)
        ]

    def watched(self) -> list:
        """The sockets the supervisor's ``select`` waits on for the network."""
        socks = [sock for sock, _ in self.egress]
        if self.endpoint is not None:
            socks.append(self.endpoint)
        return socks

    def serve(self, ready: list, running: bool) -> None:
        """Serve what ``select`` found ready: the endpoint's clients and egress connections."""
        import netns

        if self.endpoint is not None and self.endpoint in ready:
            port = self.launch.get("port")
            netns.serve_endpoint(self.endpoint, self.agent if running else None, port)
        for sock, target in self.egress:
            if sock in ready:
                netns.relay(sock, target)

    def probe(self) -> bool:
        """The readiness probe, made inside the workload's network namespace."""
        import netns

        probe = self.launch.get("probe") or {}
        timeout = min(max(float(probe.get("timeout", 1)), 0.1), 5.0)
        if self.agent is None:
            return False
        return netns.probe_http(self.agent, int(self.launch["port"]), probe.get("path"), timeout)

    def close(self) -> None:
        """Close one run's egress listeners and agent (the endpoint outlives restarts)."""
        for sock, _ in self.egress:
            sock.close()
        self.egress = []
        if self.agent is not None:
            self.agent.close()
            self.agent = None


def _listen_unix(path: str) -> object:
    """A Unix socket at ``path`` only its owner may connect to."""
    import _socket
    import os

    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock
