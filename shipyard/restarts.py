"""Restarting a platform process that exits on its own, as a process supervisor would.

``shipyard up`` used to stop everything when any one process exited; a crashed service then
stayed down until a person noticed. Now a process that exits unexpectedly is started again
after a back-off (1 s, 2 s, 4 s, ... at most 30 s), with a line in ``shipyard up``'s output
and in the process's own log that says why and how many times. A process that keeps failing
fast (:data:`GIVE_UP_AFTER` exits in a row, each within :data:`FAST_EXIT_SECONDS` of its
start) is given up on loudly: the platform stops, showing the last lines of its log, since
restarting it again would only hide a configuration error. Startup failures stay fatal
(``Platform._wait_healthy``); this covers a process that was up and then died (a crash, an
OOM kill, a SIGKILL).

Services keep their state in the database and adopt their running workloads again when they
start (the workloads' own supervisors keep them alive meanwhile), so a restarted service
resumes where the killed one stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger("shipyard.up")

BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
FAST_EXIT_SECONDS = 30.0
GIVE_UP_AFTER = 5


class Restartable(Protocol):
    name: str
    log_path: Path

    @property
    def pid(self) -> int | None: ...
    def exit_code(self) -> int | None: ...
    def start(self) -> None: ...
    def note(self, line: str) -> None: ...


class GaveUp(RuntimeError):
    """A process exited fast too many times in a row; the message says which and why."""


@dataclass
class _Record:
    started_at: float
    restarts: int = 0
    fast_exits: int = 0
    restart_at: float | None = None


@dataclass
class Restarter:
    """Call :meth:`check` every half second: it restarts the children that have died."""

    tail: Callable[[Path], str]
    clock: Callable[[], float] = time.monotonic
    records: dict[str, _Record] = field(default_factory=dict)

    def check(self, children: Sequence[Restartable]) -> None:
        now = self.clock()
        for child in children:
            record = self.records.setdefault(child.name, _Record(started_at=now))
            code = child.exit_code()
            if code is None:
                if now - record.started_at > FAST_EXIT_SECONDS:
                    record.fast_exits = 0
            elif record.restart_at is None:
                self._schedule(child, record, code, now)
            elif now >= record.restart_at:
                record.restarts += 1
                record.restart_at = None
                record.started_at = now
                child.note(f"restart {record.restarts} after exit code {code}")
                child.start()
                log.warning("%s restarted (restart %d)", child.name, record.restarts)

    def _schedule(self, child: Restartable, record: _Record, code: int, now: float) -> None:
        ran = now - record.started_at
        record.fast_exits = record.fast_exits + 1 if ran < FAST_EXIT_SECONDS else 1
        if record.fast_exits >= GIVE_UP_AFTER:
            raise GaveUp(
                f"{child.name} exited with code {code} {record.fast_exits} times in a row, each "
                f"within {FAST_EXIT_SECONDS:.0f} s of starting: not restarting it again; last "
                f"lines of {child.log_path}:\n{self.tail(child.log_path)}"
            )
        delay = BACKOFF_SECONDS[min(record.fast_exits - 1, len(BACKOFF_SECONDS) - 1)]
        record.restart_at = now + delay
        log.warning(
            "%s exited with code %s after %.0f s; restarting it in %.0f s (restart %d); log: %s",
            child.name,
            code,
            ran,
            delay,
            record.restarts + 1,
            child.log_path,
        )
