"""The Jupyter web app's backend API (Kubeflow's ``crud-web-apps/jupyter``) at ``/jupyter/api``.

Kubeflow's notebook UI, and scripts written for it, call these routes; the gateway sends
``/jupyter/api/`` here, authorizing the namespace of ``/jupyter/api/namespaces/{ns}/`` as for
the Notebook resource itself (``/config`` and ``/gpus`` are readable by any signed-in user):

- ``GET  /config``                                   the spawner configuration (jwa_config)
- ``GET  /gpus``                                     GPU vendors some node offers
- ``GET  /storageclasses``, ``/storageclasses/default``  none here (no StorageClass objects)
- ``GET  /namespaces/{ns}/notebooks``                the list, with status phases (jwa_status)
- ``POST /namespaces/{ns}/notebooks``                the spawner form (jwa_form)
- ``GET|PATCH|DELETE /namespaces/{ns}/notebooks/{name}``  one notebook; PATCH ``{"stopped"}``
- ``GET  /namespaces/{ns}/notebooks/{name}/pod``     its server as a Pod
- ``GET  /namespaces/{ns}/notebooks/{name}/pod/{pod}/logs``  its server's output lines
- ``GET  /namespaces/{ns}/notebooks/{name}/events``  its events (derived from its status)
- ``GET  /namespaces/{ns}/pvcs``, ``/poddefaults``   for the form's pickers

Answers are Kubeflow's envelope, ``{"success": true, "status": 200, "user": ..., FIELD: ...}``;
errors ``{"success": false, "status": CODE, "log": MESSAGE, "user": ...}`` (plus the
Kubernetes ``causes`` with each field's path, when there are). Writes pass the double-submit
XSRF check of Kubeflow's ``crud_backend/csrf.py``: a GET sets the ``XSRF-TOKEN`` cookie, and a
POST, PATCH or DELETE must send it back in the ``X-XSRF-TOKEN`` header (403 otherwise).
Objects are read and written through the resource store, with the same validation, events
and authorization as the Kubernetes-style API.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from services.common.app import ServiceContext, context
from services.common.auth import IdentityDep, authorize
from services.common.errors import ApiError
from services.common.identity import Identity
from services.common.resources import writes
from services.common.resources.api import read_body
from services.common.runtime import WorkloadNotFound
from services.notebook import jwa_form
from services.notebook.jwa_config import load_config
from services.notebook.jwa_status import (
    STOP_ANNOTATION,
    events_of,
    notebook_row,
    pod_view,
    process_status,
)
from services.notebook.models import NOTEBOOK, PODDEFAULT, PVC
from services.notebook.settings import Settings
from services.notebook.workload import workload_name

PREFIX = "/jupyter/api"
NS_PREFIX = PREFIX + "/namespaces/{namespace}"
XSRF_COOKIE = "XSRF-TOKEN"
XSRF_HEADER = "X-" + XSRF_COOKIE
NOTEBOOKS = "notebooks.kubeflow.org"
LOG_TAIL = 1000


def _user(request: Request) -> str | None:
    identity = getattr(request.state, "identity", None)
    return identity.user if isinstance(identity, Identity) else None


def render_error(err: ApiError) -> dict[str, Any]:
    """Kubeflow's failed response (``crud_backend.api.failed_response``), with the causes."""
    body: dict[str, Any] = {
        "success": False,
        "log": err.message,
        "status": err.code,
        "user": err.details.get("user"),
    }
    if err.causes:
        body["causes"] = [c.to_json() for c in err.causes]
        body["field"] = err.causes[0].field
    return body


def check_xsrf(request: Request) -> None:
    """The double-submit check of Kubeflow's crud_backend (csrf.py): a write carries the
    ``XSRF-TOKEN`` cookie and the same value in ``X-XSRF-TOKEN``."""
    if request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
        return
    cookie = request.cookies.get(XSRF_COOKIE)
    header = request.headers.get(XSRF_HEADER)
    if not cookie:
        raise ApiError(403, f"Could not find CSRF cookie {XSRF_COOKIE} in the request.")
    if not header:
        raise ApiError(403, f"Could not detect CSRF protection header {XSRF_HEADER}.")
    if not secrets.compare_digest(cookie, header):
        raise ApiError(
            403,
            f"CSRF check failed. Token in cookie {XSRF_COOKIE} doesn't match "
            f"token in header {XSRF_HEADER}.",
        )


XsrfDep = Annotated[None, Depends(check_xsrf)]


