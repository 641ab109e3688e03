"""The Kubeflow Pipelines v2beta1 REST API (``/apis/v2beta1``), enough for ``kfp.Client``.

JSON field names are KFP's (snake_case; the recurring-run list key is ``recurringRuns``),
int64 values are strings, and errors use KFP's gRPC-gateway shape. Handlers validate and
authorize, then call :class:`KfpStore` / :class:`RunService`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import yaml
from fastapi import APIRouter, Request

from services.common.app import context
from services.common.auth import IdentityDep, authorize
from services.common.errors import ApiError, Cause
from services.common.objectstore import ObjectStoreError
from services.common.resources.api import read_body
from services.common.safe_yaml import YamlError, load_all
from services.common.settings import SINGLE_USER_NAMESPACE
from services.pipeline.argo_api import _GRPC_CODES
from services.pipeline.artifact_api import artifact_key, store_errors
from services.pipeline.artifact_records import delete_run_artifacts
from services.pipeline.context import kfp_runs, kfp_store
from services.pipeline.cron import parse_schedule
from services.pipeline.kfp_ir import is_ir, split_package
from services.pipeline.kfp_package_url import version_spec
from services.pipeline.kfp_runs import FINAL_STATES, RUN_SOURCE_FIELDS, run_state
from services.pipeline.kfp_store import new_id, paginate, parse_filter, rfc3339
from services.pipeline.models import WORKFLOW
from services.pipeline.retry import request_retry

PREFIX = "/apis/v2beta1"
router = APIRouter(prefix=PREFIX)
MAX_UPLOAD = 32 * 1024 * 1024
MAX_READ = 32 * 1024 * 1024  # an artifact's bytes in one :read answer (base64 in JSON)


def render_kfp_error(err: ApiError) -> dict[str, Any]:
    message = err.message
    if err.causes:
        message += " (" + "; ".join(f"{c.field}: {c.message}" for c in err.causes) + ")"
    code = _GRPC_CODES.get(err.code, 2)
    return {"error": message, "code": code, "message": message, "details": []}


_kfp = kfp_store
_runs = kfp_runs


def _namespace(request: Request, identity: Any, given: str | None = None) -> str:
    return (
        given
        or request.query_params.get("namespace")
        or request.query_params.get("resource_reference_key.id")
        or identity.namespace
        or SINGLE_USER_NAMESPACE
    )


def _page_args(request: Request) -> dict[str, Any]:
    q = request.query_params
    size = q.get("page_size") or q.get("pageSize")
    return {
        "sort_by": q.get("sort_by") or q.get("sortBy") or None,
        "page_size": int(size) if size and size.isdigit() else None,
        "page_token": q.get("page_token") or q.get("pageToken") or None,
    }


async def _json(request: Request) -> dict[str, Any]:
    body = await read_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _listing(
    items: list[dict[str, Any]],
    request: Request,
    key: str,
    id_field: str,
) -> dict[str, Any]:
    matches = parse_filter(request.query_params.get("filter"), id_field)
    items = [i for i in items if matches(i)]
    page, token = paginate(items, **_page_args(request))
    out: dict[str, Any] = {key: page, "total_size": len(items)}
    if token:
        out["next_page_token"] = token
    return out


@router.get("/healthz")
async def read_healthz(request: Request) -> dict[str, Any]:
    settings = context(request).settings
    return {
        "commit_sha": "shipyard",
        "tag_name": "2.5.0",
        "multi_user": bool(getattr(settings, "kfp_multi_user", False)),
        "pipeline_store": "database",
    }


# ---------------------------------------------------------------- experiments
def _experiment(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "experiment_id": row["id"],
        "display_name": row["display_name"],
        "description": row["description"],
        "created_at": rfc3339(row["created_at"]),
        "namespace": row["namespace"],
        "storage_state": row["storage_state"],
    }


@router.post("/experiments")
async def create_experiment(request: Request, identity: IdentityDep) -> dict[str, Any]:
    body = await _json(request)
    ns = _namespace(request, identity, body.get("namespace"))
    authorize(identity, "create", ns, "experiments")
    name = (body.get("display_name") or body.get("name") or "").strip()
    if not name:
        raise ApiError(
            400,
            "experiment display_name is required",
            causes=[Cause("display_name", "Required value")],
        )
    if await _kfp(request).rows("kfp_experiments", namespace=ns, display_name=name):
        raise ApiError(409, f"an experiment named {name!r} already exists in {ns}")
    row = {
        "id": new_id(),
        "namespace": ns,
        "display_name": name,
        "description": body.get("description") or "",
        "storage_state": "AVAILABLE",
        "created_at": datetime.now(UTC),
    }
    await _kfp(request).insert("kfp_experiments", **row)
    return _experiment(row)


@router.get("/experiments")
async def list_experiments(request: Request, identity: IdentityDep) -> dict[str, Any]:
    ns = _namespace(request, identity)
    authorize(identity, "list", ns, "experiments")
    rows = await _kfp(request).rows("kfp_experiments", namespace=ns)
    return _listing([_experiment(r) for r in rows], request, "experiments", "experiment_id")


#: KFP's tables of namespaced rows: what a missing row is called, the resource to authorize.
_OWNED = {
    "kfp_experiments": ("experiment", "experiments"),
    "kfp_pipelines": ("pipeline", "pipelines"),
    "kfp_runs": ("run", "runs"),
    "kfp_recurring_runs": ("recurring run", "recurringruns"),
}


async def _owned_row(
    request: Request, identity: Any, table: str, row_id: str, verb: str
) -> dict[str, Any]:
    """Row ``row_id`` of ``table`` (404 if there is none), once ``identity`` may ``verb``
    it in the row's namespace (403 otherwise)."""
    what, resource = _OWNED[table]
    row = await _kfp(request).get(table, row_id, what)
    authorize(identity, verb, row["namespace"], resource)
    return row


