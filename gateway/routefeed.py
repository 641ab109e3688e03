"""Keeps the dynamic route table (``/notebook/...``, ``/serving/...``) in step with the services.

The services publish a ``ResourceEvent`` for every change of a Notebook or an
InferenceService; a core NATS subscription applies each one to the route table. After
every (re)connect the table is warm-started again from the services' list endpoints,
so changes made while NATS was away are not missed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.common.events.bus import EventBus
from services.common.resources.codec import parse_resource_event

from .routes import RouteFeeder

log = logging.getLogger(__name__)

SUBJECTS = (
    "shipyard.notebook.notebook.*",
    "shipyard.serving.inferenceservice.*",
    "shipyard.serving.inferencegraph.*",
)


class RouteEventFeed:
    def __init__(
        self, bus: EventBus, feeder: RouteFeeder, warm: Callable[[], Awaitable[None]]
    ) -> None:
        self.bus = bus
        self.feeder = feeder
        self.warm = warm
        self._subs: list[Any] = []

    async def start(self) -> None:
        self.bus.on_connect(self._on_connect)
        await self.bus.start()

    async def stop(self) -> None:
        await self.bus.close()

    async def _on_connect(self) -> None:
        self._subs = [await self.bus.nc.subscribe(s, cb=self._on_message) for s in SUBJECTS]
        await self.warm()

    async def _on_message(self, msg: Any) -> None:
        try:
            event = parse_resource_event(msg.data)
            obj = json.loads(event.object_json)
        except Exception:  # a malformed event must not stop the feed
            log.warning("ignoring malformed resource event on %s", msg.subject)
            return
        self.feeder.apply_event(msg.subject, obj)
