"""Helpers for the background asyncio tasks that services start and stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel every task (None is skipped), then wait until each has finished.

    Used on shutdown: what a task raises on its way out (its CancelledError, or an error
    it had already died of) is dropped, so one failed loop cannot stop the others' stop.
    """
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    for task in live:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