class _Route(APIRoute):
    """A route whose errors carry the caller's name, for the envelope's ``user``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_user(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                exc.details.setdefault("user", _user(request))
                raise

        return with_user


router = APIRouter(tags=["jupyter-web-app"], route_class=_Route)


def success(request: Request, field: str | None = None, data: Any = None) -> JSONResponse:
    """Kubeflow's success response; a GET also hands out the XSRF cookie when it has none."""
    body: dict[str, Any] = {"status": 200, "success": True, "user": _user(request)}
    if field is not None:
        body[field] = data
    response = JSONResponse(body)
    if request.method == "GET" and not request.cookies.get(XSRF_COOKIE):
        response.set_cookie(
            XSRF_COOKIE,
            secrets.token_urlsafe(32),
            path="/",  # as Kubeflow's (Flask's default): the dashboard's form sends it too
            samesite="strict",
            httponly=False,  # the UI's script reads it to send the header
            secure=request.headers.get("x-forwarded-proto", request.url.scheme) == "https",
        )
        response.headers["Cache-Control"] = "no-cache, no-store, must-revalidate, max-age=0"
    return response


def _config(request: Request) -> dict[str, Any]:
    settings = context(request).settings
    path = settings.jwa_spawner_ui_config if isinstance(settings, Settings) else ""
    return load_config(path)


def _allowed(identity: Identity, verb: str, namespace: str, resource: str) -> None:
    """The authorization of the resource API (the same roles for the same verbs)."""
    authorize(identity, verb, namespace, resource)


# ---------------------------------------------------------------------- configuration
@router.get(PREFIX + "/config")
async def get_config(request: Request, identity: IdentityDep) -> JSONResponse:
    return success(request, "config", _config(request))


@router.get(PREFIX + "/gpus")
async def get_gpus(request: Request, identity: IdentityDep) -> JSONResponse:
    """The configured vendors some node offers. No runtime reports GPU capacity to the
    platform (the local runtime has none), so none is offered: an empty list."""
    offered: set[str] = set()
    vendors = (_config(request).get("gpus") or {}).get("value", {}).get("vendors", [])
    keys = [v.get("limitsKey") for v in vendors if isinstance(v, dict)]
    return success(request, "vendors", sorted(k for k in keys if k in offered))


@router.get(PREFIX + "/storageclasses")
async def get_storageclasses(request: Request, identity: IdentityDep) -> JSONResponse:
    """No StorageClass objects exist here (a runtime has one kind of volume): none."""
    return success(request, "storageClasses", [])


@router.get(PREFIX + "/storageclasses/default")
async def get_default_storageclass(request: Request, identity: IdentityDep) -> JSONResponse:
    """Kubeflow answers "" when no class is marked default; so does this."""
    return success(request, "defaultStorageClass", "")


# ---------------------------------------------------------------------- pickers
@router.get(NS_PREFIX + "/pvcs")
async def get_pvcs(request: Request, namespace: str, identity: IdentityDep) -> JSONResponse:
    _allowed(identity, "list", namespace, "persistentvolumeclaims")
    pvcs = await context(request).store.list_all(PVC, namespace)
    data = [
        {
            "name": p["metadata"]["name"],
            "size": ((p.get("spec") or {}).get("resources") or {})
            .get("requests", {})
            .get("storage"),
            "mode": ((p.get("spec") or {}).get("accessModes") or ["ReadWriteOnce"])[0],
        }
        for p in pvcs
    ]
    return success(request, "pvcs", data)


