"""Metrics collection: parse a trial's output (StdOut, File TEXT/JSON) into observation logs.

Katib's StdOut and File-TEXT collectors apply the filter regexes (default
``([\\w|-]+)\\s*=\\s*([+-]?\\d*(\\.\\d+)?([Ee][+-]?\\d+)?)``; group 1 is the metric name,
group 2 its value) to every line and keep the metrics the objective names. File-JSON reads
one object per line, whose keys are metric names, with an optional ``timestamp`` (RFC 3339
or epoch seconds) and ``step``. A line may begin with an RFC 3339 timestamp, which then
dates its metrics. Without an explicit step, a metric's n-th report has step n (from 0).

The filters are the tenant's own regexes, so they run on RE2 (linear time, and the Go
semantics Katib's collector has): see services/common/tenant_regex.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.common.tenant_regex import PatternError, TenantPattern, compile_pattern

DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
UNAVAILABLE = "unavailable"
_NEVER = r"(a)(b)\z\A"  # matches no line
log = logging.getLogger(__name__)
_LEADING_TIME = re.compile(
    r"^\s*(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)"
)


@dataclass
class MetricLog:
    name: str
    value: str
    time: datetime
    step: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Katib's MetricLog shape, plus the step."""
        return {
            "timeStamp": self.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "metric": {"name": self.name, "value": self.value},
            "step": self.step,
        }


def metric_names(objective: dict[str, Any]) -> list[str]:
    return [objective["objectiveMetricName"], *(objective.get("additionalMetricNames") or [])]


def parse_time(raw: Any) -> datetime | None:
    if isinstance(raw, int | float):
        return datetime.fromtimestamp(float(raw), UTC)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "T", 1))
        except ValueError:
            try:
                return datetime.fromtimestamp(float(raw), UTC)
            except ValueError:
                return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


class TextParser:
    """Incremental parser for StdOut and File-TEXT output; feed lines, read ``logs``."""

    def __init__(self, names: Iterable[str], formats: list[str] | None = None) -> None:
        self.names = set(names)
        self.filters = [_filter(f) for f in (formats or [DEFAULT_FILTER])]
        self.logs: list[MetricLog] = []
        self._counts: dict[str, int] = {}

    def feed(self, line: str, now: datetime | None = None) -> list[MetricLog]:
        found: list[MetricLog] = []
        stamp = None
        match = _LEADING_TIME.match(line)
        if match:
            stamp = parse_time(match.group(1))
            line = line[match.end() :]
        when = stamp or now or datetime.now(UTC)
        for regex in self.filters:
            for groups in regex.findall(line):
                name, value = groups[0].strip(), groups[1].strip()
                if name not in self.names or not _is_number(value):
                    continue
                step = self._counts.get(name, 0)
                self._counts[name] = step + 1
                found.append(MetricLog(name, value, when, step))
        self.logs.extend(found)
        return found


class LoopTurns:
    """Gives the event loop a turn every ``slice_seconds`` of a long synchronous job.

    A trial's output can be millions of lines, and the automl service runs every other
    experiment on the same loop: parsing it in one go would stop them all for seconds.
    """

    def __init__(self, slice_seconds: float = 0.02) -> None:
        self.slice_seconds = slice_seconds
        self._due = time.monotonic() + slice_seconds

    async def tick(self) -> None:
        if time.monotonic() >= self._due:
            await asyncio.sleep(0)
            self._due = time.monotonic() + self.slice_seconds


async def feed_all(
    parser: TextParser, lines: AsyncIterable[str] | Iterable[str]
) -> list[MetricLog]:
    """Feed every line to ``parser`` (a turn to the event loop every 20 ms); its ``logs``."""
    turns = LoopTurns()
    if isinstance(lines, AsyncIterable):
        async for line in lines:
            parser.feed(line)
            await turns.tick()
    else:
        for line in lines:
            parser.feed(line)
            await turns.tick()
    return parser.logs


def _filter(pattern: str) -> TenantPattern:
    """A metrics filter. Validation refuses one RE2 cannot compile or with fewer than two
    groups; one stored before that rule existed matches nothing (the trial then reports
    MetricsUnavailable) rather than failing the collector."""
    try:
        compiled = compile_pattern(pattern)
    except PatternError as exc:
        log.warning("metrics filter %r ignored: %s", pattern, exc)
        return compile_pattern(_NEVER)
    if compiled.groups < 2:
        log.warning("metrics filter %r ignored: it needs two groups", pattern)
        return compile_pattern(_NEVER)
    return compiled


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def parse_json_lines(lines: Iterable[str], names: Iterable[str]) -> list[MetricLog]:
    wanted = set(names)
    out: list[MetricLog] = []
    counts: dict[str, int] = {}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        when = parse_time(record.get("timestamp")) or datetime.now(UTC)
        explicit_step = record.get("step")
        for name, value in record.items():
            if name not in wanted or not _is_number(str(value)):
                continue
            step = counts.get(name, 0)
            counts[name] = step + 1
            if isinstance(explicit_step, int):
                step = explicit_step
            out.append(MetricLog(name, str(value), when, step))
    return out


def observation(logs: Iterable[MetricLog], objective: dict[str, Any]) -> dict[str, Any]:
    """Katib's ``status.observation``: per metric ``{name, min, max, latest}`` as strings."""
    by_name: dict[str, list[MetricLog]] = {}
    for entry in logs:
        by_name.setdefault(entry.name, []).append(entry)
    metrics = []
    for name in metric_names(objective):
        entries = by_name.get(name)
        if not entries:
            metrics.append(
                {"name": name, "min": UNAVAILABLE, "max": UNAVAILABLE, "latest": UNAVAILABLE}
            )
            continue
        values = [float(e.value) for e in entries]
        metrics.append(
            {
                "name": name,
                "min": _fmt(min(values)),
                "max": _fmt(max(values)),
                "latest": entries[-1].value,
            }
        )
    return {"metrics": metrics}


def _fmt(value: float) -> str:
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def objective_value(obs: dict[str, Any] | None, objective: dict[str, Any]) -> float | None:
    """The objective by its metric strategy, as Katib's getObjectiveMetricValue picks it."""
    if not obs:
        return None
    name = objective["objectiveMetricName"]
    strategy = next(
        (s["value"] for s in objective.get("metricStrategies") or [] if s["name"] == name), "latest"
    )
    for metric in obs.get("metrics") or []:
        if metric["name"] != name:
            continue
        raw = metric.get(strategy)
        if raw in (None, UNAVAILABLE):
            raw = metric.get("latest")
        if raw in (None, UNAVAILABLE):
            return None
        try:
            return float(raw)
        except ValueError:
            return None
    return None
