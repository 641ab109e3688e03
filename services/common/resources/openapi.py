"""OpenAPI v3 documents per group-version, as the Kubernetes API server publishes them under
``/openapi/v3/apis/{group}/{version}``, for ``kubectl explain`` and ``kubectl apply``.

Each service builds the documents of the kinds it serves (:func:`service_documents`, on
``GET /internal/v1/openapi/v3``); the gateway merges them per group-version (a group-version
can span services: core/v1's PersistentVolumeClaims are the notebook service's, its Secrets
the serving service's) and serves them (``gateway.openapi``).

What kubectl reads in a document:

- ``components.schemas``: one schema per kind, found by its ``x-kubernetes-group-version-kind``
  (``kubectl explain``), built from the kind's spec model (pydantic's JSON schema, by alias,
  turned into OpenAPI 3.0: ``$ref`` into ``components``, no ``null`` types, boolean
  ``exclusiveMinimum``), with ``apiVersion``, ``kind``, ``metadata`` (ObjectMeta) and ``status``;
- ``paths``: the operations, each with ``x-kubernetes-group-version-kind``. kubectl decides
  that the server validates fields itself (and sends ``fieldValidation=Strict`` instead of
  validating on the client) when the kind's PATCH operation lists a ``fieldValidation``
  query parameter (k8s.io/cli-runtime ``QueryParamVerifierV3``), and computes a strategic
  merge patch only when the PATCH request body lists that content type (core kinds here);
- ``x-kubernetes-patch-strategy`` / ``x-kubernetes-patch-merge-key``, for that patch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import APIRouter

from services.common.auth import IdentityDep
from services.common.errors import ApiError
from services.common.resources.kinds import ResourceKind
from services.common.resources.patch import JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH

INTERNAL_PATH = "/internal/v1/openapi/v3"
META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = f"{META}.ObjectMeta"
STATUS = f"{META}.Status"
_REF = "#/components/schemas/"

_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_REFERENCE = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Name of the referent."},
        "namespace": {"type": "string", "description": "Namespace of the referent."},
    },
}
# Top-level fields beside spec and status (``ResourceKind.extra_top_level``), as core/v1 has them.
EXTRA_FIELDS: dict[str, dict[str, Any]] = {
    "data": {**_STRINGS, "description": "The data: keys and their values."},
    "binaryData": {
        "type": "object",
        "additionalProperties": {"type": "string", "format": "byte"},
        "description": "Binary data, base64-encoded.",
    },
    "stringData": {
        **_STRINGS,
        "description": "Write-only string data, merged into data on write.",
    },
    "immutable": {"type": "boolean", "description": "If true, the data cannot be updated."},
    "type": {"type": "string", "description": "Used to facilitate programmatic handling."},
    "secrets": {
        "type": "array",
        "items": _REFERENCE,
        "description": "Secrets this service account's pods may use.",
        "x-kubernetes-patch-strategy": "merge",
        "x-kubernetes-patch-merge-key": "name",
    },
    "imagePullSecrets": {
        "type": "array",
        "items": {"type": "object", "properties": {"name": {"type": "string"}}},
        "description": "Secrets for pulling the images of this service account's pods.",
    },
    "automountServiceAccountToken": {
        "type": "boolean",
        "description": "Whether pods running as this service account get its token.",
    },
}


def object_meta_schema() -> dict[str, Any]:
    """ObjectMeta, with the fields shipyard keeps (k8s.io/apimachinery meta/v1)."""

    def text(description: str) -> dict[str, Any]:
        return {"type": "string", "description": description}

    return {
        "type": "object",
        "description": "Standard object's metadata: name, namespace, labels, annotations and "
        "what the server sets (uid, resourceVersion, generation, timestamps).",
        "properties": {
            "name": text("Name must be unique within a namespace (RFC 1123 label)."),
            "generateName": text("A prefix the server completes to a unique name on create."),
            "namespace": text("The namespace the object lives in."),
            "uid": text("The object's unique id, set by the server."),
            "resourceVersion": text("The version of the object, for optimistic concurrency."),
            "generation": {"type": "integer", "format": "int64"},
            "creationTimestamp": {"type": "string", "format": "date-time"},
            "deletionTimestamp": {"type": "string", "format": "date-time"},
            "labels": {**_STRINGS, "description": "Labels, for selecting objects."},
            "annotations": {**_STRINGS, "description": "Annotations: non-identifying data."},
            "finalizers": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Must be empty before the object is deleted from the store.",
                "x-kubernetes-patch-strategy": "merge",
            },
            "ownerReferences": {
                "type": "array",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "description": "Objects this object depends on.",
                "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-patch-merge-key": "uid",
            },
        },
    }


def schema_prefix(group: str, version: str) -> str:
    """``org.kubeflow.v1`` for kubeflow.org/v1 (the group reversed, as for CRDs);
    ``io.k8s.api.core.v1`` for core/v1."""
    if not group:
        return f"io.k8s.api.core.{version}"
    return ".".join(reversed(group.split("."))) + f".{version}"


def schema_name(kind: ResourceKind) -> str:
    return f"{schema_prefix(kind.group, kind.version)}.{kind.kind}"


def gvk(kind: ResourceKind) -> list[dict[str, str]]:
    return [{"group": kind.group, "version": kind.version, "kind": kind.kind}]


def to_openapi(node: Any) -> Any:
    """A pydantic JSON schema (2020-12) node as an OpenAPI 3.0 schema, as Kubernetes writes
    one: ``Optional[X]`` is just X, ``str | int`` is ``x-kubernetes-int-or-string``, other
    unions are any value; titles and ``additionalProperties: false`` dropped."""
    if isinstance(node, list):
        return [to_openapi(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "examples", "$defs", "discriminator"):
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key in ("anyOf", "oneOf"):
            out.update(_union(value))
        elif key == "prefixItems":
            out["items"] = {}
        else:
            out[key] = to_openapi(value)
    if "$ref" in out and len(out) > 1:  # siblings of a $ref are ignored in OpenAPI 3.0
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    return out


def _union(options: list[Any]) -> dict[str, Any]:
    kept = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
    if len(kept) == 1:
        return dict(to_openapi(kept[0]))
    types = {o.get("type") for o in kept if isinstance(o, dict)}
    if types == {"string", "integer"} and len(kept) == 2:
        return {"x-kubernetes-int-or-string": True}
    return {"x-kubernetes-preserve-unknown-fields": True}


def spec_schemas(kind: ResourceKind) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The spec's schema (its root, a ``$ref``) and the named schemas it refers to."""
    if kind.spec_model is None:
        return None, {}
    prefix = f"{schema_name(kind)}."
    raw = kind.spec_model.model_json_schema(
        by_alias=True, ref_template=_REF + prefix + "{model}", mode="validation"
    )
    named = {prefix + name: to_openapi(s) for name, s in (raw.get("$defs") or {}).items()}
    root_name = f"{schema_name(kind)}Spec"
    named[root_name] = to_openapi(raw)
    return {"$ref": _REF + root_name}, named


