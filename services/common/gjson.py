"""The GJSON path language (a bounded subset) that KServe's and Katib's conditions are written in.

Both upstreams evaluate these paths with tidwall/gjson (see its SYNTAX.md for the full
language). KServe's router tests an InferenceGraph Switch step's condition with
``gjson.GetBytes(input, condition).Exists()`` on the request, and a Sequence step's on the
previous response (services/serving/router/engine.py); Katib's trial controller reads a
trial's ``successCondition``/``failureCondition`` on its job object
(services/automl/conditions.py). Their documentation and samples use paths
(``instances.0.x``), queries on arrays (``instances.#(intval>10)``, ``#(strval%"*red*")``,
``#(...)#`` for every match, ``#(...)#|#(...)#`` as in Katib's defaults) and the
``[@this]`` multipath that wraps the whole document in an array so an object can be queried
(``[@this].#(source==client)``). This module implements that subset on parsed JSON: keys
(with ``*``/``?`` wildcards and ``\\`` escapes), array indexes, ``#`` (length, or the rest of
the path over every element), queries with ``== != < <= > >= % !%`` (a bare word compares as
a string, as gjson does and KServe's samples rely on), ``@this``, ``[a,b]`` multipaths and
the ``|`` separator. Anything else is refused when the resource is created
(:func:`compile_path` raises :class:`PathError`), never at evaluation time.

Bounded: a condition is at most :data:`MAX_PATH` characters and nests at most
:data:`MAX_DEPTH` queries; ``%`` patterns run on RE2 (linear in the input); evaluation walks
each array once per query level.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from services.common.tenant_regex import PatternError, compile_pattern

MAX_PATH = 1024
MAX_DEPTH = 4
_MISSING = object()
_OPS = ("==", "!=", "<=", ">=", "!%", "=", "<", ">", "%")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


class PathError(ValueError):
    """A condition that is not in the supported GJSON subset; the message says where."""


@dataclass(frozen=True)
class Query:
    """``#(path op value)`` (``op`` None: the path exists); ``all``: ``#(...)#``."""

    path: Path | None
    op: str | None
    value: Any
    all: bool


@dataclass(frozen=True)
class Segment:
    """One path component: ``kind`` is key, count (``#``), query, this or multi."""

    kind: str
    key: str = ""
    wildcard: bool = False
    query: Query | None = None
    paths: tuple[Path, ...] = ()
    piped: bool = False  # reached through ``|``: applies to a ``#`` result as a whole


@dataclass(frozen=True)
class Path:
    segments: tuple[Segment, ...]


def compile_path(text: str, depth: int = 0) -> Path:
    """Parse ``text``; raises :class:`PathError` naming what is not supported."""
    if len(text) > MAX_PATH:
        raise PathError(f"longer than {MAX_PATH} characters")
    if any(ord(ch) < 32 for ch in text):
        raise PathError("control characters are not allowed")
    if depth > MAX_DEPTH:
        raise PathError(f"queries nest deeper than {MAX_DEPTH}")
    segments: list[Segment] = []
    i, piped = 0, False
    if text.startswith("["):
        end = _closing(text, 0, "[", "]")
        parts = _split_top(text[1:end], ",")
        paths = tuple(compile_path(p.strip(), depth + 1) for p in parts if p.strip())
        segments.append(Segment("multi", paths=paths))
        i = end + 1
        if i < len(text) and text[i] not in ".|":
            raise PathError(f"expected '.' or '|' after ']' at {i}")
        piped = i < len(text) and text[i] == "|"
        i += 1
    while i < len(text):
        segment, i = _segment(text, i, depth, piped)
        segments.append(segment)
        if i < len(text):
            piped = text[i] == "|"
            i += 1
    return Path(tuple(segments))


def _segment(text: str, i: int, depth: int, piped: bool) -> tuple[Segment, int]:
    if text.startswith("#(", i):
        end = _closing(text, i + 1, "(", ")")
        query = _query(text[i + 2 : end], depth)
        every = end + 1 < len(text) and text[end + 1] == "#"
        stop = end + 2 if every else end + 1
        if stop < len(text) and text[stop] not in ".|":
            raise PathError(f"expected '.' or '|' after the query at {stop}")
        q = Query(query.path, query.op, query.value, every)
        return Segment("query", query=q, piped=piped), stop
    key, stop, wildcard = _key(text, i)
    if key == "#" and not wildcard:
        return Segment("count", piped=piped), stop
    if key == "@this":
        return Segment("this", piped=piped), stop
    if key.startswith("@"):
        raise PathError(f"modifier {key!r} is not supported (only @this)")
    if not key:
        raise PathError(f"empty path component at {i}")
    return Segment("key", key=key, wildcard=wildcard, piped=piped), stop


def _key(text: str, i: int) -> tuple[str, int, bool]:
    """A key up to the next unescaped separator: (key, where it stops, has wildcards)."""
    out: list[str] = []
    wildcard = False
    while i < len(text) and text[i] not in ".|":
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch in "*?":
            wildcard = True
            out.append("\0" + ch)  # marked: a wildcard, not an escaped literal
        elif ch in "()[]{}":
            raise PathError(f"unexpected {ch!r} at {i}")
        else:
            out.append(ch)
        i += 1
    return "".join(out), i, wildcard


