"""Kubernetes label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from services.common.errors import ApiError, Cause

Requirement = Callable[[Mapping[str, str]], bool]

_SET = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ = re.compile(r"^\s*([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*$")


def _split(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


def parse_selector(selector: str | None, field: str = "labelSelector") -> Requirement:
    """Parse a selector string into a predicate over a label map."""
    if not selector or not selector.strip():
        return lambda labels: True
    reqs: list[Requirement] = []
    for raw in _split(selector):
        if m := _SET.match(raw):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                reqs.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                reqs.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
        elif m := _EQ.match(raw):
            key, op, value = m.groups()
            if op == "!=":
                reqs.append(lambda lb, k=key, v=value: lb.get(k) != v)
            else:
                reqs.append(lambda lb, k=key, v=value: lb.get(k) == v)
        elif m := _EXISTS.match(raw):
            negate, key = m.group(1) == "!", m.group(2)
            reqs.append(lambda lb, k=key, n=negate: (k in lb) != n)
        else:
            raise ApiError(400, f"unable to parse requirement: {raw.strip()!r}",
                           causes=[Cause(field, f"invalid selector requirement {raw.strip()!r}")])
    return lambda labels: all(r(labels) for r in reqs)


def selector_from_match_labels(match: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in match.items())