async def _set_owned(
    request: Request, identity: Any, table: str, row_id: str, **values: Any
) -> dict[str, Any]:
    """Set ``values`` on an owned row (``update`` on its namespace); KFP's empty answer."""
    await _owned_row(request, identity, table, row_id, "update")
    await _kfp(request).update(table, row_id, **values)
    return {}


async def _delete_owned(request: Request, identity: Any, table: str, row_id: str) -> dict[str, Any]:
    """Delete an owned row (``delete`` on its namespace); KFP's empty answer."""
    await _owned_row(request, identity, table, row_id, "delete")
    await _kfp(request).delete(table, row_id)
    return {}


def _add_owned_routes(
    path: str,
    table: str,
    singular: str,
    render: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    plain_delete: bool = False,
    **actions: dict[str, Any],
) -> None:
    """KFP's plain routes on one owned row: with ``render``, ``GET {path}/{id}`` (the row as
    ``render`` shows it); with ``plain_delete``, ``DELETE {path}/{id}`` (the row alone); for
    each ``action=values``, ``POST {path}/{id}:action``, which sets ``values`` on the row."""
    if render is not None:
        show = render

        async def read(request: Request, row_id: str, identity: IdentityDep) -> dict[str, Any]:
            return show(await _owned_row(request, identity, table, row_id, "get"))

        read.__name__ = f"read_{singular}"
        router.add_api_route(f"{path}/{{row_id}}", read, methods=["GET"])
    if plain_delete:

        async def delete(request: Request, row_id: str, identity: IdentityDep) -> dict[str, Any]:
            return await _delete_owned(request, identity, table, row_id)

        delete.__name__ = f"delete_{singular}"
        router.add_api_route(f"{path}/{{row_id}}", delete, methods=["DELETE"])

    def setter(values: dict[str, Any]) -> Any:
        async def handler(request: Request, row_id: str, identity: IdentityDep) -> dict[str, Any]:
            return await _set_owned(request, identity, table, row_id, **values)

        return handler

    for action, values in actions.items():
        handler = setter(values)
        handler.__name__ = f"{action}_{singular}"
        router.add_api_route(f"{path}/{{row_id}}:{action}", handler, methods=["POST"])


_add_owned_routes(
    "/experiments",
    "kfp_experiments",
    "experiment",
    _experiment,
    plain_delete=True,
    unarchive={"storage_state": "AVAILABLE"},
)


