"""Re-checking an object while its server starts: the serving controllers' back-off.

Workload readiness is not an event, so a reconcile that waits for a server asks to run again:
first soon (a tenth of a second of waiting is a tenth of a second of cold start), then less
often up to a bound, and at a fixed longer interval for an object that failed (it may
recover, e.g. its claim appears).
"""

from __future__ import annotations

from collections.abc import Hashable


class Backoff:
    """Per-object delays growing by half from ``minimum`` up to ``maximum``; ``failed`` for a
    failed object. ``forget`` starts an object over."""

    def __init__(self, minimum: float, maximum: float, failed: float) -> None:
        self.minimum, self.maximum, self.failed = minimum, maximum, failed
        self._delays: dict[Hashable, float] = {}

    def next(self, key: Hashable, failed: bool) -> float:
        """The delay before ``key``'s next check."""
        delay = (
            self.failed
            if failed
            else min(self.maximum, self._delays.get(key, self.minimum / 1.5) * 1.5)
        )
        self._delays[key] = delay
        return delay

    def forget(self, key: Hashable) -> None:
        self._delays.pop(key, None)