@router.get(NS_PREFIX + "/poddefaults")
async def get_poddefaults(request: Request, namespace: str, identity: IdentityDep) -> JSONResponse:
    """The PodDefaults, each with ``label`` (its first selector label: what the form's
    ``configurations`` sends) and ``desc``, as Kubeflow's."""
    _allowed(identity, "list", namespace, "poddefaults.kubeflow.org")
    contents = []
    for pd in await context(request).store.list_all(PODDEFAULT, namespace):
        labels = list(((pd.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
        if not labels:
            continue  # the form cannot pick one without a label to set
        pd["label"] = labels[0]
        pd["desc"] = (pd.get("spec") or {}).get("desc") or pd["metadata"]["name"]
        contents.append(pd)
    return success(request, "poddefaults", contents)


# ---------------------------------------------------------------------- notebooks
@router.get(NS_PREFIX + "/notebooks")
async def get_notebooks(request: Request, namespace: str, identity: IdentityDep) -> JSONResponse:
    _allowed(identity, "list", namespace, NOTEBOOKS)
    config = _config(request)
    notebooks = await context(request).store.list_all(NOTEBOOK, namespace)
    return success(request, "notebooks", [notebook_row(nb, config) for nb in notebooks])


@router.post(NS_PREFIX + "/notebooks")
async def post_notebook(
    request: Request, namespace: str, identity: IdentityDep, _xsrf: XsrfDep
) -> JSONResponse:
    _allowed(identity, "create", namespace, NOTEBOOKS)
    ctx = context(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    made = jwa_form.spawn(body, namespace, identity.user, _config(request))
    await create_spawned(ctx, namespace, made)
    return success(request, "message", "Notebook created successfully.")


async def create_spawned(ctx: ServiceContext, namespace: str, made: jwa_form.Spawn) -> None:
    """Create the new PVCs, then the Notebook, through the store (its validation and events).

    Everything is tried first in a rolled-back transaction (Kubeflow's dry runs), so a form
    that cannot be created leaves nothing behind; a claim that exists already is a 409 naming
    the form's field."""
    store = ctx.store
    async with writes.write_session(store, True) as dry:
        for pvc in made.pvcs:
            await store.create(PVC, namespace, pvc, session=dry)
        await store.create(NOTEBOOK, namespace, made.notebook, session=dry)
    created: list[str] = []
    try:
        for pvc in made.pvcs:
            created.append((await store.create(PVC, namespace, pvc))["metadata"]["name"])
        await store.create(NOTEBOOK, namespace, made.notebook)
    except ApiError:
        for name in created:  # a concurrent create won the race: undo this form's claims
            await store.delete(PVC, namespace, name)
        raise


@router.get(NS_PREFIX + "/notebooks/{name}")
async def get_notebook(
    request: Request, namespace: str, name: str, identity: IdentityDep
) -> JSONResponse:
    _allowed(identity, "get", namespace, NOTEBOOKS)
    notebook = await context(request).store.get(NOTEBOOK, namespace, name)
    notebook["processed_status"] = process_status(notebook)
    return success(request, "notebook", notebook)


@router.patch(NS_PREFIX + "/notebooks/{name}")
async def patch_notebook(
    request: Request, namespace: str, name: str, identity: IdentityDep, _xsrf: XsrfDep
) -> JSONResponse:
    """``{"stopped": true}`` sets ``kubeflow-resource-stopped`` (the time), ``false`` removes
    it; the notebook controller stops or starts the server (services/notebook/notebooks.py)."""
    _allowed(identity, "patch", namespace, NOTEBOOKS)
    ctx = context(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    if not isinstance(body, dict) or "stopped" not in body:
        raise ApiError(
            400,
            "Request body must include at least one supported key: ['stopped']",
        )
    stop = body["stopped"]
    if not isinstance(stop, bool):
        raise ApiError(400, "stopped: must be true or false")
    notebook = await ctx.store.get(NOTEBOOK, namespace, name)
    annotations = notebook["metadata"].get("annotations") or {}
    if stop and STOP_ANNOTATION in annotations:
        raise ApiError(409, f"Notebook {namespace}/{name} is already stopped.")
    value = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if stop else None
    patch = {"metadata": {"annotations": {STOP_ANNOTATION: value}}}
    await ctx.store.patch(NOTEBOOK, namespace, name, patch, "application/merge-patch+json")
    return success(request)


@router.delete(NS_PREFIX + "/notebooks/{name}")
async def delete_notebook(
    request: Request, namespace: str, name: str, identity: IdentityDep, _xsrf: XsrfDep
) -> JSONResponse:
    _allowed(identity, "delete", namespace, NOTEBOOKS)
    await context(request).store.delete(NOTEBOOK, namespace, name)
    return success(request, "message", f"Notebook {name} successfully deleted.")


@router.get(NS_PREFIX + "/notebooks/{name}/pod")
async def get_notebook_pod(
    request: Request, namespace: str, name: str, identity: IdentityDep
) -> JSONResponse:
    _allowed(identity, "get", namespace, NOTEBOOKS)
    ctx = context(request)
    notebook = await ctx.store.get(NOTEBOOK, namespace, name)
    try:
        wl = await ctx.runtime.status(namespace, workload_name(name))
    except WorkloadNotFound:
        raise ApiError(404, "No pod detected.") from None
    pod_defaults = await ctx.store.list_all(PODDEFAULT, namespace)
    return success(request, "pod", pod_view(notebook, wl, pod_defaults))


@router.get(NS_PREFIX + "/notebooks/{name}/pod/{pod}/logs")
async def get_pod_logs(
    request: Request, namespace: str, name: str, pod: str, identity: IdentityDep
) -> JSONResponse:
    _allowed(identity, "get", namespace, NOTEBOOKS)
    if pod != f"{name}-0":
        raise ApiError(404, f"No pod {pod} for notebook {name}.")
    ctx = context(request)
    await ctx.store.get(NOTEBOOK, namespace, name)
    lines: list[str] = []
    try:
        async for line in ctx.runtime.logs(namespace, workload_name(name), tail=LOG_TAIL):
            lines.append(line.rstrip("\n"))
    except WorkloadNotFound:
        raise ApiError(404, "No pod detected.") from None
    return success(request, "logs", lines)


@router.get(NS_PREFIX + "/notebooks/{name}/events")
async def get_notebook_events(
    request: Request, namespace: str, name: str, identity: IdentityDep
) -> JSONResponse:
    _allowed(identity, "get", namespace, NOTEBOOKS)
    notebook = await context(request).store.get(NOTEBOOK, namespace, name)
    return success(request, "events", events_of(notebook))