@router.post("/experiments/{experiment_id}:archive")
async def archive_experiment(
    request: Request, experiment_id: str, identity: IdentityDep
) -> dict[str, Any]:
    """Archive the experiment, its runs, and disable its recurring runs (as KFP does)."""
    await _owned_row(request, identity, "kfp_experiments", experiment_id, "update")
    kfp = _kfp(request)
    await kfp.update("kfp_experiments", experiment_id, storage_state="ARCHIVED")
    for run in await kfp.rows("kfp_runs", experiment_id=experiment_id):
        await kfp.update("kfp_runs", run["id"], storage_state="ARCHIVED")
    for rec in await kfp.rows("kfp_recurring_runs", experiment_id=experiment_id):
        await kfp.update("kfp_recurring_runs", rec["id"], status="DISABLED")
    return {}


# ------------------------------------------------------------------ pipelines
def _pipeline(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "pipeline_id": row["id"],
        "display_name": row["display_name"],
        "name": row["display_name"],
        "description": row["description"],
        "created_at": rfc3339(row["created_at"]),
        "namespace": row["namespace"],
    }


def _version(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "pipeline_id": row["pipeline_id"],
        "pipeline_version_id": row["id"],
        "display_name": row["display_name"],
        "name": row["display_name"],
        "description": row["description"],
        "created_at": rfc3339(row["created_at"]),
        "pipeline_spec": row["spec"],
    }


def parse_package(raw: bytes, filename: str = "") -> dict[str, Any]:
    """A pipeline package: KFP IR YAML (optionally with a platform spec) or an Argo Workflow."""
    if len(raw) > MAX_UPLOAD:
        raise ApiError(413, "the pipeline package is larger than 32 MB")
    try:
        docs = [d for d in load_all(raw.decode()) if d is not None]
    except YamlError as exc:
        raise ApiError(400, f"the pipeline package {filename!r} is refused: {exc}") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ApiError(400, f"the pipeline package {filename!r} is not YAML: {exc}") from None
    if not docs or not isinstance(docs[0], dict):
        raise ApiError(400, f"the pipeline package {filename!r} is empty")
    spec = docs[0]
    if not (is_ir(split_package(spec)) or spec.get("kind") == "Workflow"):
        raise ApiError(
            400, "the pipeline package is neither KFP IR (kfp.compiler output) nor an Argo Workflow"
        )
    if len(docs) > 1 and isinstance(docs[1], dict) and is_ir(spec):
        return {"pipeline_spec": spec, "platform_spec": docs[1]}
    return spec


async def _check_package(request: Request, namespace: str, spec: dict[str, Any]) -> None:
    """Reject a package the engine cannot run now, not when a run starts."""
    from services.pipeline.kfp_runs import workflow_spec_for

    try:
        wf_spec = workflow_spec_for(spec, {})
    except ApiError as exc:
        if exc.causes and all(c.field.startswith("runtime_config") for c in exc.causes):
            return
        raise
    store = context(request).store
    store.validate(
        WORKFLOW,
        {"metadata": {"name": "check"}, "spec": wf_spec},  # noqa: SLF001
        namespace,
    )


async def _create_pipeline(
    request: Request, ns: str, name: str, description: str
) -> dict[str, Any]:
    kfp = _kfp(request)
    if await kfp.rows("kfp_pipelines", namespace=ns, display_name=name):
        raise ApiError(409, f"a pipeline named {name!r} already exists in {ns}")
    row = {
        "id": new_id(),
        "namespace": ns,
        "display_name": name,
        "description": description,
        "created_at": datetime.now(UTC),
    }
    await kfp.insert("kfp_pipelines", **row)
    return row


async def _create_version(
    request: Request, pipeline_id: str, name: str, description: str, spec: dict[str, Any]
) -> dict[str, Any]:
    row = {
        "id": new_id(),
        "pipeline_id": pipeline_id,
        "display_name": name,
        "description": description,
        "spec": spec,
        "created_at": datetime.now(UTC),
    }
    await _kfp(request).insert("kfp_versions", **row)
    return row


@router.post("/pipelines")
async def create_pipeline(request: Request, identity: IdentityDep) -> dict[str, Any]:
    body = await _json(request)
    ns = _namespace(request, identity, body.get("namespace"))
    authorize(identity, "create", ns, "pipelines")
    name = body.get("display_name") or body.get("name")
    if not name:
        raise ApiError(
            400,
            "pipeline display_name is required",
            causes=[Cause("display_name", "Required value")],
        )
    return _pipeline(await _create_pipeline(request, ns, name, body.get("description") or ""))


