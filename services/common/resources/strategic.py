"""Strategic merge patch (``application/strategic-merge-patch+json``) for the core kinds.

Kubernetes accepts a strategic merge patch only for its built-in types, whose Go structs
declare how each list merges (``patchStrategy``, ``patchMergeKey``); for a custom resource
it answers 415. shipyard does the same: its core/v1 kinds (PersistentVolumeClaim, ConfigMap,
Secret, ServiceAccount) take one, which is what ``kubectl apply`` and ``kubectl edit`` send
for them. The semantics are a JSON merge patch (RFC 7386) plus:

- lists of objects with a merge key merge element by element (``containers`` by ``name``);
  lists of scalars with the ``merge`` strategy (``metadata.finalizers``) merge as a set; every
  other list is replaced, as in a merge patch;
- the directives kubectl emits: ``$patch: replace|delete|merge`` in an object or list element,
  ``$retainKeys``, ``$setElementOrder/<list>`` and ``$deleteFromPrimitiveList/<list>``.

The merge keys below are the core types' own (k8s.io/api/core/v1 struct tags), matched on a
list's field name, so a pod template under a core object merges as Kubernetes would.
"""

from __future__ import annotations

import copy
from typing import Any

from services.common.errors import ApiError

# field name -> merge key (None: a list of scalars merged as a set).
MERGE_KEYS: dict[str, str | None] = {
    "finalizers": None,
    "ownerReferences": "uid",
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "conditions": "type",
    "secrets": "name",  # ServiceAccount.secrets
}
_PATCH = "$patch"
_RETAIN = "$retainKeys"
_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_DELETE = object()  # a map that ``$patch: delete`` removed


def is_core(api_version: str | None) -> bool:
    """A core/v1 object (``apiVersion: v1``): the only kind that takes a strategic merge."""
    return bool(api_version) and "/" not in str(api_version)


def strategic_merge(original: Any, patch: Any) -> Any:
    """Apply a strategic merge patch to ``original`` (a new object; neither is changed)."""
    if not isinstance(patch, dict):
        raise ApiError(400, "a strategic merge patch must be a JSON object")
    result = _merge_map(original if isinstance(original, dict) else {}, patch, "")
    return {} if result is _DELETE else result


def _merge_map(original: dict[str, Any], patch: dict[str, Any], path: str) -> Any:
    directive = patch.get(_PATCH)
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _strip(patch)
    if directive not in (None, "merge"):
        raise ApiError(422, f"{path or 'the patch'}: unknown $patch directive {directive!r}")
    result = copy.deepcopy(original)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (_PATCH, _RETAIN):
            continue
        if key.startswith(_ORDER):
            orders[key[len(_ORDER) :]] = value if isinstance(value, list) else []
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            name = key[len(_DELETE_PRIMITIVE) :]
            if isinstance(result.get(name), list) and isinstance(value, list):
                result[name] = [v for v in result[name] if v not in value]
            continue
        where = f"{path}.{key}" if path else key
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _merge_map(
                result[key] if isinstance(result.get(key), dict) else {}, value, where
            )
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and key in MERGE_KEYS:
            result[key] = _merge_list(result.get(key), value, MERGE_KEYS[key], where)
        else:
            result[key] = _strip(value)
    for name, order in orders.items():
        if isinstance(result.get(name), list):
            result[name] = _ordered(result[name], order, MERGE_KEYS.get(name))
    retain = patch.get(_RETAIN)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(original: Any, patch: list[Any], merge_key: str | None, path: str) -> list[Any]:
    current = list(copy.deepcopy(original)) if isinstance(original, list) else []
    if any(isinstance(e, dict) and e.get(_PATCH) == "replace" for e in patch):
        return [_strip(e) for e in patch if not (isinstance(e, dict) and _PATCH in e)]
    if merge_key is None or not all(isinstance(e, dict) for e in patch):
        return current + [_strip(e) for e in patch if e not in current]
    for element in patch:
        if merge_key not in element:
            raise ApiError(
                422, f"{path}: every element of a merged list needs its merge key {merge_key!r}"
            )
        key = element[merge_key]
        at = next(
            (i for i, e in enumerate(current) if isinstance(e, dict) and e.get(merge_key) == key),
            None,
        )
        if element.get(_PATCH) == "delete":
            if at is not None:
                del current[at]
            continue
        if at is None:
            current.append(_strip(element))
        else:
            merged = _merge_map(current[at], element, f"{path}[{merge_key}={key}]")
            current[at] = {} if merged is _DELETE else merged
    return current


def _ordered(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    """``items`` in the order ``$setElementOrder`` gives; elements it does not name follow."""

    def ident(item: Any) -> Any:
        return item.get(merge_key) if merge_key and isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    ranked = [i for w in wanted for i in items if ident(i) == w]
    return ranked + [i for i in items if ident(i) not in wanted]


def _strip(value: Any) -> Any:
    """``value`` without directives (what a replaced or added part stores)."""
    if isinstance(value, dict):
        return {
            k: _strip(v)
            for k, v in value.items()
            if k not in (_PATCH, _RETAIN)
            and not k.startswith((_ORDER, _DELETE_PRIMITIVE))
            and v is not None
        }
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return copy.deepcopy(value)
