"""A controller's failed reconcile is retried with back-off; one that waits for room under
its namespace's quota says so in a warning, with the quota's words and no stack trace.

The store is a stand-in: the controller's loop only asks it for listeners, a resync list and a
database ping, and what is tested is the loop, not a store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from services.common.controller import Controller
from services.common.runtime.quota import QuotaRefused
from services.notebook.models import PVC

WORDS = 'persistentvolumeclaims "m" is forbidden: exceeded quota: kf-resource-quota, ...'


class _Db:
    async def ping(self, within: float) -> bool:
        return True


class _Store:
    db = _Db()

    def add_listener(self, listener: Any) -> None:
        pass

    async def list_all(self, kind: Any) -> list[dict[str, Any]]:
        return []


class _Flaky(Controller):
    kinds = (PVC,)
    workers = 1

    def __init__(self, failures: list[Exception]) -> None:
        super().__init__(_Store())  # type: ignore[arg-type]
        self.failures = failures
        self.passes = 0
        self.done = asyncio.Event()

    async def reconcile(self, kind: Any, namespace: str, name: str) -> None:
        self.passes += 1
        if self.failures:
            raise self.failures.pop(0)
        self.done.set()


async def test_quota_waits_are_warnings_and_faults_keep_their_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    controller = _Flaky([QuotaRefused(WORDS, final=False), RuntimeError("a real fault")])
    caplog.set_level(logging.WARNING, logger="services.common.controller")
    await controller.start()
    try:
        controller.enqueue(PVC, "team-q", "m")
        async with asyncio.timeout(10):
            await controller.done.wait()
    finally:
        await controller.stop()
    assert controller.passes == 3  # retried after each failure, then done
    waits, faults = caplog.records[0], caplog.records[1]
    assert waits.levelno == logging.WARNING and waits.exc_info is None
    assert "waits for quota room" in waits.getMessage() and WORDS in waits.getMessage()
    assert faults.levelno == logging.ERROR and faults.exc_info is not None
    assert "failed (attempt 2)" in faults.getMessage()  # the attempts of one key add up
