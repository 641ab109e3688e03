"""Holds requests for a scaled-to-zero InferenceService until it serves again.

The first held request starts one activation per InferenceService; every later one waits
on the same. An activation reports the held requests to the serving service at once (and
with every periodic report after), which starts the predictor, and ends when the route
table has an endpoint again, i.e. after the predictor's readiness probe passed and the
controller published its status, or as soon as the status says the predictor failed to
start (503 with its reason). Each request waits at most the activation timeout.

Only the slow path (no live endpoint) comes here; live requests never do.
"""

from __future__ import annotations

import asyncio

from services.common.tasks import cancel_and_wait

from .activity import ActivityReporter, Key
from .errors import DataPlaneError
from .routes import RouteTable

KIND = "inferenceservice"


class Activator:
    """``endpoint(ns, name)``: a live target URL, waiting for activation when needed."""

    #: How often a waiting activation looks at the route table (seconds).
    poll_seconds = 0.02
    #: How long a request for a live-but-unrouted object waits for its route (seconds): the
    #: route table hears of a new endpoint by event, so it can trail the object's Ready status
    #: that a client has just read.
    route_grace_seconds = 2.0

    def __init__(self, table: RouteTable, reporter: ActivityReporter, timeout: float) -> None:
        self.table = table
        self.reporter = reporter
        self.timeout = timeout
        self._activations: dict[Key, asyncio.Task[str | None]] = {}

    async def endpoint(self, namespace: str, name: str) -> str | None:
        """The URL to forward to once live; None when the service cannot be activated
        (unknown, or not ``minReplicas: 0``) and has no route within the route grace.
        Raises DataPlaneError 503 on timeout."""
        if not self.table.activatable(KIND, namespace, name):
            return await self.settle(KIND, namespace, name)
        key = (namespace, name)
        self.reporter.waiting[key] += 1
        try:
            task = self._activations.get(key)
            if task is None or task.done():
                task = asyncio.create_task(self._activate(key), name=f"activate-{namespace}-{name}")
                self._activations[key] = task
            try:
                async with asyncio.timeout(self.timeout):
                    url = await asyncio.shield(task)
            except TimeoutError:
                raise DataPlaneError(
                    503,
                    f"InferenceService {namespace}/{name} is scaled to zero and did not become "
                    f"ready within {self.timeout:g} s of this request; see its status "
                    f"(`shipyard get isvc {name} -n {namespace}`) and the model server's logs",
                ) from None
        finally:
            self.reporter.waiting[key] -= 1
            if not self.reporter.waiting[key]:
                del self.reporter.waiting[key]
        if url is None:
            raise DataPlaneError(
                503, f"InferenceService {namespace}/{name} was deleted or changed while waiting"
            )
        return url

    async def settle(self, kind: str, namespace: str, name: str) -> str | None:
        """The route of an object that is not scaled to zero, once the table has it (None
        after ``route_grace_seconds``: it has no live endpoint)."""
        deadline = asyncio.get_running_loop().time() + self.route_grace_seconds
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(self.poll_seconds)
            url = self.table.pick(kind, namespace, name)
            if url is not None:
                return url
            if kind == KIND and self.table.activatable(kind, namespace, name):
                return await self.endpoint(namespace, name)  # scaled to zero meanwhile
        return None

    async def _activate(self, key: Key) -> str | None:
        """Until the route is live (URL), or nobody waits and it cannot be (None)."""
        await self.reporter.publish(key)
        # Bounded by the waiters: each leaves after the activation timeout at the latest.
        while self.reporter.waiting.get(key):
            url = self.table.pick(KIND, *key)
            if url is not None:
                return url
            if not self.table.activatable(KIND, *key):
                return None
            failure = self.table.failure(KIND, *key)
            if failure is not None:
                raise DataPlaneError(
                    503,
                    f"InferenceService {key[0]}/{key[1]} was scaled to zero and failed to start "
                    f"again: {failure}",
                )
            await asyncio.sleep(self.poll_seconds)
        return None

    async def close(self) -> None:
        await cancel_and_wait(list(self._activations.values()))
        self._activations.clear()
