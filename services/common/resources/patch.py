"""JSON merge patch (RFC 7386), JSON patch (RFC 6902), and which one a request sent.

The strategic merge patch of the core kinds is ``services.common.resources.strategic``.
"""

from __future__ import annotations

import copy
from typing import Any

from services.common.errors import ApiError
from services.common.resources.strategic import is_core, strategic_merge


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: objects merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


def json_patch(document: Any, operations: Any) -> Any:
    """Apply an RFC 6902 patch; a failing operation aborts the whole patch (422)."""
    if not isinstance(operations, list):
        raise ApiError(400, "a JSON patch must be a list of operations")
    doc = copy.deepcopy(document)
    for i, op in enumerate(operations):
        try:
            name, parts = op["op"], _pointer(op["path"])
            if name in ("add", "replace", "test") or name not in ("remove", "move", "copy"):
                value = copy.deepcopy(op.get("value"))
            if name == "test":
                node = doc
                for part in parts:
                    node = node[int(part)] if isinstance(node, list) else node[part]
                if node != value:
                    raise ApiError(422, f"JSON patch operation {i}: test failed at {op['path']}")
                continue
            if name in ("move", "copy"):
                src = _pointer(op["from"])
                node = doc
                for part in src:
                    node = node[int(part)] if isinstance(node, list) else node[part]
                value = copy.deepcopy(node)
                if name == "move":
                    parent, key = _parent(doc, src)
                    del parent[int(key) if isinstance(parent, list) else key]
                name = "add"
            if not parts:
                if name == "remove":
                    raise ApiError(422, "cannot remove the whole document")
                doc = value
                continue
            parent, key = _parent(doc, parts)
            if name == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if key == "-" else int(key), value)
                else:
                    parent[key] = value
            elif name == "remove":
                del parent[int(key) if isinstance(parent, list) else key]
            elif name == "replace":
                idx = int(key) if isinstance(parent, list) else key
                parent[idx]  # noqa: B018 - must exist
                parent[idx] = value
            else:
                raise ApiError(422, f"JSON patch operation {i}: unknown op {name!r}")
        except ApiError:
            raise
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(
                422, f"JSON patch operation {i} ({op!r}) cannot be applied: {exc}"
            ) from None
    return doc


MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def apply_patch(current: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    """``current`` with ``patch`` applied, by the patch's content type (a new object).

    A strategic merge patch is taken for core/v1 objects only; for the other kinds (custom
    resources, in Kubernetes' terms) it is refused with 415, as the API server does.
    """
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == JSON_PATCH:
        result = json_patch(current, patch)
    elif ctype == STRATEGIC_MERGE_PATCH and is_core(current.get("apiVersion")):
        result = strategic_merge(current, patch)
    elif ctype in (MERGE_PATCH, "application/json", ""):
        if not isinstance(patch, dict):
            raise ApiError(400, "a merge patch must be a JSON object")
        result = merge_patch(current, patch)
    elif ctype == APPLY_PATCH:
        raise ApiError(
            415,
            "server-side apply (application/apply-patch+yaml) is not supported; use "
            "client-side `kubectl apply` (the default), a merge patch or `shipyard apply -f`",
        )
    else:
        accepted = [JSON_PATCH, MERGE_PATCH]
        if is_core(current.get("apiVersion")):
            accepted.append(STRATEGIC_MERGE_PATCH)
        raise ApiError(
            415,
            f"the body of the request was in an unknown format ({content_type!r}) - accepted "
            f"media types include: {', '.join(accepted)}",
        )
    if not isinstance(result, dict):
        raise ApiError(422, "the patched object is not an object")
    return result
