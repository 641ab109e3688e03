"""EventBus: the process's one NATS connection, robust to NATS being down or restarting.

A service must start (and serve its API, staging events into the outbox) while NATS is
unreachable, so :meth:`EventBus.start` returns at once and connects in the background,
retrying forever; after that nats-py reconnects forever by itself. Components that keep
server-side state (streams, consumers) register :meth:`on_connect` callbacks, which run
after the first connect and after every reconnect (the server may have lost its store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

ConnectCallback = Callable[[], Awaitable[None]]


class NotConnectedError(RuntimeError):
    """Raised when a caller needs the connection before it first came up."""


class EventBus:
    """One NATS connection with JetStream, connected in the background."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "shipyard",
        connect_timeout: float = 2.0,
        reconnect_wait: float = 0.5,
        request_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.name = name
        self.connect_timeout = connect_timeout
        self.reconnect_wait = reconnect_wait
        self.request_timeout = request_timeout
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._callbacks: list[ConnectCallback] = []
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self._last_error_log = 0.0
        self._closing = False

    # -- public -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise NotConnectedError("NATS connection not established yet")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise NotConnectedError("NATS connection not established yet")
        return self._js

    def on_connect(self, callback: ConnectCallback, *, now: bool = True) -> None:
        """Run ``callback`` after the first connect and every reconnect; with ``now``, also
        right away if already connected."""
        self._callbacks.append(callback)
        if now and self.connected:
            self._spawn(callback)

    def remove_on_connect(self, callback: ConnectCallback) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    async def start(self) -> None:
        """Begin connecting in the background; returns immediately."""
        if self._task is None:
            self._task = asyncio.create_task(self._connect(), name=f"nats-connect-{self.name}")

    async def wait_connected(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the connection; True if it is up."""
        if self.connected:
            return True
        self._connected.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._connected.wait()
        return self.connected

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        await cancel_and_wait([task])
        for task in list(self._callback_tasks):
            task.cancel()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._nc.close()
        self._nc = None
        self._js = None

    # -- internals --------------------------------------------------------------------------

    async def _connect(self) -> None:
        nc = NATS()
        # max_reconnect_attempts=-1 makes nats-py retry forever, including the first connect.
        await nc.connect(
            servers=[self.url],
            name=self.name,
            connect_timeout=self.connect_timeout,  # type: ignore[arg-type]
            reconnect_time_wait=self.reconnect_wait,  # type: ignore[arg-type]
            max_reconnect_attempts=-1,
            ping_interval=10,
            max_outstanding_pings=3,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._nc = nc
        self._js = nc.jetstream(timeout=self.request_timeout)
        log.info("connected to NATS at %s", self.url)
        await self._after_connect()

    async def _on_error(self, err: Exception) -> None:
        # While NATS is down nats-py reports every failed attempt; log one line per 10 s.
        now = time.monotonic()
        if now - self._last_error_log > 10:
            self._last_error_log = now
            log.warning("NATS %s: %s", self.url, err or type(err).__name__)

    async def _on_disconnected(self) -> None:
        self._connected.clear()
        if not self._closing:
            log.warning("disconnected from NATS at %s; reconnecting", self.url)

    async def _on_reconnected(self) -> None:
        # nats-py awaits this inside its reconnect task; do the work in our own task.
        log.info("reconnected to NATS at %s", self.url)
        task = asyncio.create_task(self._after_connect())
        self._callback_tasks.add(task)
        task.add_done_callback(self._callback_tasks.discard)

    async def _after_connect(self) -> None:
        if self._nc is None:
            return
        if self._js is not None:
            # The first request sets up nats-py's shared reply subscription; doing it here
            # keeps later concurrent publishes in call order on the wire.
            with contextlib.suppress(Exception):
                await self._js.account_info()
        self._connected.set()
        for callback in list(self._callbacks):
            self._spawn(callback)

    def _spawn(self, callback: ConnectCallback) -> None:
        async def run() -> None:
            try:
                await callback()
            except Exception:
                log.exception("on_connect callback %r failed", callback)

        task = asyncio.create_task(run())
        self._callback_tasks.add(task)
        task.add_done_callback(self._callback_tasks.discard)


__all__ = ["EventBus", "NotConnectedError"]
