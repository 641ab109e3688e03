"""The platform's child processes: start one in its own process group (dying with its
parent), signal and stop a set of them, and stream their logs with a prefix each."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger("shipyard.up")

_COLORS = ("36", "33", "35", "32", "34", "31")
_PR_SET_PDEATHSIG = 1


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (bounded read), for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Runs in the child before exec: get ``sig`` when the supervisor dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        pass


class _Spawner:
    """Starts child processes from a thread that lives as long as the process.

    Linux sends PR_SET_PDEATHSIG's signal when the *thread* that forked the child exits, not
    the process. A child restarted by a supervision loop running in a thread of its own (the
    chaos tests run ``Platform.supervise`` so) was stopped the moment that thread ended. So a
    child is forked by the main thread, or else by this one daemon thread, which ends only
    with the process.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        if threading.current_thread() is threading.main_thread():
            return start()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="spawner", daemon=True)
                self._thread.start()
        done: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((start, done))
        return done.result()

    def _run(self) -> None:
        while True:
            start, done = self._requests.get()
            try:
                done.set_result(start())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
                done.set_exception(exc)


_spawner = _Spawner()


@dataclass
class Child:
    """One supervised process; it leads its own process group."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str | None = None
    # The signal that asks it to stop (SeaweedFS's `weed` ignores SIGTERM, obeys SIGINT).
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as logf:
            logf.write(f"--- shipyard up: starting {' '.join(self.argv)}\n".encode())
            logf.flush()
            preexec = (
                functools.partial(_die_with_parent, self.stop_signal)
                if sys.platform == "linux"
                else None
            )

            def start() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    self.argv,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=preexec,
                )

            self.proc = _spawner.popen(start)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def note(self, line: str) -> None:
        """A line from the supervisor in the process's own log."""
        with self.log_path.open("ab") as logf:
            logf.write(f"--- shipyard up: {line}\n".encode())

    def exit_code(self) -> int | None:
        """None while running (or never started), else its exit status."""
        return self.proc.poll() if self.proc else None

    def group_members(self) -> list[psutil.Process]:
        """The leader and every live descendant still in its process group."""
        if not self.proc:
            return []
        members: list[psutil.Process] = []
        try:
            leader = psutil.Process(self.proc.pid)
            members.append(leader)
            for p in leader.children(recursive=True):
                with contextlib.suppress(psutil.Error, OSError):
                    if os.getpgid(p.pid) == self.proc.pid:
                        members.append(p)
        except psutil.Error:
            pass
        return members

    def signal_group(self, sig: int) -> None:
        if self.proc:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)


def stop_children(children: Sequence[Child], timeout: float = 10.0) -> None:
    """Signal each child's process group (its ``stop_signal``, SIGTERM unless said), wait up
    to ``timeout``, then SIGKILL the rest.

    Descendants are recorded before signalling because once a leader exits its children
    are re-parented and can no longer be found from it.
    """
    members = {c.name: c.group_members() for c in children}
    for child in children:
        child.signal_group(child.stop_signal)
    procs = [p for group in members.values() for p in group]
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    if alive:
        log.warning("killing %d process(es) that ignored SIGTERM", len(alive))
        for child in children:
            child.signal_group(signal.SIGKILL)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
    for child in children:  # reap the leaders so no zombie outlives us
        if child.proc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=1)


class LogStreamer:
    """Follows the children's log files and logs each new line with a short colored prefix."""

    def __init__(self, children: Sequence[Child], color: bool) -> None:
        self._children = list(children)
        self._color = color
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shipyard-logs", daemon=True)
        width = max(len(c.name) for c in self._children)
        self._prefix = {}
        for i, c in enumerate(self._children):
            label = c.name.ljust(width)
            code = _COLORS[i % len(_COLORS)]
            self._prefix[c.name] = f"\x1b[{code}m{label} |\x1b[0m" if color else f"{label} |"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        offsets = {c.name: 0 for c in self._children}
        while not self._stop.wait(0.2):
            for c in self._children:
                offsets[c.name] = self._emit_new(c, offsets[c.name])

    def _emit_new(self, child: Child, offset: int) -> int:
        try:
            with child.log_path.open("rb") as f:
                f.seek(offset)
                chunk = f.read(256 * 1024)
        except OSError:
            return offset
        complete = chunk[: chunk.rfind(b"\n") + 1]
        for line in complete.decode(errors="replace").splitlines():
            log.info("%s %s", self._prefix[child.name], line)
        return offset + len(complete)
