"""Katib's ``earlyStoppingRules`` on a running trial: stop it once its objective metric breaks
the rule (``value`` with ``comparison`` LESS, GREATER or EQUAL, from ``startStep`` on).

The watch follows the metrics as the trial's collector sees them: a StdOut trial's log lines
as they are written, a File or Push trial's collected metrics every ``EARLY_STOP_POLL``
seconds. On a break it stops the trial's workload; the trial then ends ``EarlyStopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.automl import collector
from services.automl.template import TRIAL_LABEL
from services.common.runtime import SERVICE_LABEL, Runtime

log = logging.getLogger(__name__)

EARLY_STOP_POLL = 0.5


def rule_for(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The trial's early-stopping rule on its objective metric, if any."""
    objective = spec["objective"]["objectiveMetricName"]
    rules = spec.get("earlyStoppingRules") or []
    return next((r for r in rules if r.get("name") == objective), None)


def breaks(rule: dict[str, Any], values: list[float]) -> bool:
    """Whether the latest of ``values`` breaks ``rule`` (never before its ``startStep``)."""
    if len(values) < int(rule.get("startStep", 1)):
        return False
    limit, value = float(rule["value"]), values[-1]
    comparison = rule.get("comparison")
    if comparison == "LESS":
        return value < limit
    if comparison == "GREATER":
        return value > limit
    return value == limit


class EarlyStopWatch:
    """Watches one trial's objective metric while its workload runs (``start``/``finish``)."""

    def __init__(
        self,
        runtime: Runtime,
        namespace: str,
        trial_name: str,
        workload: str,
        rule: dict[str, Any],
        metric: str,
    ) -> None:
        self.runtime, self.namespace, self.trial_name = runtime, namespace, trial_name
        self.workload, self.rule, self.metric = workload, rule, metric
        self.stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(
        self,
        kind: str,
        parser: collector.TextParser,
        collect: Callable[[], Awaitable[list[collector.MetricLog]]],
    ) -> None:
        """Follow the log through ``parser`` (StdOut) or poll ``collect`` (File, Push); other
        kinds: nothing."""
        if kind == "StdOut":
            self._task = asyncio.create_task(self._follow_stdout(parser))
        elif kind in ("File", "Push"):
            self._task = asyncio.create_task(self._poll(collect))

    async def finish(self) -> None:
        """The workload ended: let a stop in progress complete, then end the watch."""
        if self._task is None:
            return
        if self.stopped.is_set():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._task
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    async def _stop(self) -> None:
        self.stopped.set()
        log.info("trial %s/%s: early stopped by %s", self.namespace, self.trial_name, self.rule)
        await self.runtime.stop_all({SERVICE_LABEL: "automl", TRIAL_LABEL: self.trial_name})

    async def _follow_stdout(self, parser: collector.TextParser) -> None:
        seen: list[float] = []
        turns = collector.LoopTurns()
        async for line in self.runtime.logs(self.namespace, self.workload, follow=True):
            await turns.tick()
            for entry in parser.feed(line):
                if entry.name == self.metric:
                    seen.append(float(entry.value))
                    if breaks(self.rule, seen):
                        await self._stop()
                        return

    async def _poll(self, collect: Callable[[], Awaitable[list[collector.MetricLog]]]) -> None:
        while True:
            await asyncio.sleep(EARLY_STOP_POLL)
            values = [float(m.value) for m in await collect() if m.name == self.metric]
            if breaks(self.rule, values):
                await self._stop()
                return
