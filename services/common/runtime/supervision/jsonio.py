"""JSON for ``launch.json`` and ``state.json`` without the ``json`` package.

``json`` would pull in ``re`` and ``enum`` (about 10 ms of every workload's start), so the C
scanner and encoder behind it are used directly.
"""

import _json


class _JSONContext:
    """What ``_json.make_scanner`` reads from ``json.JSONDecoder``; strict standard JSON."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo: dict = {}


def loads(text: str) -> object:
    value, end = _json.make_scanner(_JSONContext())(text, 0)  # type: ignore[arg-type]
    if text[end:].strip():
        raise ValueError("trailing data after JSON document")
    return value


def dumps(value: object) -> str:
    """JSON for the few types a state holds (dict, list, str, int, float, bool, None)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if isinstance(value, dict):
        items = (dumps(str(k)) + ": " + dumps(v) for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")
