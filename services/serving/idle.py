"""When each InferenceService last saw traffic, from the gateway's activity reports.

``ActivityMonitor`` subscribes to the reports (``services.serving.activity``) and keeps an
``IdleClock``; the controller asks the clock how long a service has been idle before it
scales it to zero, and is woken at once when a report says requests are held for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from services.common.events.bus import EventBus
from services.serving.activity import SUBJECT, Activity

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

    def forget(self, namespace: str, name: str) -> None:
        self._last.pop((namespace, name), None)


class ActivityMonitor:
    """Feeds the gateway's activity reports into an IdleClock; ``wake`` on held requests."""

    def __init__(self, bus: EventBus, clock: IdleClock, wake: Callable[[str, str], None]) -> None:
        self.bus = bus
        self.clock = clock
        self.wake = wake
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
        if report.waiting:
            self.wake(report.namespace, report.name)
