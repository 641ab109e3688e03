"""Cron schedules: Argo's 5-field form and KFP's 6-field form (seconds first), with time zones.

A small, dependency-free matcher: each field becomes a set of allowed values, and ``next_fire``
walks forward month → day → hour → minute → second, skipping whole units that cannot match,
so even sparse schedules resolve in a few hundred steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())
}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
MAX_STEPS = 200_000


@dataclass(frozen=True)
class Schedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    dom_star: bool
    dow_star: bool
    tz: ZoneInfo | None

    def matches_day(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow  # both restricted: either matches (cron semantics)

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (returned in UTC)."""
        tz = self.tz or UTC
        t = after.astimezone(tz).replace(tzinfo=None, microsecond=0) + timedelta(seconds=1)
        for _ in range(MAX_STEPS):
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(
                    day=1
                )
                continue
            if not self.matches_day(t):
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            if t.second not in self.seconds:
                t = t + timedelta(seconds=1)
                continue
            return t.replace(tzinfo=tz).astimezone(UTC)
        raise ValueError("schedule never fires")


def _field(text: str, lo: int, hi: int, names: dict[str, int] | None = None) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step <= 0:
            raise ValueError(f"bad step in {part!r}")
        if base in ("*", "?"):
            start, end = lo, hi
        else:
            a, _, b = base.partition("-")
            start = _value(a, names)
            end = _value(b, names) if b else (hi if step_text else start)
        if hi == 7 and end == 7:  # day-of-week 7 is Sunday too
            end = 6 if start <= 6 else 0
            out.add(0)
        if not (lo <= start <= hi and lo <= end <= hi) or start > end:
            raise ValueError(f"{part!r} is out of range {lo}-{hi}")
        out.update(range(start, end + 1, step))
    return frozenset(out)


def _value(text: str, names: dict[str, int] | None) -> int:
    if names and text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number")
    return int(text)


def parse_schedule(
    text: str, timezone: str | None = None, *, with_seconds: bool = False
) -> Schedule:
    """Parse a cron line; ``with_seconds`` expects KFP's 6 fields (seconds first)."""
    text = _MACROS.get(text.strip(), text.strip())
    fields = text.split()
    if with_seconds and len(fields) == 5 and text in _MACROS.values():
        fields = ["0", *fields]
    want = 6 if with_seconds else 5
    if len(fields) != want:
        raise ValueError(f"expected {want} fields, got {len(fields)} in {text!r}")
    if not with_seconds:
        fields = ["0", *fields]
    try:
        tz = ZoneInfo(timezone) if timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}") from None
    return Schedule(
        seconds=_field(fields[0], 0, 59),
        minutes=_field(fields[1], 0, 59),
        hours=_field(fields[2], 0, 23),
        days=_field(fields[3], 1, 31),
        months=_field(fields[4], 1, 12, _MONTHS),
        weekdays=_field(fields[5], 0, 7, _DAYS),
        dom_star=fields[3] in ("*", "?"),
        dow_star=fields[5] in ("*", "?"),
        tz=tz,
    )


def check_schedule(
    text: str, timezone: str | None = None, *, with_seconds: bool = False
) -> str | None:
    """None if the schedule is valid, else what is wrong with it."""
    try:
        parse_schedule(text, timezone, with_seconds=with_seconds).next_fire(datetime.now(UTC))
    except ValueError as exc:
        return f"invalid cron schedule {text!r}: {exc}"
    return None
