from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.common.resources.conftest import notebook_service  # noqa: F401 - shared fixture


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    within: float = 30.0,
    what: str = "condition",
    every: float = 0.1,
) -> Any:
    """Poll ``probe`` (every ``every`` seconds, bounded in time) until it returns something
    truthy, and return that; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(every)
