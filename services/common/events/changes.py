"""Changes written by other replicas, delivered to this replica's controllers.

A controller hears of a change the moment its own process commits it (the store's listener).
With replicas, a write can land on a standby: only the leader reconciles, and without this
feed it would learn of the change at its next resync (30 s). So the leader subscribes, with
core NATS (no durable state, nothing to acknowledge), to its service's resource events
(``shipyard.<service>.<kind>.<added|modified|deleted>``, published by the outbox relay of
whichever replica wrote) and hands each decoded object to the store's listeners, as if it had
been written here.

Duplicates are harmless: the leader also gets its own writes back this way, and a controller's
queue de-duplicates keys (reconcile is idempotent). A message lost while NATS is away is
covered by the resync.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from services.common.events.bus import EventBus
from services.common.resources import ResourceKind, ResourceStore, WatchEvent
from services.common.resources.codec import parse_resource_event

log = logging.getLogger(__name__)

RESOURCE_EVENTS = ("added", "modified", "deleted")


class ChangeFeed:
    """Feeds ``service``'s resource events from NATS into ``store``'s listeners while started."""

    def __init__(
        self, bus: EventBus, store: ResourceStore, kinds: Sequence[ResourceKind], service: str
    ) -> None:
        self.bus, self.store = bus, store
        self.subject = f"shipyard.{service}.*.*"
        self._kinds = {kind.kind: kind for kind in kinds}
        self._sub: Any = None
        self._running = False
        self.delivered = 0  # events handed to the listeners (tests, debugging)

    async def start(self) -> None:
        self._running = True
        self.bus.on_connect(self._subscribe, now=False)
        if self.bus.connected:
            try:
                await self._subscribe()
            except Exception as exc:  # NATS going away: on_connect subscribes when it is back
                log.warning("change feed: could not subscribe to %s (%r)", self.subject, exc)

    async def stop(self) -> None:
        self._running = False
        self.bus.remove_on_connect(self._subscribe)
        await self._unsubscribe()

    async def _subscribe(self) -> None:
        await self._unsubscribe()  # a reconnect: nats-py may have kept the old one
        if self._running:
            self._sub = await self.bus.nc.subscribe(self.subject, cb=self._on_message)

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        if msg.subject.rsplit(".", 1)[-1] not in RESOURCE_EVENTS:
            return  # a service's own events (shipyard.automl.trial.completed, ...)
        try:
            event = parse_resource_event(msg.data)
            obj = json.loads(event.object_json)
        except Exception:
            log.warning("change feed: ignoring a malformed event on %s", msg.subject)
            return
        kind = self._kinds.get(event.kind)
        if kind is None or not isinstance(obj, dict):
            return
        self.delivered += 1
        self.store.notify(kind, WatchEvent(event.type, obj))