def kind_schemas(kind: ResourceKind) -> dict[str, Any]:
    """``components.schemas`` entries for ``kind``: the object, its list and its spec."""
    spec_ref, named = spec_schemas(kind)
    properties: dict[str, Any] = {
        "apiVersion": {
            "type": "string",
            "description": "APIVersion defines the versioned schema of this representation "
            f"of an object: {kind.api_version}.",
        },
        "kind": {
            "type": "string",
            "description": f"Kind is the REST resource this object represents: {kind.kind}.",
        },
        "metadata": {
            "allOf": [{"$ref": _REF + OBJECT_META}],
            "description": "Standard object's metadata.",
        },
    }
    if spec_ref is not None:
        spec_doc = named[spec_ref["$ref"].removeprefix(_REF)].get("description")
        properties["spec"] = {
            "allOf": [spec_ref],
            "description": spec_doc or f"The desired state of the {kind.kind}.",
        }
    for name in kind.extra_top_level:
        properties[name] = copy.deepcopy(
            EXTRA_FIELDS.get(name, {"x-kubernetes-preserve-unknown-fields": True})
        )
    properties["status"] = {
        "type": "object",
        "description": f"The observed state of the {kind.kind}, written by shipyard's "
        "controllers (read-only).",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    described = (kind.spec_model.__doc__ or "").strip() if kind.spec_model is not None else ""
    named[schema_name(kind)] = {
        "type": "object",
        "description": f"{kind.kind} ({kind.api_version}), served by shipyard's {kind.service} "
        "service." + (f" {described}" if described else ""),
        "properties": properties,
        "x-kubernetes-group-version-kind": gvk(kind),
    }
    named[schema_name(kind) + "List"] = {
        "type": "object",
        "description": f"A list of {kind.plural}.",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "items": {"type": "array", "items": {"$ref": _REF + schema_name(kind)}},
        },
        "x-kubernetes-group-version-kind": [
            {"group": kind.group, "version": kind.version, "kind": kind.list_kind}
        ],
    }
    return named


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "string", "uniqueItems": True},
    }


