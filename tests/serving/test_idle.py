"""The idle clock and the load window, on a fake clock."""

from __future__ import annotations

from services.serving.autoscale import Load
from services.serving.idle import IdleClock, LoadWindow


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_idle_clock_unseen_starts_now_and_is_not_active() -> None:
    t = FakeTime()
    clock = IdleClock(t)
    assert not clock.active_within("ns", "m", 60)  # a restart heard nothing: stays dormant
    assert clock.idle_for("ns", "m") == 0  # but a running server gets the whole grace
    t.now += 30
    assert clock.idle_for("ns", "m") == 30
    clock.touch("ns", "m")
    t.now += 5
    assert clock.idle_for("ns", "m") == 5 and clock.active_within("ns", "m", 60)
    clock.forget("ns", "m")
    assert not clock.active_within("ns", "m", 60)


def test_load_window_highest_within_window() -> None:
    t = FakeTime()
    window = LoadWindow(10, t)
    assert window.observed("ns", "m") == Load()
    window.record("ns", "m", 7, 2.5)
    t.now += 4
    window.record("ns", "m", 2, 40.0)
    assert window.observed("ns", "m") == Load(7, 40.0)
    t.now += 7  # the first sample is 11 s old
    assert window.observed("ns", "m") == Load(2, 40.0)
    t.now += 10
    assert window.observed("ns", "m") == Load()
