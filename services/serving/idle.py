"""What the gateway's activity reports say: how long each InferenceService has been idle,
and how much load it had lately (requests in flight at once, requests per second).

``ActivityMonitor`` subscribes to the reports (``services.common.activity``) and keeps an
``IdleClock`` and a ``LoadWindow``; the controller asks the clock how long a service has
been idle before it scales it to zero, and the window how many replicas it needs. It is
told of every report (``on_report``) and reconciles at once when requests are held or the
replica count should change.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from services.common.activity import SUBJECT, Activity
from services.common.events.bus import EventBus
from services.serving.autoscale import Load

log = logging.getLogger(__name__)

Key = tuple[str, str]


class IdleClock:
    """Seconds since each (namespace, name) was last active; unseen keys start now."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._last: dict[Key, float] = {}

    def touch(self, namespace: str, name: str) -> None:
        self._last[(namespace, name)] = self._now()

    def idle_for(self, namespace: str, name: str) -> float:
        # A service this process has not heard of yet (a new object, or after a restart)
        # gets the whole grace period from now rather than being stopped at once.
        return self._now() - self._last.setdefault((namespace, name), self._now())

    def active_within(self, namespace: str, name: str, seconds: float) -> bool:
        """Seen active less than ``seconds`` ago (never-seen keys are not)."""
        last = self._last.get((namespace, name))
        return last is not None and self._now() - last < seconds

    def forget(self, namespace: str, name: str) -> None:
        self._last.pop((namespace, name), None)


class LoadWindow:
    """Per (namespace, name), the most requests in flight at once and the highest request
    rate reported within the last ``seconds`` (autoscale.Load)."""

    def __init__(self, seconds: float, now: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._now = now
        self._samples: dict[Key, deque[tuple[float, int, float]]] = {}

    def record(self, namespace: str, name: str, concurrency: int, rps: float = 0.0) -> None:
        samples = self._samples.setdefault((namespace, name), deque(maxlen=10_000))
        samples.append((self._now(), concurrency, rps))

    def observed(self, namespace: str, name: str) -> Load:
        samples = self._samples.get((namespace, name))
        if not samples:
            return Load()
        since = self._now() - self.seconds
        while samples and samples[0][0] < since:
            samples.popleft()
        return Load(
            max((c for _, c, _ in samples), default=0),
            max((r for _, _, r in samples), default=0.0),
        )

    def forget(self, namespace: str, name: str) -> None:
        self._samples.pop((namespace, name), None)


class ActivityMonitor:
    """Feeds the gateway's activity reports into an IdleClock and a LoadWindow."""

    def __init__(
        self,
        bus: EventBus,
        clock: IdleClock,
        window: LoadWindow,
        on_report: Callable[[Activity], None],
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.window = window
        self.on_report = on_report
        self._sub: Any = None

    async def start(self) -> None:
        self.bus.on_connect(self._subscribe)

    async def stop(self) -> None:
        self.bus.remove_on_connect(self._subscribe)
        self._sub = None  # the bus closes after the components, and its subscriptions with it

    async def _subscribe(self) -> None:
        if self._sub is not None:  # a reconnect: nats-py may have kept the old one
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass
        self._sub = await self.bus.nc.subscribe(SUBJECT, cb=self._on_message)

    async def _on_message(self, msg: Any) -> None:
        try:
            report = Activity.decode(msg.data)
        except ValueError:
            log.warning("ignoring malformed activity report")
            return
        self.clock.touch(report.namespace, report.name)
        concurrency = max(report.concurrency, report.in_flight + report.waiting)
        # A report sent at once (the first request held while scaled to zero) spans nothing.
        rps = report.requests / report.seconds if report.seconds > 0 else 0.0
        self.window.record(report.namespace, report.name, concurrency, rps)
        self.on_report(report)
