"""Tables and documents for the terminal, shaped like kubectl's."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml

from services.common.catalog import KindInfo

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


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "<none>" if value is None else ""
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def table(
    kind: KindInfo,
    items: Sequence[dict[str, Any]],
    *,
    wide: bool = False,
    all_namespaces: bool = False,
) -> list[list[str]]:
    columns = [c for c in kind.columns if wide or not c.wide]
    header = (
        (["NAMESPACE"] if all_namespaces else []) + ["NAME"] + [c.name for c in columns] + ["AGE"]
    )
    rows = [header]
    for obj in items:
        meta = obj.get("metadata", {})
        row = ([meta.get("namespace", "")] if all_namespaces else []) + [meta.get("name", "")]
        row += [_cell(lookup(obj, c.path)) for c in columns]
        row.append(age(meta.get("creationTimestamp")))
        rows.append(row)
    return rows


def write_table(rows: Sequence[Sequence[str]], stream: TextIO = sys.stdout) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        stream.write(
            "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )


def write_documents(
    objs: Sequence[dict[str, Any]], fmt: str, stream: TextIO = sys.stdout, *, as_list: bool
) -> None:
    doc: Any = {"apiVersion": "v1", "kind": "List", "items": list(objs)} if as_list else objs[0]
    if fmt == "json":
        stream.write(json.dumps(doc, indent=2) + "\n")
    else:
        stream.write(yaml.safe_dump(doc, sort_keys=False))