FIELD_VALIDATION = _query(
    "fieldValidation",
    "How to treat unknown and duplicate fields in the body: Ignore (drop them), Warn "
    "(drop them with a Warning header; the default) or Strict (refuse the request).",
)
_PATH_PARAMS = {
    "namespace": {
        "name": "namespace",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    },
    "name": {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
}


def _operation(
    kind: ResourceKind,
    action: str,
    response: str,
    body: Sequence[str] = (),
    query: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    ref = {"$ref": _REF + response}
    op: dict[str, Any] = {
        "description": f"{action} {kind.kind}",
        "operationId": f"{action}{kind.kind}",
        "tags": [kind.group or "core"],
        "parameters": list(query),
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref}}},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(kind)[0],
    }
    if body:
        schema = {"$ref": _REF + schema_name(kind)}
        op["requestBody"] = {
            "required": True,
            "content": {
                t: {"schema": {"type": "array", "items": {}} if t == JSON_PATCH else schema}
                for t in body
            },
        }
    return op


def patch_types(kind: ResourceKind) -> tuple[str, ...]:
    """What PATCH takes: a strategic merge patch only for core kinds, as in Kubernetes
    (server-side apply is not served)."""
    core = (STRATEGIC_MERGE_PATCH,) if not kind.group else ()
    return (JSON_PATCH, MERGE_PATCH, *core)


def kind_paths(kind: ResourceKind) -> dict[str, Any]:
    """The kind's paths: the collection, an item, and the list across namespaces."""
    name = schema_name(kind)
    prefix = kind.base_path + ("/namespaces/{namespace}" if kind.namespaced else "")
    scope = [_PATH_PARAMS["namespace"]] if kind.namespaced else []
    watch = _query("watch", "Watch for changes: a stream of WatchEvents.")
    writes = [FIELD_VALIDATION]
    paths: dict[str, Any] = {
        f"{prefix}/{kind.plural}": {
            "parameters": scope,
            "get": _operation(kind, "list", name + "List", query=[watch]),
            "post": _operation(kind, "post", name, ["application/json"], writes),
        },
        f"{prefix}/{kind.plural}/{{name}}": {
            "parameters": [*scope, _PATH_PARAMS["name"]],
            "get": _operation(kind, "get", name),
            "put": _operation(kind, "put", name, ["application/json"], writes),
            "patch": _operation(kind, "patch", name, patch_types(kind), writes),
            "delete": _operation(kind, "delete", name),
        },
    }
    if kind.namespaced:
        paths[f"{kind.base_path}/{kind.plural}"] = {
            "get": _operation(kind, "list", name + "List", query=[watch])
        }
    return paths


def gv_key(group: str, version: str) -> str:
    """The key of a group-version in ``/openapi/v3``'s paths: ``api/v1``, ``apis/g/v``."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def document(kinds: Iterable[ResourceKind]) -> dict[str, Any]:
    """An OpenAPI 3.0 document of ``kinds`` (one group-version's, or any set)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {OBJECT_META: object_meta_schema()}
    for kind in kinds:
        paths.update(kind_paths(kind))
        schemas.update(kind_schemas(kind))
    return {
        "openapi": "3.0.0",
        "info": {"title": "shipyard", "version": "v1.32.0-shipyard"},
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


def service_documents(kinds: Iterable[ResourceKind]) -> dict[str, dict[str, Any]]:
    """One document per group-version of ``kinds``, by :func:`gv_key`."""
    by_gv: dict[str, list[ResourceKind]] = {}
    for kind in kinds:
        by_gv.setdefault(gv_key(kind.group, kind.version), []).append(kind)
    return {key: document(members) for key, members in sorted(by_gv.items())}


def merge_documents(docs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One group-version's documents from several services, as one."""
    merged: dict[str, Any] = {
        "openapi": "3.0.0",
        "info": {"title": "shipyard", "version": "v1.32.0-shipyard"},
        "paths": {},
        "components": {"schemas": {}},
    }
    for doc in docs:
        merged["paths"].update(doc.get("paths") or {})
        merged["components"]["schemas"].update((doc.get("components") or {}).get("schemas") or {})
    merged["paths"] = dict(sorted(merged["paths"].items()))
    merged["components"]["schemas"] = dict(sorted(merged["components"]["schemas"].items()))
    return merged


def openapi_router(kinds: Sequence[ResourceKind]) -> APIRouter:
    """``GET /internal/v1/openapi/v3``: this service's documents, for the gateway to merge."""
    router = APIRouter()
    documents = service_documents(kinds)

    @router.get(INTERNAL_PATH, include_in_schema=False)
    async def read_openapi_documents(identity: IdentityDep) -> dict[str, Any]:
        if not identity.cluster_admin:
            raise ApiError(403, "only the gateway reads the services' OpenAPI documents")
        return documents

    return router
