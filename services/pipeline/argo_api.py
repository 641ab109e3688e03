"""The Argo Server REST API (``/api/v1/workflows``, ``/api/v1/cron-workflows``,
``/api/v1/workflow-templates``), enough for hera's ``WorkflowsService`` and the argo CLI.

Every call maps onto the same Workflow objects the Kubernetes-style API serves; actions
(stop, terminate, suspend, resume, retry) are requests recorded in the spec or annotations,
which the controller carries out on its next pass. Errors use Argo's gRPC-gateway shape
``{"code": <grpc code>, "message": ...}``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.common.app import context
from services.common.auth import IdentityDep, authorize
from services.common.errors import ApiError
from services.common.resources import ResourceKind
from services.common.resources.api import read_body
from services.pipeline.api import log_lines, logged_workflow
from services.pipeline.engine_types import RESUME_ANNOTATION
from services.pipeline.models import CRON_WORKFLOW, WORKFLOW, WORKFLOW_TEMPLATE
from services.pipeline.retry import request_retry

router = APIRouter()
PREFIX = "/api/v1"

_GRPC_CODES = {
    400: 3,
    401: 16,
    403: 7,
    404: 5,
    409: 6,
    412: 9,
    413: 8,
    415: 3,
    422: 3,
    429: 8,
    500: 13,
    501: 12,
    503: 14,
    504: 4,
}


def render_argo_error(err: ApiError) -> dict[str, Any]:
    """Argo server errors: the gRPC status code and message (what hera reads)."""
    message = err.message
    if err.causes:
        message += " (" + "; ".join(f"{c.field}: {c.message}" for c in err.causes) + ")"
    return {"code": _GRPC_CODES.get(err.code, 2), "message": message}


def _argo_list(items: list[dict[str, Any]], token: str | None, rv: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if token:
        meta["continue"] = token
    return {"metadata": meta, "items": items}


async def _body(request: Request, key: str) -> dict[str, Any]:
    body = await read_body(request)
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise ApiError(400, f"the request body needs a {key!r} object")
    return body


async def _list(request: Request, kind: ResourceKind, namespace: str) -> dict[str, Any]:
    q = request.query_params
    limit = q.get("listOptions.limit")
    page = await context(request).store.list(
        kind,
        namespace or None,
        label_selector=q.get("listOptions.labelSelector") or None,
        field_selector=q.get("listOptions.fieldSelector") or None,
        limit=int(limit) if limit and limit.isdigit() else None,
        continue_token=q.get("listOptions.continue") or None,
    )
    items = page.items
    name_filter = q.get("nameFilter")
    if name_filter:
        items = [i for i in items if name_filter in i["metadata"]["name"]]
    items.sort(key=lambda o: o["metadata"].get("creationTimestamp", ""), reverse=True)
    return _argo_list(items, page.continue_token, page.resource_version)


async def _create(
    request: Request, kind: ResourceKind, namespace: str, key: str, identity: Any
) -> JSONResponse:
    authorize(identity, "create", namespace, kind.plural)
    body = await _body(request, key)
    obj = dict(body[key])
    obj.setdefault("apiVersion", kind.api_version)
    obj.setdefault("kind", kind.kind)
    store = context(request).store
    if body.get("serverDryRun") or (body.get("createOptions") or {}).get("dryRun"):
        return JSONResponse(store.validate(kind, obj, namespace))
    created = await store.create(kind, namespace, obj)
    return JSONResponse(created)


def _add_object_routes(segment: str, kind: ResourceKind, key: str, singular: str) -> None:
    """Create, list, read and delete of ``kind`` under ``PREFIX/segment/{namespace}`` as the
    Argo server serves them (a create's object is the body's ``key``); the handlers are
    named ``create_<singular>``, ``list_<segment>``, ``read_<singular>``, ``delete_<singular>``."""
    base = f"{PREFIX}/{segment}/{{namespace}}"

    async def create(request: Request, namespace: str, identity: IdentityDep) -> JSONResponse:
        return await _create(request, kind, namespace, key, identity)

    async def list_all(request: Request, namespace: str, identity: IdentityDep) -> dict[str, Any]:
        authorize(identity, "list", namespace, kind.plural)
        return await _list(request, kind, namespace)

    async def read(
        request: Request, namespace: str, name: str, identity: IdentityDep
    ) -> dict[str, Any]:
        authorize(identity, "get", namespace, kind.plural)
        return await context(request).store.get(kind, namespace, name)

    async def delete(
        request: Request, namespace: str, name: str, identity: IdentityDep
    ) -> dict[str, Any]:
        authorize(identity, "delete", namespace, kind.plural)
        await context(request).store.delete(kind, namespace, name)
        return {}

    plural = segment.replace("-", "_")
    for handler, name, path, method in (
        (create, f"create_{singular}", base, "POST"),
        (list_all, f"list_{plural}", base, "GET"),
        (read, f"read_{singular}", f"{base}/{{name}}", "GET"),
        (delete, f"delete_{singular}", f"{base}/{{name}}", "DELETE"),
    ):
        handler.__name__ = handler.__qualname__ = name
        router.add_api_route(path, handler, methods=[method])


# ------------------------------------------------------------------ workflows
_add_object_routes("workflows", WORKFLOW, "workflow", "workflow")


@router.post(f"{PREFIX}/workflows/{{namespace}}/lint")
async def lint_workflow(request: Request, namespace: str, identity: IdentityDep) -> JSONResponse:
    body = await _body(request, "workflow")
    obj = {"apiVersion": WORKFLOW.api_version, "kind": WORKFLOW.kind, **body["workflow"]}
    return JSONResponse(context(request).store.validate(WORKFLOW, obj, namespace))


@router.post(f"{PREFIX}/workflows/{{namespace}}/submit")
async def submit_workflow(request: Request, namespace: str, identity: IdentityDep) -> JSONResponse:
    """Submit from a WorkflowTemplate or CronWorkflow (``resourceKind``/``resourceName``)."""
    authorize(identity, "create", namespace, "workflows")
    body = await read_body(request)
    kind_name = (body or {}).get("resourceKind", "")
    name = (body or {}).get("resourceName", "")
    store = context(request).store
    options = (body or {}).get("submitOptions") or {}
    if kind_name.lower() in ("workflowtemplate", "workflowtemplates"):
        spec: dict[str, Any] = {"workflowTemplateRef": {"name": name}}
        await store.get(WORKFLOW_TEMPLATE, namespace, name)
    elif kind_name.lower() in ("cronworkflow", "cronworkflows"):
        cron = await store.get(CRON_WORKFLOW, namespace, name)
        spec = copy.deepcopy(cron["spec"]["workflowSpec"])
    else:
        raise ApiError(400, "resourceKind must be WorkflowTemplate or CronWorkflow")
    params = [p.split("=", 1) for p in options.get("parameters") or [] if "=" in p]
    if params:
        spec.setdefault("arguments", {})["parameters"] = [
            {"name": k, "value": v} for k, v in params
        ]
    obj = {
        "metadata": {
            "generateName": options.get("generateName") or f"{name}-",
            "labels": options.get("labels")
            and dict(kv.split("=", 1) for kv in options["labels"].split(","))
            or {},
        },
        "spec": spec,
    }
    return JSONResponse(await store.create(WORKFLOW, namespace, obj))


async def _patch(request: Request, namespace: str, name: str, patch: dict[str, Any]) -> Any:
    return await context(request).store.patch(WORKFLOW, namespace, name, patch)


def _bump(wf: dict[str, Any], annotation: str) -> dict[str, str]:
    current = int((wf["metadata"].get("annotations") or {}).get(annotation) or 0)
    return {annotation: str(current + 1)}


async def workflow_action(request: Request, namespace: str, name: str, action: str) -> Any:
    """stop | terminate | suspend | resume | retry | resubmit, as the Argo server does them."""
    store = context(request).store
    wf = await store.get(WORKFLOW, namespace, name)
    phase = (wf.get("status") or {}).get("phase")
    finished = phase in ("Succeeded", "Failed", "Error")
    if action in ("stop", "terminate"):
        if finished:
            raise ApiError(409, f"cannot {action} a workflow that is {phase}")
        return await _patch(
            request,
            namespace,
            name,
            {"spec": {"shutdown": "Stop" if action == "stop" else "Terminate"}},
        )
    if action == "suspend":
        if finished:
            raise ApiError(409, f"cannot suspend a workflow that is {phase}")
        return await _patch(request, namespace, name, {"spec": {"suspend": True}})
    if action == "resume":
        return await _patch(
            request,
            namespace,
            name,
            {"spec": {"suspend": None}, "metadata": {"annotations": _bump(wf, RESUME_ANNOTATION)}},
        )
    if action == "retry":
        if phase not in ("Failed", "Error"):
            raise ApiError(409, f"workflow must be Failed or Error to retry (it is {phase})")
        return await request_retry(store, wf)
    if action == "resubmit":
        spec = copy.deepcopy(wf["spec"])
        spec.pop("shutdown", None)
        spec.pop("suspend", None)
        labels = {
            k: v
            for k, v in (wf["metadata"].get("labels") or {}).items()
            if not k.startswith("workflows.argoproj.io/")
        }
        labels["workflows.argoproj.io/resubmitted-from-workflow"] = name
        return await store.create(
            WORKFLOW,
            namespace,
            {"metadata": {"generateName": f"{name}-", "labels": labels}, "spec": spec},
        )
    raise ApiError(404, f"unknown action {action!r}")


for _action in ("stop", "terminate", "suspend", "resume", "retry", "resubmit"):

    def _make(action: str) -> Any:
        async def handler(
            request: Request, namespace: str, name: str, identity: IdentityDep
        ) -> Any:
            authorize(identity, "update", namespace, "workflows")
            return await workflow_action(request, namespace, name, action)

        handler.__name__ = f"{action}_workflow"
        return handler

    router.add_api_route(
        f"{PREFIX}/workflows/{{namespace}}/{{name}}/{_action}", _make(_action), methods=["PUT"]
    )


@router.get(f"{PREFIX}/workflows/{{namespace}}/{{name}}/log")
async def read_workflow_logs(
    request: Request, namespace: str, name: str, identity: IdentityDep
) -> StreamingResponse:
    """Log entries as Argo streams them: one ``{"result": {"content", "podName"}}`` per line."""
    q = request.query_params
    pod = q.get("podName") or None
    wf = await logged_workflow(request, identity, namespace, name, pod, "pod")
    follow = q.get("logOptions.follow") in ("true", "1")
    tail_raw = q.get("logOptions.tailLines") or ""
    tail = int(tail_raw) if tail_raw.isdigit() else None
    grep = q.get("grep") or None

    async def body() -> AsyncIterator[bytes]:
        async for node, line in log_lines(request, wf, pod, follow, tail):
            if grep and grep not in line:
                continue
            entry = {"result": {"content": line, "podName": node["id"]}}
            yield (json.dumps(entry) + "\n").encode()

    return StreamingResponse(body(), media_type="application/json")


# -------------------------------------------------------------- cron workflows
_add_object_routes("cron-workflows", CRON_WORKFLOW, "cronWorkflow", "cron_workflow")


@router.put(f"{PREFIX}/cron-workflows/{{namespace}}/{{name}}")
async def update_cron_workflow(
    request: Request, namespace: str, name: str, identity: IdentityDep
) -> dict[str, Any]:
    authorize(identity, "update", namespace, "cronworkflows")
    body = await _body(request, "cronWorkflow")
    return await context(request).store.replace(
        CRON_WORKFLOW, namespace, name, body["cronWorkflow"]
    )


for _action, _suspend in (("suspend", True), ("resume", False)):

    def _make_cron(action: str, suspend: bool) -> Any:
        async def handler(
            request: Request, namespace: str, name: str, identity: IdentityDep
        ) -> dict[str, Any]:
            authorize(identity, "update", namespace, "cronworkflows")
            return await context(request).store.patch(
                CRON_WORKFLOW, namespace, name, {"spec": {"suspend": suspend}}
            )

        handler.__name__ = f"{action}_cron_workflow"
        return handler

    router.add_api_route(
        f"{PREFIX}/cron-workflows/{{namespace}}/{{name}}/{_action}",
        _make_cron(_action, _suspend),
        methods=["PUT"],
    )


# ---------------------------------------------------------- workflow templates
_add_object_routes("workflow-templates", WORKFLOW_TEMPLATE, "template", "workflow_template")


@router.get(f"{PREFIX}/version")
async def read_version(identity: IdentityDep) -> dict[str, str]:
    return {"version": "v3.5.0+shipyard", "platform": "shipyard"}
