"""Tables and documents for the terminal, shaped like kubectl's."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from services.common.catalog import KindInfo
from services.common.columns import age, cell, lookup


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
        row += [cell(lookup(obj, c.path)) for c in columns]
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