@router.post("/pipelines/create")
async def create_pipeline_and_version(request: Request, identity: IdentityDep) -> dict[str, Any]:
    body = await _json(request)
    pipeline = body.get("pipeline") or {}
    version = body.get("pipeline_version") or {}
    ns = _namespace(request, identity, pipeline.get("namespace"))
    authorize(identity, "create", ns, "pipelines")
    spec = await version_spec(request, version, "pipeline_version.")
    await _check_package(request, ns, spec)
    name = pipeline.get("display_name") or pipeline.get("name") or ""
    row = await _create_pipeline(request, ns, name, pipeline.get("description") or "")
    await _create_version(
        request,
        row["id"],
        version.get("display_name") or name,
        version.get("description") or "",
        spec,
    )
    return _pipeline(row)


async def _upload(request: Request) -> tuple[bytes, str]:
    form = await request.form(max_part_size=MAX_UPLOAD)
    upload = form.get("uploadfile")
    if upload is None or isinstance(upload, str):
        raise ApiError(
            400,
            "the multipart field 'uploadfile' with the pipeline package is required",
            causes=[Cause("uploadfile", "Required value")],
        )
    return await upload.read(), upload.filename or ""


@router.post("/pipelines/upload")
async def upload_pipeline(request: Request, identity: IdentityDep) -> dict[str, Any]:
    q = request.query_params
    ns = _namespace(request, identity, q.get("namespace"))
    authorize(identity, "create", ns, "pipelines")
    raw, filename = await _upload(request)
    spec = parse_package(raw, filename)
    await _check_package(request, ns, spec)
    name = q.get("display_name") or q.get("name") or filename.rsplit(".", 1)[0] or "pipeline"
    row = await _create_pipeline(request, ns, name, q.get("description") or "")
    await _create_version(request, row["id"], name, q.get("description") or "", spec)
    return _pipeline(row)


@router.post("/pipelines/upload_version")
async def upload_pipeline_version(request: Request, identity: IdentityDep) -> dict[str, Any]:
    q = request.query_params
    pipeline_id = q.get("pipelineid") or q.get("pipeline_id") or ""
    pipeline = await _owned_row(request, identity, "kfp_pipelines", pipeline_id, "create")
    raw, filename = await _upload(request)
    spec = parse_package(raw, filename)
    await _check_package(request, pipeline["namespace"], spec)
    name = q.get("display_name") or q.get("name") or filename.rsplit(".", 1)[0]
    return _version(
        await _create_version(request, pipeline_id, name, q.get("description") or "", spec)
    )


@router.get("/pipelines")
async def list_pipelines(request: Request, identity: IdentityDep) -> dict[str, Any]:
    ns = _namespace(request, identity)
    authorize(identity, "list", ns, "pipelines")
    rows = await _kfp(request).rows("kfp_pipelines", namespace=ns)
    return _listing([_pipeline(r) for r in rows], request, "pipelines", "pipeline_id")


@router.get("/pipelines/names/{name}")
async def read_pipeline_by_name(
    request: Request, name: str, identity: IdentityDep
) -> dict[str, Any]:
    ns = _namespace(request, identity)
    authorize(identity, "get", ns, "pipelines")
    rows = await _kfp(request).rows("kfp_pipelines", namespace=ns, display_name=name)
    if not rows:
        raise ApiError(404, f"pipeline {name!r} not found in {ns}")
    return _pipeline(rows[0])


# Deleting a pipeline also deletes its versions (below).
_add_owned_routes("/pipelines", "kfp_pipelines", "pipeline", _pipeline)


@router.delete("/pipelines/{pipeline_id}")
async def delete_pipeline(
    request: Request, pipeline_id: str, identity: IdentityDep
) -> dict[str, Any]:
    await _owned_row(request, identity, "kfp_pipelines", pipeline_id, "delete")
    kfp = _kfp(request)
    versions = await kfp.rows("kfp_versions", pipeline_id=pipeline_id)
    if versions and request.query_params.get("cascade") not in ("true", "1"):
        raise ApiError(
            412,
            f"pipeline {pipeline_id} still has {len(versions)} version(s); "
            "delete them first or pass cascade=true",
        )
    for version in versions:
        await kfp.delete("kfp_versions", version["id"])
    await kfp.delete("kfp_pipelines", pipeline_id)
    return {}


