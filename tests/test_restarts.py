"""shipyard/restarts.py: the back-off, the restart count and giving up on fast failures.

The children here are stand-ins (a clock and exit codes the test sets) because the logic is
the restarter's own; tests/test_up.py kills real services under a real `shipyard up`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shipyard.restarts import BACKOFF_SECONDS, FAST_EXIT_SECONDS, GIVE_UP_AFTER, GaveUp, Restarter


@dataclass
class FakeChild:
    name: str
    log_path: Path
    code: int | None = None
    starts: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return 1

    def exit_code(self) -> int | None:
        return self.code

    def start(self) -> None:
        self.starts += 1
        self.code = None

    def note(self, line: str) -> None:
        self.notes.append(line)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_crash_is_restarted_after_the_backoff(tmp_path: Path) -> None:
    clock = Clock()
    restarter = Restarter(lambda path: "last lines", clock=clock)
    child = FakeChild("pipeline", tmp_path / "pipeline.log")
    restarter.check([child])
    clock.now += FAST_EXIT_SECONDS + 5  # it ran a while, then was killed
    child.code = -9
    restarter.check([child])
    assert child.starts == 0  # not before the back-off
    clock.now += BACKOFF_SECONDS[0]
    restarter.check([child])
    assert child.starts == 1 and child.notes == ["restart 1 after exit code -9"]


def test_repeated_fast_exits_back_off_then_give_up(tmp_path: Path) -> None:
    clock = Clock()
    restarter = Restarter(lambda path: f"tail of {path.name}", clock=clock)
    child = FakeChild("automl", tmp_path / "automl.log")
    restarter.check([child])
    delays = []
    for _ in range(GIVE_UP_AFTER - 1):
        clock.now += 1
        child.code = 2
        restarter.check([child])
        started = child.starts
        waited = 0.0
        while child.starts == started:
            clock.now += 0.5
            waited += 0.5
            restarter.check([child])
        delays.append(waited)
    assert delays == list(BACKOFF_SECONDS[: GIVE_UP_AFTER - 1])
    clock.now += 1
    child.code = 2
    with pytest.raises(GaveUp) as err:
        restarter.check([child])
    message = str(err.value)
    assert "automl exited with code 2 5 times in a row" in message
    assert "tail of automl.log" in message


def test_a_long_run_resets_the_fast_exit_count(tmp_path: Path) -> None:
    clock = Clock()
    restarter = Restarter(lambda path: "", clock=clock)
    child = FakeChild("serving", tmp_path / "serving.log")
    restarter.check([child])
    for _ in range(GIVE_UP_AFTER * 2):  # each run lasts longer than a fast exit
        clock.now += FAST_EXIT_SECONDS + 1
        restarter.check([child])
        child.code = 1
        restarter.check([child])
        clock.now += BACKOFF_SECONDS[0]
        restarter.check([child])
    assert child.starts == GIVE_UP_AFTER * 2