def _query(body: str, depth: int) -> Query:
    at, op = _operator(body)
    if op is None:
        path = compile_path(body.strip(), depth + 1) if body.strip() else None
        return Query(path, None, None, False)
    left, right = body[:at].strip(), body[at + len(op) :].strip()
    path = compile_path(left, depth + 1) if left else None
    return Query(path, "==" if op == "=" else op, _literal(right), False)


def _operator(body: str) -> tuple[int, str | None]:
    """Where the query's comparison is (outside quotes and nested queries)."""
    level, quoted, i = 0, False, 0
    while i < len(body):
        ch = body[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "(":
            level += 1
        elif ch == ")":
            level -= 1
        elif level == 0:
            for op in _OPS:
                if body.startswith(op, i):
                    return i, op
        i += 1
    return -1, None


def _literal(text: str) -> Any:
    if text.startswith('"'):
        try:
            return str(json.loads(text))
        except ValueError:
            raise PathError(f"bad string {text!r} in a query") from None
    if _NUMBER.match(text):
        return float(text)
    return {"true": True, "false": False, "null": None}.get(text, text)


def _closing(text: str, start: int, opening: str, closing: str) -> int:
    level, quoted, i = 0, False, start
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == opening:
            level += 1
        elif ch == closing:
            level -= 1
            if level == 0:
                return i
        i += 1
    raise PathError(f"no closing {closing!r} for the {opening!r} at {start}")


def _split_top(text: str, sep: str) -> list[str]:
    parts, level, quoted, last = [], 0, False, 0
    for i, ch in enumerate(text):
        if quoted:
            quoted = not (ch == '"' and text[i - 1] != "\\")
        elif ch == '"':
            quoted = True
        elif ch in "([":
            level += 1
        elif ch in ")]":
            level -= 1
        elif ch == sep and level == 0:
            parts.append(text[last:i])
            last = i + 1
    parts.append(text[last:])
    return parts


#: :func:`compile_path` with its last results kept: conditions are evaluated again and again.
compiled = functools.lru_cache(maxsize=1024)(compile_path)


# ---------------------------------------------------------------- evaluation
def get(path: Path, doc: Any) -> Any:
    """The value at ``path`` in ``doc``, or ``MISSING``."""
    return _walk(path.segments, doc)


def exists(path: Path, doc: Any) -> bool:
    """As gjson's ``Result.Exists()``: the path leads somewhere (``null`` included)."""
    return get(path, doc) is not _MISSING


MISSING = _MISSING


def _walk(segments: tuple[Segment, ...], value: Any) -> Any:
    for n, seg in enumerate(segments):
        rest = segments[n + 1 :]
        if seg.kind == "this":
            continue
        if seg.kind == "multi":
            value = [v for p in seg.paths if (v := get(p, value)) is not _MISSING]
            continue
        if seg.kind == "key":
            value = _child(value, seg)
        elif not isinstance(value, list):
            return _MISSING
        elif seg.kind == "count":
            if rest and not rest[0].piped:  # ``#.key``: the rest over every element
                return [v for e in value if (v := _walk(rest, e)) is not _MISSING]
            value = len(value)
        else:
            assert seg.query is not None
            matches = (e for e in value if _matches(seg.query, e))
            if not seg.query.all:
                value = next(matches, _MISSING)
            elif rest and not rest[0].piped:
                return [v for e in matches if (v := _walk(rest, e)) is not _MISSING]
            else:
                value = list(matches)
        if value is _MISSING:
            return _MISSING
    return value


def _child(value: Any, seg: Segment) -> Any:
    if isinstance(value, dict):
        if not seg.wildcard:
            return value.get(seg.key, _MISSING)
        pattern = _wildcard(seg.key)
        return next((v for k, v in value.items() if pattern.search(k)), _MISSING)
    if isinstance(value, list) and not seg.wildcard and seg.key.isdigit():
        index = int(seg.key)
        return value[index] if index < len(value) else _MISSING
    return _MISSING


def _matches(query: Query, element: Any) -> bool:
    left = get(query.path, element) if query.path is not None else element
    if left is _MISSING:
        return False
    if query.op is None:
        return True
    right = query.value
    if query.op in ("%", "!%"):
        if not isinstance(left, str):
            return False
        found = _wildcard(str(right), marked=False).search(left)
        return found if query.op == "%" else not found
    if isinstance(left, bool) or isinstance(right, bool) or left is None or right is None:
        same = left is right or left == right
        return same if query.op == "==" else (not same if query.op == "!=" else False)
    if isinstance(left, (int, float)) and isinstance(right, float):
        return _compare(float(left), right, query.op)
    if isinstance(left, str) and isinstance(right, str):
        return _compare(left, right, query.op)
    return query.op == "!="


def _compare(left: Any, right: Any, op: str) -> bool:
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _wildcard(pattern: str, marked: bool = True) -> Any:
    """A key or ``%`` pattern (``*`` any run, ``?`` one character) as an anchored RE2."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if marked and ch == "\0":
            out.append(".*" if pattern[i + 1] == "*" else ".")
            i += 2
            continue
        if not marked and ch in "*?":
            out.append(".*" if ch == "*" else ".")
        elif not marked and ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    try:
        return compile_pattern("(?s)^" + "".join(out) + "$")
    except PatternError as exc:
        raise PathError(f"pattern {pattern!r}: {exc}") from None
