"""shipyard.ports: the free ports handed to child processes lie outside the kernel's ephemeral
range (where an outgoing connection could take one before the child binds it: the CI failure
of 2026-12-06, a stand-in's EADDRINUSE), and one process never hands out a port twice."""

from __future__ import annotations

import socket

from shipyard import ports


def test_free_ports_lie_outside_the_ephemeral_range_and_are_distinct() -> None:
    low, high = ports._ephemeral_range()
    handed = [ports.free_port() for _ in range(300)]
    assert len(set(handed)) == len(handed)
    assert all(not low <= p <= high and p >= 10000 for p in handed), handed
    for port in handed[:20]:  # each binds: free a moment ago, and nothing took it since
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_bound_port_is_never_handed_out(monkeypatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        low, high = ports._ephemeral_range()
        # Only the held port and one other remain as candidates: the other must come back.
        spare = next(
            p
            for p in range(20000, 65536)
            if not low <= p <= high
            and p != taken
            and not ports.port_in_use("127.0.0.1", p)
            and p not in ports._handed_out
        )
        monkeypatch.setattr(ports, "_candidates", lambda: [taken, spare])
        assert ports.free_port() == spare
        assert ports.port_in_use("127.0.0.1", taken)
