"""Counts inference traffic per InferenceService and reports it to the serving service.

The counting is on the proxy's hot path, so it is two dict updates per request (no await,
no lock: the gateway is one event loop). A background task publishes one report per busy
InferenceService every ``SHIPYARD_ACTIVITY_REPORT_SECONDS`` as a core NATS message
(``services.common.activity``: why core NATS and why losing one is harmless is there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict

from services.common.activity import SUBJECT, Activity
from services.common.events.bus import EventBus

log = logging.getLogger(__name__)

Key = tuple[str, str]


class ActivityReporter:
    """Per (namespace, name): requests since the last report, in flight (now and at most
    since the last report), held for activation."""

    def __init__(self, bus: EventBus, interval: float) -> None:
        self.bus = bus
        self.interval = interval
        self.requests: defaultdict[Key, int] = defaultdict(int)
        self.in_flight: defaultdict[Key, int] = defaultdict(int)
        self.peak: defaultdict[Key, int] = defaultdict(int)
        self.waiting: defaultdict[Key, int] = defaultdict(int)
        self._task: asyncio.Task[None] | None = None
        self._since = time.monotonic()  # when ``requests`` started counting

    def begin(self, key: Key) -> None:
        self.requests[key] += 1
        now = self.in_flight[key] = self.in_flight[key] + 1
        if now > self.peak[key]:
            self.peak[key] = now

    def end(self, key: Key) -> None:
        self.in_flight[key] -= 1

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="activity-reporter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.report()

    async def report(self) -> None:
        """Publish one report per busy InferenceService; drop counters that went quiet."""
        keys = {*self.requests, *(k for k, n in self.in_flight.items() if n), *self.waiting}
        requests, self.requests = self.requests, defaultdict(int)
        peak, self.peak = self.peak, defaultdict(int)
        now = time.monotonic()
        seconds, self._since = now - self._since, now
        for key in [k for k, n in self.in_flight.items() if not n]:
            del self.in_flight[key]
        for key in keys:
            await self.publish(key, requests.get(key, 0), peak.get(key, 0), seconds)

    async def publish(
        self, key: Key, requests: int = 0, peak: int = 0, seconds: float = 0.0
    ) -> None:
        """One report now (best effort: NATS may be away, and the next report repeats it).
        ``requests`` started within the last ``seconds`` (0: a report sent out of turn)."""
        if not self.bus.connected:
            return
        in_flight, waiting = self.in_flight.get(key, 0), self.waiting.get(key, 0)
        report = Activity(
            key[0], key[1], requests, in_flight, waiting, max(peak, in_flight), seconds
        )
        try:
            await self.bus.nc.publish(SUBJECT, report.encode())
        except Exception as exc:  # noqa: BLE001 - a lost report is harmless
            log.info("activity report for %s/%s not sent: %s", key[0], key[1], exc)
