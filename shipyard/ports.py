"""Free TCP ports for processes that bind them a moment later.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range
(``net.ipv4.ip_local_port_range``), the same range every outgoing connection takes its
local port from. Between choosing such a port and the child binding it, any connection on
the host (SeaweedFS's master and volume server talking to each other, a client connecting to
Postgres) can take it, and the child fails with EADDRINUSE. So the ports handed out here lie
outside that range, where only a listener can take them, and one process never hands out the
same port twice.
"""

from __future__ import annotations

import functools
import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000  # below this live well-known services' default ports
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


@functools.cache
def _candidates() -> list[int]:
    low, high = _ephemeral_range()
    return [p for p in range(_LOWEST, 65536) if not low <= p <= high]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port outside the ephemeral range that was free a moment ago and that this process
    has not handed out before (the caller binds it soon after)."""
    candidates = _candidates()
    for port in random.sample(candidates, min(len(candidates), 512)):
        if port not in _handed_out and not port_in_use(host, port):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # a host whose ports outside the range are all taken
        s.bind((host, 0))
        return int(s.getsockname()[1])
