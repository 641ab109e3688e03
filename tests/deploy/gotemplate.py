"""A tiny renderer for the subset of Go templates the shipyard Helm chart uses.

There is no helm binary here, so tests/deploy/test_chart.py renders the chart with this.
Supported: ``{{ }}`` actions with ``{{-``/``-}}`` trimming; ``if``/``else``/``end``;
``range $k, $v := ...`` (dot is rebound to the element, as in Go); values ``.A.b``, ``$``,
``$.A.b``, ``$var.x``, string and integer literals; pipelines with ``quote``, ``upper``,
``toYaml``, ``nindent``, ``indent``, ``default``, ``not`` and ``eq``. Anything else raises, so a
template that strays from the subset fails the test instead of rendering wrongly. It is
stricter than Helm in one way, on purpose: a missing values key raises instead of
rendering empty, which is how the test proves every reference exists.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)


class TemplateError(Exception):
    pass


@dataclass
class _Node:
    kind: str  # text | expr | if | range
    arg: str = ""
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _tokens(source: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", m.group(2)))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = source[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(tokens: list[tuple[str, str]], i: int, stop: tuple[str, ...]) -> tuple[list[_Node], int]:
    nodes: list[_Node] = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(_Node("text", value))
            i += 1
            continue
        word = value.split(" ", 1)[0]
        if word in stop:
            return nodes, i
        if word in ("if", "range"):
            node = _Node(word, value[len(word) :].strip())
            node.body, i = _parse(tokens, i + 1, ("else", "end"))
            if tokens[i][1] == "else":
                node.orelse, i = _parse(tokens, i + 1, ("end",))
            nodes.append(node)
            i += 1
        elif word in ("else", "end"):
            raise TemplateError(f"unexpected {{{{ {value} }}}}")
        else:
            nodes.append(_Node("expr", value))
            i += 1
    if stop:
        raise TemplateError(f"missing {{{{ end }}}} (wanted one of {stop})")
    return nodes, i


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and value != {} and value != []


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def _indent(width: int, text: str) -> str:
    return "\n".join(" " * width + line for line in str(text).splitlines())


_FUNCS: dict[str, Callable[..., Any]] = {
    "quote": lambda v: json.dumps(_format(v)),
    "upper": lambda v: _format(v).upper(),
    "toYaml": lambda v: (
        yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")
        if v != {}
        else "{}"
    ),
    "indent": _indent,
    "nindent": lambda width, text: "\n" + _indent(width, text),
    "default": lambda fallback, v: v if _truthy(v) else fallback,
    "not": lambda v: not _truthy(v),
    "eq": lambda a, b: a == b,
}


class _Scope:
    def __init__(self, root: Any, dot: Any, variables: dict[str, Any]) -> None:
        self.root, self.dot, self.vars = root, dot, variables

    def value(self, word: str) -> Any:
        if word.startswith('"'):
            return json.loads(word)
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word.startswith("$"):
            name, _, path = word.partition(".")
            base = self.root if name == "$" else self.vars[name]
        elif word.startswith("."):
            base, path = self.dot, word[1:]
        else:
            raise TemplateError(f"unsupported operand {word!r}")
        for key in filter(None, path.split(".")):
            if not isinstance(base, dict) or key not in base:
                raise TemplateError(f"{word}: no key {key!r}")
            base = base[key]
        return base

    def pipeline(self, expr: str) -> Any:
        result: Any = _NOTHING
        for command in (c.strip() for c in expr.split("|")):
            words = shlex.split(command, posix=False)
            if words[0] in _FUNCS:
                args = [self.value(w) for w in words[1:]]
                if result is not _NOTHING:
                    args.append(result)
                result = _FUNCS[words[0]](*args)
            elif len(words) == 1 and result is _NOTHING:
                result = self.value(words[0])
            else:
                raise TemplateError(f"unsupported command {command!r}")
        return result


_NOTHING = object()


def _render(nodes: list[_Node], scope: _Scope) -> str:
    out: list[str] = []
    for node in nodes:
        if node.kind == "text":
            out.append(node.arg)
        elif node.kind == "expr":
            out.append(_format(scope.pipeline(node.arg)))
        elif node.kind == "if":
            branch = node.body if _truthy(scope.pipeline(node.arg)) else node.orelse
            out.append(_render(branch, scope))
        else:
            m = re.fullmatch(r"(\$\w+)\s*,\s*(\$\w+)\s*:=\s*(.+)", node.arg)
            if not m:
                raise TemplateError(f"unsupported range {node.arg!r}")
            collection = scope.pipeline(m.group(3))
            items = (
                sorted(collection.items())
                if isinstance(collection, dict)
                else list(enumerate(collection or []))
            )
            if not items:
                out.append(_render(node.orelse, scope))
            for key, item in items:
                inner = _Scope(scope.root, item, {**scope.vars, m.group(1): key, m.group(2): item})
                out.append(_render(node.body, inner))
    return "".join(out)


def render(source: str, context: dict[str, Any]) -> str:
    """Render ``source`` with ``context`` as both dot and ``$`` (Helm's top-level object)."""
    nodes, _ = _parse(_tokens(source), 0, ())
    return _render(nodes, _Scope(context, context, {}))
