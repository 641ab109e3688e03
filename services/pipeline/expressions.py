"""Safe evaluation of Argo's ``when`` conditions and ``depends`` expressions.

A small tokenizer and recursive-descent parser; nothing is ever passed to ``eval``. The
``when`` grammar follows what Argo workflows use in practice (govaluate): ``== != < > <= >=``,
``=~`` / ``!~`` (regex), ``&& || !``, parentheses, quoted strings, numbers, ``true``/``false``
and bare words (which are strings: ``{{steps.flip.outputs.result}} == heads``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from services.common.tenant_regex import PatternError, compile_pattern


class ExpressionError(ValueError):
    """The expression does not parse; the message says where."""


_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<op>&&|\|\||==|!=|<=|>=|=~|!~|<|>|!|\(|\))
    | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<num>-?\d+(?:\.\d+)?(?![\w.-]))
    | (?P<word>[^\s()!&|=<>'"]+)
    )""",
    re.VERBOSE,
)

_MISSING = object()


def tokenize(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"unexpected character at {pos}: {text[pos : pos + 10]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class _Parser:
    def __init__(self, text: str, atom: Callable[[str, str], Any]) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.atom = atom
        self.text = text

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ExpressionError(f"unexpected end of expression {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} in {self.text!r}")  # type: ignore[index]
        return value

    def or_(self) -> Any:
        left = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_()
            left = _truthy(left) or _truthy(right)
        return left

    def and_(self) -> Any:
        left = self.not_()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.not_()
            left = _truthy(left) and _truthy(right)
        return left

    def not_(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not _truthy(self.not_())
        return self.compare()

    def compare(self) -> Any:
        left = self.primary()
        tok = self.peek()
        if tok and tok[0] == "op" and tok[1] in ("==", "!=", "<", ">", "<=", ">=", "=~", "!~"):
            self.take()
            right = self.primary()
            return _compare(tok[1], left, right)
        return left

    def primary(self) -> Any:
        kind, value = self.take()
        if (kind, value) == ("op", "("):
            inner = self.or_()
            if self.take() != ("op", ")"):
                raise ExpressionError(f"missing ')' in {self.text!r}")
            return inner
        if kind == "op":
            raise ExpressionError(f"unexpected {value!r} in {self.text!r}")
        return self.atom(kind, value)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() not in ("", "false", "0")
    return bool(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _compare(op: str, left: Any, right: Any) -> bool:
    if op in ("=~", "!~"):
        try:  # the tenant's regex: RE2, linear time, and Argo's (Go) semantics
            found = compile_pattern(str(right)).search(str(left))
        except PatternError as exc:
            raise ExpressionError(f"bad regular expression {right!r}: {exc}") from None
        return found if op == "=~" else not found
    ln, rn = _number(left), _number(right)
    if ln is not None and rn is not None:
        a: Any = ln
        b: Any = rn
    else:
        a, b = _text(left), _text(right)
    if op == "==":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if isinstance(a, str) != isinstance(b, str):
        raise ExpressionError(f"cannot compare {left!r} {op} {right!r}")
    return bool({"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op])


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _when_atom(kind: str, value: str) -> Any:
    if kind == "str":
        return bytes(value[1:-1], "utf-8").decode("unicode_escape")
    if kind == "num":
        return float(value)
    if value in ("true", "false"):
        return value == "true"
    return value


def evaluate_when(expression: str) -> bool:
    """Evaluate a (substituted) ``when`` condition."""
    if "{{" in expression:
        raise ExpressionError(f"unresolved variable in {expression!r}")
    return _truthy(_Parser(expression, _when_atom).parse())


def check_when_syntax(expression: str) -> None:
    """Parse only (variables replaced by a placeholder), for validation at submission."""
    _Parser(re.sub(r"\{\{[^}]*\}\}", "x", expression), lambda k, v: v).parse()


DEPENDS_RESULTS = (
    "Succeeded",
    "Failed",
    "Errored",
    "Skipped",
    "Omitted",
    "Daemoned",
    "AnySucceeded",
    "AllFailed",
)


def parse_depends_operands(expression: str) -> list[tuple[str, str | None]]:
    """The (task, result) pairs a ``depends`` expression mentions; raises on bad syntax."""
    found: list[tuple[str, str | None]] = []

    def atom(kind: str, value: str) -> bool:
        if kind != "word":
            raise ExpressionError(f"unexpected {value!r} in depends {expression!r}")
        task, result = _split_operand(value)
        found.append((task, result))
        return True

    _Parser(expression, atom).parse()
    return found


def _split_operand(value: str) -> tuple[str, str | None]:
    task, dot, result = value.rpartition(".")
    if dot and result in DEPENDS_RESULTS:
        return task, result
    if dot and result[:1].isupper():
        raise ExpressionError(
            f"unknown task result {result!r} in {value!r}; use one of {', '.join(DEPENDS_RESULTS)}"
        )
    return value, None


def evaluate_depends(expression: str, result_of: Callable[[str, str | None], bool]) -> bool:
    """Evaluate ``depends`` given ``result_of(task, result)`` for each operand."""

    def atom(kind: str, value: str) -> bool:
        task, result = _split_operand(value)
        return result_of(task, result)

    return bool(_Parser(expression, atom).parse())
