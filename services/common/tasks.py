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


async def wait_or_cancel(task: asyncio.Task[Any] | None, grace: float) -> None:
    """Let ``task`` finish on its own for up to ``grace`` seconds, then cancel it and wait.

    For loops that were told to stop (a flag, an event) and should finish the work in hand;
    an error the task raises is the caller's, only its cancellation is absorbed.
    """
    if task is None:
        return
    try:
        async with asyncio.timeout(grace):
            await task
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
