"""Kubernetes label selectors: ``{"a": "b"}`` or the string form ``"a=b,c!=d,e in (x,y),!f"``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

LabelSelector = Mapping[str, str] | str | None

#: The label every workload carries with the name of the service that runs it (adoption,
#: orderly shutdown, `shipyard get` of a service's workloads). Defined here, once.
SERVICE_LABEL = "shipyard.io/service"
_SET_RE = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(selector: str) -> list[str]:
    # Commas separate terms except inside the parentheses of a set-based term.
    terms: list[str] = []
    current: list[str] = []
    depth = 0
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


Check = Callable[[Mapping[str, str]], bool]


def _equals(key: str, value: str, negate: bool) -> Check:
    def check(labels: Mapping[str, str]) -> bool:
        return (labels.get(key) == value) != negate

    return check


def _in_set(key: str, values: frozenset[str], negate: bool) -> Check:
    def check(labels: Mapping[str, str]) -> bool:
        return (labels.get(key) in values) != negate

    return check


def _exists(key: str, negate: bool) -> Check:
    def check(labels: Mapping[str, str]) -> bool:
        return (key in labels) != negate

    return check


def parse_selector(selector: LabelSelector) -> Check:
    """Compile a selector into a predicate over a label dict; raise ValueError if malformed."""
    if selector is None:
        return lambda labels: True
    if isinstance(selector, Mapping):
        wanted = dict(selector)
        return lambda labels: all(labels.get(k) == v for k, v in wanted.items())
    checks: list[Check] = []
    for term in _split_terms(selector):
        if re.match(r"^\s*(!=|=)", term):
            raise ValueError(f"labelSelector: empty key in {term!r}")
        if m := _SET_RE.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            checks.append(_in_set(m.group(1), values, negate=m.group(2) == "notin"))
        elif "!=" in term:
            key, value = (p.strip() for p in term.split("!=", 1))
            checks.append(_equals(key, value, negate=True))
        elif "=" in term:
            key, value = (p.strip() for p in term.replace("==", "=", 1).split("=", 1))
            checks.append(_equals(key, value, negate=False))
        elif term.startswith("!"):
            checks.append(_exists(term[1:].strip(), negate=True))
        elif re.match(r"^[^\s!=(),]+$", term):
            checks.append(_exists(term, negate=False))
        else:
            raise ValueError(f"labelSelector: cannot parse term {term!r}")
    return lambda labels: all(check(labels) for check in checks)
