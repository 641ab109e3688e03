"""Printer columns' values: a path into an object, and the cell ``shipyard get`` and
``kubectl get`` (through the server's Tables) print for it.

Standard library only: the CLI imports it without loading the services' code.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

_SELECT = re.compile(r"^(\w+)\[(-?\d+|(\w+)=([^\]]*))\]$")


def lookup(obj: Any, path: str) -> Any:
    """Follow a path: ``status.phase``, ``conditions[-1].type``, ``conditions[type=Ready]``."""
    node = obj
    for part in path.split("."):
        if node is None:
            return None
        match = _SELECT.match(part)
        if match:
            node = node.get(match.group(1)) if isinstance(node, dict) else None
            if not isinstance(node, list) or not node:
                return None
            if match.group(3):
                node = next(
                    (
                        n
                        for n in node
                        if isinstance(n, dict) and str(n.get(match.group(3))) == match.group(4)
                    ),
                    None,
                )
            else:
                index = int(match.group(2))
                node = node[index] if -len(node) <= index < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return node


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """Time since ``timestamp`` (RFC 3339) as kubectl shows it: ``42s``, ``5m``, ``3h``, ``2d``."""
    if not timestamp:
        return "<unknown>"
    try:
        created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    seconds = int(((now or datetime.now(UTC)) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def cell(value: Any) -> str:
    """A value as a table cell: ``<none>`` when absent, lists joined by commas."""
    if value is None or value == "":
        return "<none>" if value is None else ""
    if isinstance(value, list):
        return ",".join(cell(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
