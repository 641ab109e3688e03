"""Argo's ``{{...}}`` variable substitution, over plain string-to-string scopes.

A scope maps full dotted names (``inputs.parameters.x``, ``tasks.A.outputs.result``,
``item.field``, ``workflow.name``) to strings. Unknown variables are left in place, so a later
pass (e.g. with task outputs) can still resolve them; :func:`unresolved` finds leftovers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

VARIABLE = re.compile(r"\{\{\s*([^{}=][^{}]*?)\s*\}\}")


def substitute(text: str, scope: Mapping[str, str]) -> str:
    if "{{" not in text:
        return text

    def repl(m: re.Match[str]) -> str:
        value = scope.get(m.group(1))
        return m.group(0) if value is None else value

    return VARIABLE.sub(repl, text)


def substitute_all(value: Any, scope: Mapping[str, str]) -> Any:
    """Substitute in every string inside a JSON-like value."""
    if isinstance(value, str):
        return substitute(value, scope)
    if isinstance(value, list):
        return [substitute_all(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: substitute_all(v, scope) for k, v in value.items()}
    return value


def unresolved(text: str) -> list[str]:
    return VARIABLE.findall(text)


def item_scope(item: Any) -> dict[str, str]:
    """``{{item}}`` and, for objects, ``{{item.key}}`` (nested keys are dotted)."""
    out = {"item": to_text(item)}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                out[f"{prefix}.{k}"] = to_text(v)
                walk(f"{prefix}.{k}", v)

    walk("item", item)
    return out


def to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))