@router.post("/pipelines/{pipeline_id}/versions")
async def create_pipeline_version(
    request: Request, pipeline_id: str, identity: IdentityDep
) -> dict[str, Any]:
    pipeline = await _owned_row(request, identity, "kfp_pipelines", pipeline_id, "create")
    body = await _json(request)
    spec = await version_spec(request, body, "")
    await _check_package(request, pipeline["namespace"], spec)
    name = body.get("display_name") or body.get("name") or pipeline["display_name"]
    return _version(
        await _create_version(request, pipeline_id, name, body.get("description") or "", spec)
    )


@router.get("/pipelines/{pipeline_id}/versions")
async def list_pipeline_versions(
    request: Request, pipeline_id: str, identity: IdentityDep
) -> dict[str, Any]:
    await _owned_row(request, identity, "kfp_pipelines", pipeline_id, "list")
    rows = await _kfp(request).rows("kfp_versions", pipeline_id=pipeline_id)
    return _listing(
        [_version(r) for r in rows], request, "pipeline_versions", "pipeline_version_id"
    )


async def _version_row(
    request: Request, identity: Any, pipeline_id: str, version_id: str, verb: str
) -> dict[str, Any]:
    """Version ``version_id`` of pipeline ``pipeline_id``, once ``identity`` may ``verb`` the
    pipeline; 404 unless the version is this pipeline's (the pipeline's namespace was checked,
    not the version's)."""
    await _owned_row(request, identity, "kfp_pipelines", pipeline_id, verb)
    row = await _kfp(request).get("kfp_versions", version_id, "pipeline version")
    if row["pipeline_id"] != pipeline_id:
        raise ApiError(404, f"pipeline version {version_id} not found")
    return row


@router.get("/pipelines/{pipeline_id}/versions/{version_id}")
async def read_pipeline_version(
    request: Request, pipeline_id: str, version_id: str, identity: IdentityDep
) -> dict[str, Any]:
    return _version(await _version_row(request, identity, pipeline_id, version_id, "get"))


@router.delete("/pipelines/{pipeline_id}/versions/{version_id}")
async def delete_pipeline_version(
    request: Request, pipeline_id: str, version_id: str, identity: IdentityDep
) -> dict[str, Any]:
    await _version_row(request, identity, pipeline_id, version_id, "delete")
    await _kfp(request).delete("kfp_versions", version_id)
    return {}


# ----------------------------------------------------------------------- runs
@router.post("/runs")
async def create_run(request: Request, identity: IdentityDep) -> dict[str, Any]:
    body = await _json(request)
    ns = _namespace(request, identity, body.get("namespace"))
    if body.get("experiment_id"):
        exp = await _kfp(request).get("kfp_experiments", body["experiment_id"], "experiment")
        ns = exp["namespace"]
    authorize(identity, "create", ns, "runs")
    try:
        return await _runs(request).start(ns, body)
    except ApiError as exc:
        if exc.code == 422:  # a Workflow validation error: a bad pipeline for KFP clients
            raise ApiError(400, exc.message, causes=exc.causes) from None
        raise


@router.get("/runs")
async def list_runs(request: Request, identity: IdentityDep) -> dict[str, Any]:
    q = request.query_params
    experiment_id = q.get("experiment_id") or None
    if experiment_id:
        exp = await _kfp(request).get("kfp_experiments", experiment_id, "experiment")
        ns = exp["namespace"]
    else:
        ns = _namespace(request, identity)
    authorize(identity, "list", ns, "runs")
    rows = await _kfp(request).rows("kfp_runs", namespace=ns, experiment_id=experiment_id)
    service = _runs(request)
    runs = [_slim(await service.view(row)) for row in rows]
    return _listing(runs, request, "runs", "run_id")


def _slim(run: dict[str, Any]) -> dict[str, Any]:
    """List entries leave out the (large) pipeline spec, like KFP's list view."""
    return {k: v for k, v in run.items() if k != "pipeline_spec"}


@router.get("/runs/{run_id}")
async def read_run(request: Request, run_id: str, identity: IdentityDep) -> dict[str, Any]:
    return await _runs(request).view(await _owned_row(request, identity, "kfp_runs", run_id, "get"))


