"""The idle clock and the concurrency window, on a fake clock."""

from __future__ import annotations

from services.serving.idle import ConcurrencyWindow, IdleClock


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


def test_concurrency_window_highest_within_window() -> None:
    t = FakeTime()
    window = ConcurrencyWindow(10, t)
    assert window.observed("ns", "m") == 0
    window.record("ns", "m", 7)
    t.now += 4
    window.record("ns", "m", 2)
    assert window.observed("ns", "m") == 7
    t.now += 7  # the 7 is 11 s old
    assert window.observed("ns", "m") == 2
    t.now += 10
    assert window.observed("ns", "m") == 0
