"""HTTP routes for a kind, on the paths the Kubernetes API uses."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.auth import IdentityDep, authorize
from services.common.errors import ApiError
from services.common.identity import Identity
from services.common.resources import fieldvalidation as fields
from services.common.resources import printing, writes
from services.common.resources.kinds import ResourceKind
from services.common.resources.openapi import patch_types
from services.common.resources.store import Page, ResourceStore
from services.common.safe_yaml import YamlError, load

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 32 * 1024 * 1024
_TRUE = {"1", "true", "True", "yes"}


async def read_body(request: Request, max_bytes: int = DEFAULT_MAX_BODY) -> Any:
    """The request body as JSON or YAML, with a size limit and 4xx errors a user can act on."""
    body, _ = await read_body_fields(request, max_bytes, find_duplicates=False)
    return body


async def read_body_fields(
    request: Request, max_bytes: int = DEFAULT_MAX_BODY, *, find_duplicates: bool = True
) -> tuple[Any, list[str]]:
    """The request body (as :func:`read_body`) and the paths of the keys a JSON body repeats
    (for ``fieldValidation``; a YAML body's repeated keys keep their last value)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"request body is larger than the {max_bytes}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"request body is larger than the {max_bytes}-byte limit")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON or YAML object")
    ctype = request.headers.get("content-type", "")
    try:
        if "yaml" in ctype:
            return load(raw), []
        if find_duplicates:
            return fields.parse_json(raw)
        return json.loads(raw), []
    except YamlError as exc:
        raise ApiError(400, f"the request body's YAML is refused: {exc}") from None
    except (ValueError, yaml.YAMLError) as exc:
        kind = "YAML" if "yaml" in ctype else "JSON"
        raise ApiError(400, f"the request body is not valid {kind}: {exc}") from None


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be an integer, not {raw!r}") from None
    if value < 0:
        raise ApiError(400, f"query parameter {name} must not be negative")
    return value


def list_response(
    kind: ResourceKind, items: list[dict[str, Any]], rv: int, token: str | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if token:
        meta["continue"] = token
    return {
        "apiVersion": kind.api_version,
        "kind": kind.list_kind,
        "metadata": meta,
        "items": items,
    }


def watch_stream(
    store: ResourceStore, kind: ResourceKind, namespace: str | None, request: Request
) -> StreamingResponse:
    timeout = _int_param(request, "timeoutSeconds")
    events = store.watch(
        kind,
        namespace,
        label_selector=request.query_params.get("labelSelector"),
        field_selector=request.query_params.get("fieldSelector"),
        resource_version=request.query_params.get("resourceVersion"),
        timeout_seconds=timeout,
    )

    as_table = printing.table_version(request.headers.get("accept"))
    include = printing.include_object(request.query_params.get("includeObject"))

    def shown(obj: dict[str, Any]) -> dict[str, Any]:
        # As the API server does, a Table watch sends each object as a Table of one row.
        if as_table is None:
            return obj
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        return printing.table(kind, [obj], version=as_table, include=include, resource_version=rv)

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield (
                    json.dumps(
                        {"type": event.type, "object": shown(event.object)},
                        separators=(",", ":"),
                    ).encode()
                    + b"\n"
                )
        except ApiError as err:
            yield json.dumps({"type": "ERROR", "object": err.status()}).encode() + b"\n"
        except (DBAPIError, OSError) as exc:
            # The database went away mid-stream: end the watch, as the Kubernetes API server
            # does when etcd fails; the client watches again from its last resourceVersion.
            log.warning("watch of %s ended: database unavailable (%r)", kind.plural, exc)

    return StreamingResponse(
        lines(),
        media_type="application/json",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def forbid_status_write(
    identity: Identity, verb: str, kind: ResourceKind, namespace: str | None, name: str
) -> None:
    """Only the platform writes status: its controllers through the store, never over HTTP.

    Status is what the platform observed, and other parts act on it: the gateway routes a
    notebook's or model's traffic to its ``status.url``, an experiment ranks trials by their
    ``status.observation``. A tenant who could write it (their own namespace's ``edit`` or
    ``admin``, or a workload's service account) could point the gateway anywhere or forge
    results (issue 10). Cluster admins keep the write, as in Kubernetes, to repair an object
    by hand. Trials report metrics through ``POST .../trials/{name}/metrics``, not status.
    """
    if identity.cluster_admin:
        return
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    raise ApiError(
        403,
        f'User "{identity.user}" cannot {verb} resource "{resource}/status" {where}: '
        "an object's status is written by shipyard's controllers only; change its spec instead",
        details={"name": name, "group": kind.group, "kind": kind.plural},
    )


StoreGetter = Callable[[Request], ResourceStore]


# ``watch=true`` is left out: it turns the answer into a stream of WatchEvents that ends
# only when the client leaves, which no request-response fuzzer or client generator expects.
LIST_QUERY = (
    ("limit", {"type": "integer", "minimum": 1}),
    ("continue", {"type": "string"}),
    ("labelSelector", {"type": "string"}),
    ("fieldSelector", {"type": "string"}),
    ("resourceVersion", {"type": "string"}),
)


class _OpenApi:
    """The parts of a kind's operations that FastAPI cannot see in the handlers' signatures
    (they read the request themselves): path and query parameters and the request body, so
    the published document (``/openapi/{service}.json``) describes what the API takes."""

    def __init__(self, kind: ResourceKind) -> None:
        self.kind = kind
        self.object = {
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string", "example": kind.api_version},
                "kind": {"type": "string", "example": kind.kind},
                "metadata": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "generateName": {"type": "string"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "annotations": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "resourceVersion": {"type": "string"},
                    },
                },
                "spec": {"type": "object"},
                **{name: {"type": "object"} for name in kind.extra_top_level},
            },
        }

    def operation(
        self,
        *,
        query: tuple[tuple[str, dict[str, Any]], ...] = (),
        body: str | tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """``name`` is in the item handlers' signatures: FastAPI documents it itself."""
        params: list[dict[str, Any]] = []
        if self.kind.namespaced:
            params.append(_path_param("namespace"))
        params += [{"name": n, "in": "query", "required": False, "schema": t} for n, t in query]
        extra: dict[str, Any] = {"parameters": params}
        if body is not None:
            types = (body,) if isinstance(body, str) else body
            extra["requestBody"] = {
                "required": True,
                "content": {t: {"schema": self._body(t)} for t in types},
            }
        return extra

    def _body(self, content_type: str) -> dict[str, Any]:
        if content_type == "application/json-patch+json":  # RFC 6902: a list of operations
            return {"type": "array", "items": {"type": "object"}}
        return self.object


def _path_param(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    }


def resource_router(
    kind: ResourceKind, get_store: StoreGetter, max_body: int = DEFAULT_MAX_BODY
) -> APIRouter:
    """Routes for ``kind``: collection, item and ``/status``, namespaced or cluster-scoped."""
    router = APIRouter(tags=[kind.kind])
    resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural

    def ns_of(request: Request) -> str | None:
        return request.path_params.get("namespace") if kind.namespaced else None

    async def list_objects(request: Request, identity: IdentityDep) -> Any:
        namespace = ns_of(request)
        store = get_store(request)
        watching = request.query_params.get("watch") in _TRUE
        authorize(identity, "watch" if watching else "list", namespace, resource, kind.read_role)
        if watching:
            return watch_stream(store, kind, namespace, request)
        return await _list_or_table(store, kind, namespace, request)

    async def create_object(request: Request, identity: IdentityDep) -> JSONResponse:
        namespace = ns_of(request)
        authorize(identity, "create", namespace, resource)
        store = get_store(request)
        create = lambda b, s: store.create(kind, namespace, b, session=s)  # noqa: E731
        return await _write(request, store, kind, max_body, create, 201)

    async def read_object(request: Request, name: str, identity: IdentityDep) -> Any:
        namespace = ns_of(request)
        authorize(identity, "get", namespace, resource, kind.read_role)
        obj = await get_store(request).get(kind, namespace, name)
        return _as_table(request, kind, [obj], obj["metadata"].get("resourceVersion")) or obj

    async def replace_object(request: Request, name: str, identity: IdentityDep) -> Any:
        namespace = ns_of(request)
        authorize(identity, "update", namespace, resource)
        store = get_store(request)
        replace = lambda b, s: store.replace(kind, namespace, name, b, session=s)  # noqa: E731
        return await _write(request, store, kind, max_body, replace)

    async def patch_object(request: Request, name: str, identity: IdentityDep) -> Any:
        namespace = ns_of(request)
        authorize(identity, "patch", namespace, resource)
        return await _patch(request, get_store(request), kind, namespace, name, max_body)

    async def delete_object(request: Request, name: str, identity: IdentityDep) -> Any:
        namespace = ns_of(request)
        authorize(identity, "delete", namespace, resource)
        store = get_store(request)
        dry = await writes.delete_dry_run(request)
        async with writes.write_session(store, dry) as session:
            return await store.delete(kind, namespace, name, session=session)

    async def read_status(request: Request, name: str, identity: IdentityDep) -> Any:
        return await read_object(request, name, identity)

    async def replace_status(request: Request, name: str, identity: IdentityDep) -> Any:
        namespace = ns_of(request)
        authorize(identity, "update", namespace, resource + "/status")
        forbid_status_write(identity, "update", kind, namespace, name)
        body = await read_body(request, max_body)
        return await get_store(request).replace_status(kind, namespace, name, body)

    async def patch_status(request: Request, name: str, identity: IdentityDep) -> Any:
        namespace = ns_of(request)
        authorize(identity, "patch", namespace, resource + "/status")
        forbid_status_write(identity, "patch", kind, namespace, name)
        body = await read_body(request, max_body)
        return await get_store(request).patch(
            kind,
            namespace,
            name,
            body,
            request.headers.get("content-type", ""),
            subresource="status",
        )

    _add_routes(
        router,
        kind,
        resource,
        {
            "list": list_objects,
            "create": create_object,
            "read": read_object,
            "update": replace_object,
            "patch": patch_object,
            "delete": delete_object,
            "read_status": read_status,
            "update_status": replace_status,
            "patch_status": patch_status,
        },
    )
    return router


async def _list_or_table(
    store: ResourceStore, kind: ResourceKind, namespace: str | None, request: Request
) -> Any:
    """A page of the list, as a ``List`` or (when the client asks) a ``Table``."""
    page = await _list_page(store, kind, namespace, request)
    table = _as_table(request, kind, page.items, str(page.resource_version), page.continue_token)
    if table is not None:
        return table
    return list_response(kind, page.items, page.resource_version, page.continue_token)


async def _list_page(
    store: ResourceStore, kind: ResourceKind, namespace: str | None, request: Request
) -> Page:
    """One page of a list, as the request's selectors, ``limit`` and ``continue`` say."""
    return await store.list(
        kind,
        namespace,
        label_selector=request.query_params.get("labelSelector"),
        field_selector=request.query_params.get("fieldSelector"),
        limit=_int_param(request, "limit"),
        continue_token=request.query_params.get("continue"),
    )


def _as_table(
    request: Request,
    kind: ResourceKind,
    objects: list[dict[str, Any]],
    resource_version: str | None,
    continue_token: str | None = None,
) -> dict[str, Any] | None:
    """The Table of ``objects`` when the request's ``Accept`` asks for one, else None."""
    version = printing.table_version(request.headers.get("accept"))
    if version is None:
        return None
    return printing.table(
        kind,
        objects,
        version=version,
        include=printing.include_object(request.query_params.get("includeObject")),
        resource_version=resource_version,
        continue_token=continue_token,
    )


Write = Callable[[Any, AsyncSession | None], Awaitable[dict[str, Any]]]


async def _write(
    request: Request,
    store: ResourceStore,
    kind: ResourceKind,
    max_body: int,
    write: Write,
    code: int = 200,
) -> JSONResponse:
    """A create or replace: ``write(body, session)`` with the body's fields validated as the
    request says, in a rolled-back session for a dry run."""
    report, body = await _checked_body(request, kind, max_body)
    async with writes.write_session(store, writes.dry_run(request)) as session:
        obj = await fields.write_pruned(report, body, lambda b: write(b, session))
    return _respond(obj, report, code)


async def _patch(
    request: Request,
    store: ResourceStore,
    kind: ResourceKind,
    namespace: str | None,
    name: str,
    max_body: int,
) -> JSONResponse:
    report, body = await _checked_body(request, kind, max_body)
    async with writes.write_session(store, writes.dry_run(request)) as session:
        obj = await writes.patch_with_field_validation(
            store,
            kind,
            namespace,
            name,
            body,
            request.headers.get("content-type", ""),
            report,
            session=session,
        )
    return _respond(obj, report)


async def _checked_body(
    request: Request, kind: ResourceKind, max_body: int
) -> tuple[fields.FieldReport, Any]:
    """The write's ``fieldValidation`` report and its body (repeated keys already judged)."""
    report = fields.FieldReport(fields.directive(request.query_params.get("fieldValidation")))
    body, duplicates = await read_body_fields(request, max_body)
    fields.check_duplicates(report, duplicates, kind.kind)
    fields.check_metadata(report, body, kind.kind)
    return report, body


def _respond(obj: dict[str, Any], report: fields.FieldReport, code: int = 200) -> JSONResponse:
    response = JSONResponse(obj, status_code=code)
    for name, value in report.headers():
        response.headers.append(name, value)
    return response


def _add_routes(
    router: APIRouter, kind: ResourceKind, resource: str, endpoints: dict[str, Any]
) -> None:
    """Register ``endpoints`` (by verb) on the kind's collection, item and ``/status`` paths,
    with their OpenAPI description, and the all-namespaces list of a namespaced kind."""
    prefix = kind.base_path + ("/namespaces/{namespace}" if kind.namespaced else "")
    collection = f"{prefix}/{kind.plural}"
    item = f"{collection}/{{name}}"
    list_objects = endpoints["list"]
    singular = kind.singular
    docs = _OpenApi(kind)
    router.add_api_route(
        collection,
        endpoints["list"],
        methods=["GET"],
        name=f"list_{singular}",
        openapi_extra={
            **docs.operation(query=LIST_QUERY),
            "description": f"The {kind.plural} of the namespace. With ``watch=true`` the answer "
            "is a stream of WatchEvents (one JSON object per line), as Kubernetes'.",
        },
    )
    router.add_api_route(
        collection,
        endpoints["create"],
        methods=["POST"],
        name=f"create_{singular}",
        status_code=201,
        openapi_extra=docs.operation(body="application/json"),
    )
    routes = (
        ("", "GET", endpoints["read"], "read", None),
        ("", "PUT", endpoints["update"], "update", "application/json"),
        ("", "PATCH", endpoints["patch"], "patch", patch_types(kind)),
        ("", "DELETE", endpoints["delete"], "delete", None),
        ("/status", "GET", endpoints["read_status"], "read", None),
        ("/status", "PUT", endpoints["update_status"], "update", "application/json"),
        ("/status", "PATCH", endpoints["patch_status"], "patch", patch_types(kind)),
    )
    for suffix, method, endpoint, verb, body in routes:
        router.add_api_route(
            item + suffix,
            endpoint,
            methods=[method],
            name=f"{verb}_{singular}" + ("_status" if suffix else ""),
            openapi_extra=docs.operation(body=body),
        )
    if kind.namespaced:

        async def list_all_namespaces(request: Request, identity: IdentityDep) -> Any:
            if not identity.cluster_admin:
                raise ApiError(
                    403,
                    f'User "{identity.user}" cannot list resource "{resource}" '
                    "at the cluster scope; list one namespace instead",
                )
            return await list_objects(request, identity)

        router.add_api_route(
            f"{kind.base_path}/{kind.plural}",
            list_all_namespaces,
            methods=["GET"],
            name=f"list_{singular}_all_namespaces",
        )