@router.delete("/runs/{run_id}")
async def delete_run(request: Request, run_id: str, identity: IdentityDep) -> dict[str, Any]:
    row = await _owned_row(request, identity, "kfp_runs", run_id, "delete")
    await delete_run_and_workflow(request, row)
    return {}


async def delete_run_and_workflow(request: Request, row: dict[str, Any]) -> None:
    store = context(request).store
    if await store.find(WORKFLOW, row["namespace"], row["workflow"]) is not None:
        await store.delete(WORKFLOW, row["namespace"], row["workflow"])
    await delete_run_artifacts(context(request).db, row["id"])
    await _kfp(request).delete("kfp_runs", row["id"])


@router.post("/runs/{run_id}:terminate")
async def terminate_run(request: Request, run_id: str, identity: IdentityDep) -> dict[str, Any]:
    row = await _owned_row(request, identity, "kfp_runs", run_id, "update")
    wf = await _runs(request).workflow(row)
    if wf is not None and run_state(wf, row["state"]) not in FINAL_STATES:
        await context(request).store.patch(
            WORKFLOW, row["namespace"], row["workflow"], {"spec": {"shutdown": "Terminate"}}
        )
    return {}


@router.post("/runs/{run_id}:retry")
async def retry_run(request: Request, run_id: str, identity: IdentityDep) -> dict[str, Any]:
    row = await _owned_row(request, identity, "kfp_runs", run_id, "update")
    wf = await _runs(request).workflow(row)
    if wf is None or run_state(wf, row["state"]) not in ("FAILED", "CANCELED"):
        raise ApiError(412, f"run {run_id} is not failed; only failed runs can be retried")
    await request_retry(context(request).store, wf)
    await _kfp(request).update("kfp_runs", run_id, state="RUNNING", finished_at=None)
    return {}


_add_owned_routes(
    "/runs",
    "kfp_runs",
    "run",
    archive={"storage_state": "ARCHIVED"},
    unarchive={"storage_state": "AVAILABLE"},
)


@router.get("/runs/{run_id}/nodes/{node_id}/artifacts/{artifact_name}:read")
async def read_run_artifact(
    request: Request, run_id: str, node_id: str, artifact_name: str, identity: IdentityDep
) -> dict[str, Any]:
    """The stored object of a node's output artifact, base64 in ``data``, as KFP's ReadArtifact
    (which returns the object as stored: a tar+gzip artifact comes back as its .tgz bytes).
    Bounded by MAX_READ: larger artifacts are for ``/artifact-files/...``, which streams."""
    row = await _owned_row(request, identity, "kfp_runs", run_id, "get")
    wf = await _runs(request).workflow(row)
    node = ((wf or {}).get("status") or {}).get("nodes", {}).get(node_id)
    if node is None:
        raise ApiError(404, f"node {node_id} not found in run {run_id}")
    art = next(
        (
            a
            for a in (node.get("outputs") or {}).get("artifacts") or []
            if a.get("name") == artifact_name
        ),
        None,
    )
    what = f"artifact {artifact_name} of node {node_id}"
    if art is None:
        raise ApiError(404, f"artifact {artifact_name} not found on node {node_id}")
    store = await context(request).objects()
    key = artifact_key(art, row["namespace"], store, what)
    try:
        info = await store.head(key)
        if info.size > MAX_READ:
            raise ApiError(
                413,
                f"{what} is {info.size} bytes; :read returns at most {MAX_READ} "
                f"(download it from /artifact-files/{row['namespace']}/workflows/"
                f"{row['workflow']}/{node_id}/outputs/{artifact_name})",
            )
        data = bytearray()
        async for chunk in store.get_stream(key):
            data += chunk
            if len(data) > MAX_READ:  # the object grew since head()
                raise ApiError(413, f"{what} is larger than {MAX_READ} bytes")
    except ObjectStoreError as exc:
        raise store_errors(exc, what) from None
    return {"data": base64.b64encode(bytes(data)).decode()}


