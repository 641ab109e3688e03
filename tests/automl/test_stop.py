"""Stopping the automl service while trials end: a stop (a cancel) is never lost.

The controller's workers and trial watchers wait on trial workloads (``runtime.wait``,
``runtime.delete``). A worker whose cancel was lost carries on and waits for the next key
forever, and the service's stop waits for it: an automl test teardown once hung that way,
stopped while the experiment it had just deleted had its trials' workloads end.
"""

from __future__ import annotations

import asyncio
import os
import select
from pathlib import Path

import psutil
import pytest

from services.common.runtime import LocalRuntime

pytestmark = pytest.mark.timeout(60)


async def test_wait_cancelled_as_its_workload_exits_ends_cancelled(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path)
    try:
        await runtime.apply({"namespace": "stop", "name": "exits", "command": ["sleep", "1"]})
        # The workload's supervisor: a child of ours, started with the workload's directory.
        supervisor = next(
            p
            for p in psutil.process_iter(["ppid", "cmdline"])
            if p.info["ppid"] == os.getpid()
            and (p.info["cmdline"] or [""])[-1].endswith("/workloads/stop/exits")
        )
        waiting = asyncio.create_task(runtime.wait("stop", "exits", timeout=30))
        await asyncio.sleep(0)  # one turn: the wait starts, and waits for the supervisor's exit
        assert not waiting.done()
        # The cancel and the supervisor's exit in one turn of the loop, as when a service stops
        # just as a trial's workload ends: the cancel is queued, then the loop is held (a
        # blocking select) until the supervisor has exited, so that the loop's next turn
        # runs the cancel and sees the exit together.
        asyncio.get_running_loop().call_soon(waiting.cancel)
        pidfd = os.pidfd_open(supervisor.pid)
        try:
            readable, _, _ = select.select([pidfd], [], [], 10)
        finally:
            os.close(pidfd)
        assert readable, "the workload's supervisor did not exit"
        await asyncio.wait([waiting], timeout=10)
        assert waiting.cancelled(), f"the wait ignored its cancel: {waiting!r}"
    finally:
        await runtime.stop_all()
        await runtime.close()
