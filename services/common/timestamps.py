"""RFC 3339 timestamps as Kubernetes objects and Jupyter's API write them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now_rfc3339() -> str:
    """Now, in UTC, to the second (``2024-01-02T03:04:05Z``), as Kubernetes metadata has it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (Kubernetes', Jupyter's or ours) as an aware datetime, or None.

    Anything that is not a non-empty string, or does not parse, is None; a time without an
    offset is taken as UTC.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
