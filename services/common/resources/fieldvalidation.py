"""Server-side field validation: the ``fieldValidation`` query parameter of create, update
and patch, as in Kubernetes 1.27+ (KEP-2885).

- ``Strict``: an unknown or duplicate field fails the request (422, the field's path named).
- ``Warn`` (the default when the parameter is absent, as in Kubernetes): the field is dropped
  and the response carries ``Warning: 299 - "unknown field \\"spec.foo\\""``; kubectl prints
  it as ``Warning: unknown field "spec.foo"``.
- ``Ignore``: the field is dropped silently.

Unknown fields are found by the store's own validation (spec models forbid extra fields and
name them ``spec.resources.requestz``; ``ResourceStore.validate`` names unknown top-level
fields), so there is one definition of what a kind accepts. Duplicate fields are found while
the JSON body is parsed (:func:`parse_json`); a YAML body's duplicates keep the last value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import ApiError, Cause

STRICT, WARN, IGNORE = "Strict", "Warn", "Ignore"
DIRECTIVES = (STRICT, WARN, IGNORE)
UNKNOWN_FIELD = "unknown field"
DUPLICATE_FIELD = "duplicate field"
# An unknown field dropped per round; a body has at most this many rounds of them.
MAX_ROUNDS = 32
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def directive(raw: str | None) -> str:
    """The ``fieldValidation`` directive; absent means ``Warn``, as in Kubernetes 1.27+."""
    if raw in (None, ""):
        return WARN
    if raw not in DIRECTIVES:
        raise ApiError(
            400,
            f'fieldValidation must be one of "Ignore", "Warn" or "Strict", not {raw!r}',
            causes=[
                Cause("fieldValidation", f"unsupported value {raw!r}", "FieldValueNotSupported")
            ],
        )
    return raw


@dataclass
class FieldReport:
    """What field validation found in one request: warnings for the response headers."""

    mode: str
    warnings: list[str] = field(default_factory=list)

    def headers(self) -> list[tuple[str, str]]:
        """``Warning`` headers (RFC 7234 section 5.5, code 299 as the API server sends)."""
        return [("Warning", f"299 - {json.dumps(w)}") for w in self.warnings if self.mode == WARN]

    def note(self, what: str, path: str) -> None:
        self.warnings.append(f'{what} "{path}"')


class _Pairs(dict[str, Any]):
    """A JSON object that remembers the keys it was given more than once."""

    duplicates: tuple[str, ...] = ()


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = _Pairs(items)
    if len(obj) != len(items):
        seen: set[str] = set()
        obj.duplicates = tuple(k for k, _ in items if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return obj


def parse_json(raw: bytes) -> tuple[Any, list[str]]:
    """The JSON document (the last value of a repeated key wins, as in Go), and the paths of
    repeated keys (``spec.size``)."""
    doc = json.loads(raw, object_pairs_hook=_pairs)
    found: list[str] = []
    return _plain(doc, "", found), found


def _plain(node: Any, path: str, found: list[str]) -> Any:
    if isinstance(node, dict):
        for key in getattr(node, "duplicates", ()):
            found.append(f"{path}.{key}" if path else key)
        return {k: _plain(v, f"{path}.{k}" if path else k, found) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v, f"{path}[{i}]", found) for i, v in enumerate(node)]
    return node


def check_duplicates(report: FieldReport, duplicates: list[str], kind: str) -> None:
    """Strict: 422 naming the repeated fields; otherwise a warning each (the last value won)."""
    if not duplicates:
        return
    if report.mode == STRICT:
        causes = [Cause(p, DUPLICATE_FIELD, "FieldValueDuplicate") for p in duplicates]
        raise ApiError.invalid(kind, "", causes)
    for path in duplicates:
        report.note(DUPLICATE_FIELD, path)


# ObjectMeta's fields (k8s.io/apimachinery meta/v1): what ``metadata`` may hold.
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


def check_metadata(report: FieldReport, doc: Any, kind: str) -> None:
    """Unknown ``metadata`` fields of an object or a merge patch (the store keeps metadata as
    sent): Strict refuses them (422), Warn and Ignore drop them. Strategic-merge directives
    (``$patch``, ``$setElementOrder/...``) are not fields."""
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(meta, dict):
        return
    unknown = [
        f"metadata.{key}"
        for key in meta
        if key not in OBJECT_META_FIELDS and not str(key).startswith("$")
    ]
    if not unknown:
        return
    if report.mode == STRICT:
        causes = [Cause(path, UNKNOWN_FIELD, "FieldValueNotSupported") for path in unknown]
        raise ApiError.invalid(kind, str(meta.get("name") or ""), causes)
    for path in unknown:
        drop(doc, path)
        report.note(UNKNOWN_FIELD, path)


def unknown_fields(err: ApiError) -> list[str]:
    """The paths of the unknown fields an ``Invalid`` error names."""
    if err.code != 422:
        return []
    return [c.field for c in err.causes if c.message == UNKNOWN_FIELD and c.field]


def drop(doc: Any, path: str) -> bool:
    """Remove the field at ``path`` (``spec.parts[0].colour``) from ``doc``; False if absent."""
    parts = [(m.group(1), m.group(2)) for m in _PART.finditer(path)]
    node = doc
    for i, (key, index) in enumerate(parts):
        last = i == len(parts) - 1
        if index is not None:
            if not isinstance(node, list) or int(index) >= len(node):
                return False
            if last:
                return False  # a list element is never an unknown field
            node = node[int(index)]
        elif isinstance(node, dict) and key in node:
            if last:
                del node[key]
                return True
            node = node[key]
        else:
            return False
    return False


async def write_pruned(
    report: FieldReport, body: Any, attempt: Callable[[Any], Awaitable[Any]]
) -> Any:
    """``attempt(body)``, and in Warn and Ignore modes, again without each unknown field it
    was refused for (noted in ``report``). Strict, and every other error, raise as they are."""
    for _ in range(MAX_ROUNDS):
        try:
            return await attempt(body)
        except ApiError as err:
            unknown = unknown_fields(err)
            if report.mode == STRICT or not unknown:
                raise
            dropped = [p for p in unknown if drop(body, p)]
            if not dropped:
                raise
            for path in dropped:
                report.note(UNKNOWN_FIELD, path)
    return await attempt(body)
