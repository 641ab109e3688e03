"""Kubernetes label selectors: ``{"a": "b"}`` or the string form ``"a=b,c!=d,e in (x,y),!f"``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

LabelSelector = Mapping[str, str] | str | None

_SET_RE = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(selector: str) -> list[str]:
    # Commas separate terms except inside the parentheses of a set-based term.
    terms, depth, current = [], 0, []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return [t.strip() for t in terms if t.strip()]


def parse_selector(selector: LabelSelector) -> Callable[[Mapping[str, str]], bool]:
    """Compile a selector into a predicate over a label dict; raise ValueError if malformed."""
    if selector is None:
        return lambda labels: True
    if isinstance(selector, Mapping):
        wanted = dict(selector)
        return lambda labels: all(labels.get(k) == v for k, v in wanted.items())
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _split_terms(selector):
        if m := _SET_RE.match(term):
            key, op = m.group(1), m.group(2)
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                checks.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                checks.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
        elif "!=" in term:
            key, value = (p.strip() for p in term.split("!=", 1))
            checks.append(lambda lb, k=key, v=value: lb.get(k) != v)
        elif "=" in term:
            key, value = (p.strip() for p in term.replace("==", "=", 1).split("=", 1))
            checks.append(lambda lb, k=key, v=value: lb.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            checks.append(lambda lb, k=absent: k not in lb)
        elif re.match(r"^[^\s!=(),]+$", term):
            checks.append(lambda lb, k=term: k in lb)
        else:
            raise ValueError(f"labelSelector: cannot parse term {term!r}")
        if re.match(r"^\s*(!=|=)", term):
            raise ValueError(f"labelSelector: empty key in {term!r}")
    return lambda labels: all(check(labels) for check in checks)
