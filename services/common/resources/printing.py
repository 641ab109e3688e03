"""Server-side printing: ``meta.k8s.io/v1`` Tables, as the Kubernetes API server answers
``kubectl get``.

kubectl asks for a Table with ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``
(followed by the ``v1beta1`` Table and plain JSON as alternatives) and prints the columns the
server defines. The columns are the kind's printer columns (``ResourceKind.columns``), the
same ones ``shipyard get`` prints, between Name and Age, so both tools show one table.
Cells are the strings the CLI prints (``<none>`` for a missing value, an age such as ``5m``),
as a CRD's additionalPrinterColumns come out of the API server already formatted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.common.columns import age, cell, lookup
from services.common.errors import ApiError
from services.common.resources.kinds import ResourceKind

TABLE_GROUP = "meta.k8s.io"
TABLE_VERSIONS = ("v1", "v1beta1")

NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace. It is required when creating "
    "resources, although some resources may allow a client to request the generation of an "
    "appropriate name automatically.",
    "priority": 0,
}
AGE_COLUMN = {
    "name": "Age",
    "type": "string",
    "format": "",
    "description": "CreationTimestamp is a timestamp representing the server time when this "
    "object was created, shown as the time since then.",
    "priority": 0,
}


def table_version(accept: str | None) -> str | None:
    """The Table version (``v1`` or ``v1beta1``) an ``Accept`` header asks for, or None for
    the object itself.

    The alternatives are taken in order, as the API server does: the first one this server
    can produce wins. A header that asks only for Tables of other versions or groups gets
    406, as from Kubernetes; one that also accepts plain JSON gets the object.
    """
    if not accept:
        return None
    refused = False
    for alternative in accept.split(","):
        media, *params = (p.strip() for p in alternative.split(";"))
        if media not in ("application/json", "*/*", "application/*", ""):
            continue
        options = dict(p.partition("=")[::2] for p in params if "=" in p)
        wanted = options.get("as")
        if wanted is None:
            return None
        if wanted == "Table" and options.get("g") == TABLE_GROUP:
            if options.get("v") in TABLE_VERSIONS:
                return options["v"]
        refused = True
    if refused:
        raise ApiError(
            406,
            f"only the following media types are accepted: application/json, "
            f"application/json;as=Table;v=v1;g={TABLE_GROUP}, "
            f"application/json;as=Table;v=v1beta1;g={TABLE_GROUP}",
        )
    return None


def include_object(raw: str | None) -> str:
    """``includeObject``: ``Metadata`` (the default), ``Object`` or ``None``."""
    value = raw or "Metadata"
    if value not in ("Metadata", "Object", "None"):
        raise ApiError(
            400,
            f'includeObject must be one of "None", "Metadata" or "Object", not {raw!r}',
        )
    return value


def column_definitions(kind: ResourceKind) -> list[dict[str, Any]]:
    """Name, the kind's printer columns (wide ones at priority 1, shown by ``-o wide``), Age."""
    columns = [
        {
            "name": c.name,
            "type": "string",
            "format": "",
            "description": f"The object's {c.path}.",
            "priority": 1 if c.wide else 0,
        }
        for c in kind.columns
    ]
    return [NAME_COLUMN, *columns, AGE_COLUMN]


def row(kind: ResourceKind, obj: dict[str, Any], include: str, table_ver: str) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    cells: list[Any] = [meta.get("name", "")]
    cells += [cell(lookup(obj, c.path)) for c in kind.columns]
    cells.append(age(meta.get("creationTimestamp")))
    out: dict[str, Any] = {"cells": cells}
    if include == "Object":
        out["object"] = obj
    elif include == "Metadata":
        out["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": f"{TABLE_GROUP}/{table_ver}",
            "metadata": meta,
        }
    return out


def table(
    kind: ResourceKind,
    objects: Sequence[dict[str, Any]],
    *,
    version: str = "v1",
    include: str = "Metadata",
    resource_version: str | None = None,
    continue_token: str | None = None,
) -> dict[str, Any]:
    """A ``meta.k8s.io`` Table of ``objects``: one row each, in order."""
    meta: dict[str, Any] = {}
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    if continue_token:
        meta["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": f"{TABLE_GROUP}/{version}",
        "metadata": meta,
        "columnDefinitions": column_definitions(kind),
        "rows": [row(kind, obj, include, version) for obj in objects],
    }