# ------------------------------------------------------------- recurring runs
def _recurring(row: dict[str, Any]) -> dict[str, Any]:
    body = dict(row["body"])
    out = {
        "recurring_run_id": row["id"],
        "display_name": row["display_name"],
        "experiment_id": row["experiment_id"],
        "namespace": row["namespace"],
        "status": row["status"],
        "mode": "ENABLE" if row["status"] == "ENABLED" else "DISABLE",
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["created_at"]),
        "max_concurrency": str(body.get("max_concurrency") or 1),
        "no_catchup": bool(body.get("no_catchup")),
        "trigger": body.get("trigger") or {},
        "description": body.get("description") or "",
        "runtime_config": body.get("runtime_config") or {},
        "service_account": body.get("service_account") or "",
    }
    for key in ("pipeline_spec", "pipeline_version_reference"):
        if body.get(key):
            out[key] = body[key]
    return out


def check_trigger(trigger: dict[str, Any]) -> None:
    cron = (trigger or {}).get("cron_schedule") or (trigger or {}).get("cronSchedule")
    periodic = (trigger or {}).get("periodic_schedule") or (trigger or {}).get("periodicSchedule")
    if bool(cron) == bool(periodic):
        raise ApiError(
            400,
            "trigger needs exactly one of cron_schedule or periodic_schedule",
            causes=[Cause("trigger", "exactly one of cron_schedule, periodic_schedule")],
        )
    if cron:
        try:
            parse_schedule(cron.get("cron") or "", with_seconds=True).next_fire(datetime.now(UTC))
        except ValueError as exc:
            raise ApiError(
                400,
                f"invalid cron {cron.get('cron')!r}: {exc}",
                causes=[Cause("trigger.cron_schedule.cron", str(exc))],
            ) from None
    else:
        periodic = periodic or {}
        interval = periodic.get("interval_second") or periodic.get("intervalSecond")
        if not str(interval or "").isdigit() or int(str(interval)) <= 0:
            raise ApiError(
                400,
                "periodic_schedule.interval_second must be a positive integer",
                causes=[Cause("trigger.periodic_schedule.interval_second", "must be > 0")],
            )


@router.post("/recurringruns")
async def create_recurring_run(request: Request, identity: IdentityDep) -> dict[str, Any]:
    body = await _json(request)
    ns = _namespace(request, identity, body.get("namespace"))
    if body.get("experiment_id"):
        ns = (await _kfp(request).get("kfp_experiments", body["experiment_id"], "experiment"))[
            "namespace"
        ]
    authorize(identity, "create", ns, "recurringruns")
    check_trigger(body.get("trigger") or {})
    concurrency = int(body.get("max_concurrency") or 1)
    if not 1 <= concurrency <= 10:
        raise ApiError(
            400,
            "max_concurrency must be between 1 and 10",
            causes=[Cause("max_concurrency", "must be 1-10")],
        )
    package = await _runs(request).package_for(body, ns)
    await _check_package(request, ns, package)
    experiment_id = body.get("experiment_id") or await _runs(request).default_experiment(ns)
    stored = {
        k: body[k]
        for k in (
            *RUN_SOURCE_FIELDS,
            "trigger",
            "no_catchup",
            "description",
        )
        if body.get(k) is not None
    }
    stored["max_concurrency"] = concurrency
    mode = body.get("mode") or "ENABLE"
    row = {
        "id": new_id(),
        "namespace": ns,
        "experiment_id": experiment_id,
        "display_name": body.get("display_name") or "recurring-run",
        "status": "DISABLED" if mode == "DISABLE" else "ENABLED",
        "body": stored,
        "last_fire": None,
        "fires": 0,
        "created_at": datetime.now(UTC),
    }
    await _kfp(request).insert("kfp_recurring_runs", **row)
    return _recurring(row)


@router.get("/recurringruns")
async def list_recurring_runs(request: Request, identity: IdentityDep) -> dict[str, Any]:
    q = request.query_params
    ns = _namespace(request, identity)
    authorize(identity, "list", ns, "recurringruns")
    rows = await _kfp(request).rows(
        "kfp_recurring_runs", namespace=ns, experiment_id=q.get("experiment_id") or None
    )
    out = _listing([_recurring(r) for r in rows], request, "recurringRuns", "recurring_run_id")
    return out


_add_owned_routes(
    "/recurringruns",
    "kfp_recurring_runs",
    "recurring_run",
    _recurring,
    plain_delete=True,
    enable={"status": "ENABLED"},
    disable={"status": "DISABLED"},
)
