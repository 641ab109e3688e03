"""Processes and locks: a pid's identity, a process group's end, the workload's lock."""

import _signal as signal
import errno
import fcntl
import os
import select
import time


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot): a pid plus this is unique."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; counted after the ")" that closes the command name, which may contain spaces.
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def killpg(pgid: int, sig: int) -> None:
    """Signal a process group; one that is gone already is not an error."""
    try:
        os.killpg(pgid, sig)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def kill_tree(pid: int, pidfd: int, grace: float) -> int:
    """SIGTERM the process group, SIGKILL it after ``grace``; return the wait status."""
    killpg(pid, signal.SIGTERM)
    ready, _, _ = select.select([pidfd], [], [], max(0.0, grace))
    if not ready:
        killpg(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    killpg(pid, signal.SIGKILL)  # stragglers left in the group
    return status


def take_lock(path: str) -> int | None:
    """The workload's exclusive ``flock``, held for the supervisor's life; None if taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    end = time.monotonic() + 0.5
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            # The runtime probes the lock briefly; a real owner holds it for good.
            if time.monotonic() > end:
                os.close(fd)
                return None
            time.sleep(0.01)
