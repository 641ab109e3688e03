"""A workload group's shared network, from the supervisor's side.

services/common/runtime/local_network.py says why members of a group share one network
namespace. Here: under the group's lock, find a live member and open its namespace (the
workload then starts inside it instead of making its own), and record this member once its
sandbox exists. The lock is held from the look-up until the record, so two members starting
at the same moment cannot both make a namespace.
"""

import fcntl
import os

from .jsonio import dumps, loads
from .procs import proc_start_time

MEMBERS = "members.json"
#: Records kept per group: the live members (dead ones are dropped at each join).
MAX_MEMBERS = 256


class GroupNetwork:
    """One member's view of its group's network; inert when the launch names no group."""

    def __init__(self, plan: dict | None) -> None:
        self.dir = plan.get("dir") if plan else None
        self.lock_fd: int | None = None
        self.netfd: int | None = None

    @property
    def shared(self) -> bool:
        return self.dir is not None

    def find(self) -> int | None:
        """Lock the group and return a descriptor of a live member's network namespace, or
        None (this member makes the group's namespace). Call :meth:`record` afterwards."""
        if self.dir is None:
            return None
        self.lock_fd = os.open(
            os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        for member in self._members():
            pid, start = member.get("pid"), member.get("start")
            try:
                fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            except (OSError, TypeError):
                continue
            # Checked after the open: the descriptor keeps the namespace, and a recycled pid
            # would show another start time.
            if proc_start_time(int(pid)) != start:
                os.close(fd)
                continue
            self.netfd = fd
            return fd
        return None

    def record(self, child: int | None) -> None:
        """Add this member's sandbox (its first process) to the group, then unlock."""
        if self.dir is None:
            return
        try:
            if child is not None:
                live = [
                    m
                    for m in self._members()
                    if proc_start_time(int(m.get("pid") or 0)) == m.get("start")
                ]
                live.append({"pid": child, "start": proc_start_time(child)})
                tmp = os.path.join(self.dir, f".{MEMBERS}.tmp")
                with open(tmp, "w") as f:
                    f.write(dumps(live[-MAX_MEMBERS:]))
                os.replace(tmp, os.path.join(self.dir, MEMBERS))
        finally:
            self.release()

    def release(self) -> None:
        """Unlock the group and drop the namespace descriptor (idempotent)."""
        if self.netfd is not None:
            os.close(self.netfd)
            self.netfd = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def _members(self) -> list:
        try:
            with open(os.path.join(self.dir or "", MEMBERS)) as f:
                value = loads(f.read())
        except (OSError, ValueError):
            return []
        return [m for m in value if isinstance(m, dict)] if isinstance(value, list) else []


def without_new_network(argv: list) -> list:
    """bubblewrap's argv minus ``--unshare-net``: the sandbox starts in the group's network."""
    return [a for a in argv if a != "--unshare-net"]
