"""Katib's trial success and failure conditions: a small subset of GJSON paths, evaluated as the
Trial controller does on the job object a trial runs.

Katib stores ``successCondition`` and ``failureCondition`` as GJSON paths
(https://github.com/tidwall/gjson/blob/master/SYNTAX.md), for example its default for a
batch/v1 Job, ``status.conditions.#(type=="Complete")#|#(status=="True")#``. The trial's job
has succeeded (or failed) when the path gives an object or a non-empty array; the failure
condition is tried first, and the first element of an array is the condition whose
``reason`` and ``message`` the trial reports.

The subset here is what such conditions use, no more:

* keys separated by ``.`` (``\\.`` for a dot inside a key), array indices, ``#`` (length);
* queries ``#(path op value)`` (the first match) and ``#(path op value)#`` (every match),
  with ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` against a JSON literal (a quoted string,
  a number, ``true``, ``false``, ``null``), or ``#(path)`` for "exists";
* ``|``, which applies the rest of the path to the result as a whole, where ``.`` after an
  every-match query applies it to each match (``items.#(a>1)#.name``).

Anything else (modifiers, wildcards, multipaths) is refused by :func:`check` with a message,
so a condition that would silently never match is caught when the experiment is created.
"""

from __future__ import annotations

import json
import re
from typing import Any

MISSING: Any = object()
#: Longest condition accepted (they are tenant input, evaluated on every trial check).
MAX_CONDITION = 1024
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_UNSUPPORTED = re.compile(r"[*?@{}\[\]]")


class ConditionError(ValueError):
    """The condition uses GJSON syntax outside the supported subset (the message says what)."""


def _split(path: str) -> list[tuple[str, str]]:
    """(separator before, component) pairs at the top level: not inside ``#(...)`` or quotes."""
    parts: list[tuple[str, str]] = []
    depth, quote, escaped = 0, False, False
    sep, start = "", 0
    for i, ch in enumerate(path):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quote:
            quote = ch != '"'
        elif ch == '"':
            quote = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ConditionError(f"unbalanced ')' at {i}")
        elif depth == 0 and ch in ".|":
            parts.append((sep, path[start:i]))
            sep, start = ch, i + 1
    if depth or quote:
        raise ConditionError("unclosed '(' or '\"'")
    parts.append((sep, path[start:]))
    return parts


def _literal(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        raise ConditionError(f"{text!r} is not a JSON value (quote strings)") from None


def _query(inner: str) -> tuple[str, str | None, Any]:
    """``path op value`` inside ``#(...)``: (path, operator or None, value)."""
    quote = False
    for i, ch in enumerate(inner):
        if ch == '"':
            quote = not quote
        if quote:
            continue
        for op in _OPERATORS:
            if inner.startswith(op, i):
                return inner[:i].strip(), op, _literal(inner[i + len(op) :])
    return inner.strip(), None, None


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    numbers = (int, float)
    comparable = (isinstance(left, numbers) and isinstance(right, numbers)) or (
        isinstance(left, str) and isinstance(right, str)
    )
    if not comparable or isinstance(left, bool) or isinstance(right, bool):
        return False
    return {
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
    }[op]


def _matches(item: Any, inner: str) -> bool:
    path, op, value = _query(inner)
    left = get(item, path) if path else item
    if op is None:
        return left is not MISSING
    return left is not MISSING and _compare(left, op, value)


def _step(value: Any, component: str) -> Any:
    if component == "#":
        return len(value) if isinstance(value, list) else MISSING
    if component.startswith("#("):
        every = component.endswith(")#")
        if not (every or component.endswith(")")):
            raise ConditionError(f"{component!r}: a query ends with ')' or ')#'")
        if not isinstance(value, list):
            return MISSING
        inner = component[2:-2] if every else component[2:-1]
        found = [item for item in value if _matches(item, inner)]
        if every:
            return found
        return found[0] if found else MISSING
    key = component.replace("\\.", ".")
    if isinstance(value, dict):
        return value.get(key, MISSING)
    if isinstance(value, list) and key.isdigit():
        index = int(key)
        return value[index] if index < len(value) else MISSING
    return MISSING


def get(document: Any, path: str) -> Any:
    """The value at ``path`` in ``document`` (parsed JSON), or :data:`MISSING`."""
    value, each = document, False
    for sep, component in _split(path):
        if not component:
            raise ConditionError("an empty path component")
        if each and sep == ".":  # after an every-match query: the rest applies to each match
            value = [v for v in (_step(x, component) for x in value) if v is not MISSING]
            continue
        value = _step(value, component)
        if value is MISSING:
            return MISSING
        each = component.startswith("#(") and component.endswith(")#")
    return value


def check(condition: str) -> None:
    """Raise :class:`ConditionError` unless ``condition`` is in the supported subset."""
    if len(condition) > MAX_CONDITION:
        raise ConditionError(f"longer than {MAX_CONDITION} characters")
    outside = re.sub(r'"(?:[^"\\]|\\.)*"', '""', condition)  # literals may hold anything
    bad = _UNSUPPORTED.search(outside)
    if bad:
        raise ConditionError(f"{bad.group()!r} is GJSON syntax this platform does not evaluate")
    _parse(condition)


def _parse(path: str) -> None:
    """Parse every component and literal of ``path`` (a query's own path too)."""
    for _, component in _split(path):
        if not component:
            raise ConditionError("an empty path component")
        if component.startswith("#("):
            if not component.endswith((")", ")#")):
                raise ConditionError(f"{component!r}: a query ends with ')' or ')#'")
            inner = component[2:-2] if component.endswith(")#") else component[2:-1]
            left, _, _ = _query(inner)
            if left:
                _parse(left)


def met(document: dict[str, Any], condition: str | None) -> dict[str, Any] | None:
    """The condition's first matching object when it holds (Katib: an object or a non-empty
    array), else None. The object is ``{}`` when a match is not itself an object."""
    if not condition:
        return None
    value = get(document, condition)
    if isinstance(value, list):
        if not value:
            return None
        value = value[0]
    elif not isinstance(value, dict):
        return None
    return value if isinstance(value, dict) else {}


def job_outcome(
    document: dict[str, Any], success: str | None, failure: str | None
) -> tuple[str, dict[str, Any]] | None:
    """("Failed" | "Succeeded", the matching condition) as Katib decides it, failure first;
    None while the job is still running."""
    failed = met(document, failure)
    if failed is not None:
        return "Failed", failed
    succeeded = met(document, success)
    if succeeded is not None:
        return "Succeeded", succeeded
    return None


#: Katib's defaults (its experiment webhook): batch/v1 Job, and the Training Operator's kinds.
JOB_SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
TRAINING_SUCCESS = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
TRAINING_FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
TRAINING_PRIMARY_POD_LABELS = {"training.kubeflow.org/job-role": "master"}
TRAINING_KINDS = ("TFJob", "PyTorchJob", "XGBoostJob", "MPIJob", "PaddleJob", "JAXJob")


def defaults(kind: str | None) -> tuple[str | None, str | None, dict[str, str] | None]:
    """(successCondition, failureCondition, primaryPodLabels) Katib gives a trial template of
    ``kind`` that names none; Nones for other kinds."""
    if kind == "Job":
        return JOB_SUCCESS, JOB_FAILURE, None
    if kind in TRAINING_KINDS:
        return TRAINING_SUCCESS, TRAINING_FAILURE, dict(TRAINING_PRIMARY_POD_LABELS)
    return None, None, None
