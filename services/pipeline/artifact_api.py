"""Artifact download: KFP's v2beta1 artifact API and the Argo Server's artifact endpoints.

* ``GET /apis/v2beta1/artifacts`` and ``GET /apis/v2beta1/artifacts/{id}`` answer as KFP's
  ``ArtifactService`` (backend/api/v2beta1/artifacts.proto): artifacts are the records
  ``artifact_records`` keeps, listed per namespace with page tokens, and ``view=DOWNLOAD``
  adds a presigned, time-limited ``download_url`` (``SHIPYARD_ARTIFACT_URL_EXPIRY_SECONDS``,
  15 s by default as KFP's).
* ``/artifact-files/{ns}/workflows/{name}/{node}/{inputs|outputs}/{artifact}[/{file}]``,
  ``/artifacts/{ns}/{name}/{node}/{artifact}`` and ``/input-artifacts/...`` answer as the
  Argo Server's artifact server (server/artifacts/artifact_server.go): the stored object is
  streamed as it is (a tar+gzip artifact comes back as its ``.tgz``, as Argo's S3 driver
  opens it; Argo unpacks nothing on download), with ``Content-Disposition: filename=...``,
  a content type from the key's extension and Argo's sandboxing CSP. An ``archive: none``
  directory (a prefix of objects) answers with a redirect to ``.../`` and an HTML listing,
  and its files by path.

Bytes are never held whole: a download streams from the store chunk by chunk. Every key a
response reads must lie in the namespace's own areas of the bucket (``in_namespace_area``):
a Workflow's status is tenant-influenced (an output's ``s3.key``), and must not become a
way to read another namespace's objects.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import posixpath
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from services.common.app import context
from services.common.auth import IdentityDep, authorize
from services.common.errors import ApiError, Cause
from services.common.objectstore import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    StoreUnreachable,
    in_namespace_area,
    parse_s3_uri,
)
from services.common.settings import SINGLE_USER_NAMESPACE
from services.pipeline import artifact_records
from services.pipeline.kfp_store import rfc3339
from services.pipeline.models import WORKFLOW

router = APIRouter()

KFP_PREFIX = "/apis/v2beta1"
DEFAULT_PAGE_SIZE = 20  # KFP's artifact server: default 20, at most 100
MAX_PAGE_SIZE = 100
DEFAULT_URL_EXPIRY = 15  # seconds; KFP's default signed-URL lifetime
MAX_LISTING = 1000  # entries of a directory listing
#: Argo's artifact server's headers for anything it renders (strict CSP, no framing).
ARGO_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "sandbox; base-uri 'none'; default-src 'none'; img-src 'self'; "
        "style-src 'self' 'unsafe-inline'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
}


def store_errors(exc: ObjectStoreError, what: str) -> ApiError:
    """An object-store failure as an API error that names the artifact, not the store's keys."""
    if isinstance(exc, ObjectNotFound):
        return ApiError(404, f"{what} has no stored object")
    if isinstance(exc, StoreUnreachable):
        return ApiError(503, f"the object store is unreachable; {what} cannot be read now")
    return ApiError(502, f"the object store failed to serve {what}: {exc}")


# ------------------------------------------------------------------- KFP API
def _kfp_artifact(row: dict[str, Any]) -> dict[str, Any]:
    """A record as KFP's ``Artifact`` message (int64 as a string, as grpc-gateway writes)."""
    uri = row["uri"]
    provider, _, rest = uri.partition("://")
    out: dict[str, Any] = {
        "artifact_id": str(row["id"]),
        "name": row["name"],
        "storage_provider": provider if rest else "",
        "storage_path": rest.partition("/")[2] if rest else "",
        "uri": uri,
        "namespace": row["namespace"],
        "artifact_type": row["artifact_type"],
        "created_at": rfc3339(row["created_at"]),
        "last_updated_at": rfc3339(row["updated_at"]),
        "metadata": row["properties"] or {},
    }
    if row["size"] is not None:
        out["artifact_size"] = str(row["size"])
    return out


def _list_namespace(request: Request, identity: Any) -> str:
    """The namespace a listing is for: the query's, else the caller's own (as the other KFP
    list endpoints), never "every namespace"."""
    ns = (
        request.query_params.get("namespace")
        or identity.namespace
        or (None if identity.cluster_admin else SINGLE_USER_NAMESPACE)
    )
    if not ns:
        raise ApiError(
            400,
            "namespace is required to list artifacts",
            causes=[Cause("namespace", "Required value")],
        )
    return str(ns)


def _int_param(request: Request, *names: str) -> int | None:
    for name in names:
        raw = request.query_params.get(name)
        if raw:
            if not raw.lstrip("-").isdigit():
                raise ApiError(400, f"{name} must be an integer", causes=[Cause(name, "integer")])
            return int(raw)
    return None


def _offset(token: str | None) -> int:
    """Page tokens are the listing's offset, as the other KFP lists' (``kfp_store.paginate``)."""
    if not token:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError:
        offset = -1
    if offset < 0:
        raise ApiError(
            400,
            "invalid page_token",
            causes=[Cause("page_token", "not a token this server issued")],
        )
    return offset


def _token(offset: int | None) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode() if offset is not None else ""


def _sort(request: Request) -> tuple[str, bool]:
    """``sort_by=field [asc|desc]`` (v2beta1 lists) or ``order_by_field`` + ``order_by``."""
    q = request.query_params
    field, _, direction = (q.get("sort_by") or q.get("sortBy") or "").partition(" ")
    field = field or q.get("order_by_field") or "id"
    direction = direction.strip() or q.get("order_by") or "asc"
    if field not in artifact_records.SORT_FIELDS and field != "FIELD_UNSPECIFIED":
        raise ApiError(
            400,
            f"cannot sort artifacts by {field!r}",
            causes=[Cause("sort_by", "one of id, created_at, last_updated_at")],
        )
    return field, direction.lower() == "desc"


@router.get(f"{KFP_PREFIX}/artifacts")
async def list_artifacts(request: Request, identity: IdentityDep) -> dict[str, Any]:
    """KFP's ListArtifacts: one namespace's artifacts, ``page_size`` at a time."""
    ns = _list_namespace(request, identity)
    authorize(identity, "list", ns, "artifacts")
    size = _int_param(request, "page_size", "pageSize", "max_result_size") or DEFAULT_PAGE_SIZE
    size = min(max(size, 1), MAX_PAGE_SIZE)
    q = request.query_params
    offset = _offset(q.get("page_token") or q.get("pageToken") or q.get("next_page_token"))
    field, descending = _sort(request)
    page = await artifact_records.list_artifacts(
        context(request).db,
        ns,
        offset=offset,
        limit=size,
        sort_field=field,
        descending=descending,
    )
    out: dict[str, Any] = {
        "artifacts": [_kfp_artifact(r) for r in page.rows],
        "total_size": page.total,
    }
    if page.next_offset is not None:
        out["next_page_token"] = _token(page.next_offset)
    return out


@router.get(f"{KFP_PREFIX}/artifacts/{{artifact_id}}")
async def read_artifact(
    request: Request, artifact_id: str, identity: IdentityDep
) -> dict[str, Any]:
    """KFP's GetArtifact; ``view=DOWNLOAD`` adds a presigned ``download_url``."""
    ctx = context(request)
    row = await artifact_records.read_artifact(ctx.db, artifact_id)
    if row is None:
        raise ApiError(404, f"artifact {artifact_id} not found")
    authorize(identity, "get", row["namespace"], "artifacts")
    out = _kfp_artifact(row)
    view = (request.query_params.get("view") or "BASIC").upper()
    if view not in ("BASIC", "DOWNLOAD", "ARTIFACT_VIEW_UNSPECIFIED", "0", "1", "2"):
        raise ApiError(400, f"unknown view {view!r}", causes=[Cause("view", "BASIC or DOWNLOAD")])
    if view in ("DOWNLOAD", "2"):
        out["download_url"] = await _download_url(request, row)
    return out


async def _download_url(request: Request, row: dict[str, Any]) -> str:
    ctx = context(request)
    what = f"artifact {row['id']}"
    store = await ctx.objects()
    try:
        bucket, key = parse_s3_uri(row["uri"])
    except ValueError:
        raise ApiError(404, f"{what} ({row['uri']}) is not in the object store") from None
    if bucket != store.bucket or not in_namespace_area(row["namespace"], key):
        raise ApiError(
            404, f"{what} ({row['uri']}) is outside namespace {row['namespace']}'s storage"
        )
    try:
        await store.head(key)
    except ObjectNotFound:
        # A directory artifact is a prefix of objects, which no single URL downloads.
        raise ApiError(
            404,
            f"{what} ({row['uri']}) is not a single object (a directory artifact?): "
            "download its files one by one",
        ) from None
    except ObjectStoreError as exc:
        raise store_errors(exc, what) from None
    expiry = int(getattr(ctx.settings, "artifact_url_expiry_seconds", DEFAULT_URL_EXPIRY))
    return await store.presigned_get_url(key, expires_in=expiry)


# ------------------------------------------------------------------ Argo API
def artifact_key(art: dict[str, Any], namespace: str, store: ObjectStore, what: str) -> str:
    """The object key of a Workflow artifact (its ``s3`` location), if the namespace may read it."""
    s3 = art.get("s3") or {}
    key = str(s3.get("key") or "")
    if not key:
        raise ApiError(404, f"{what} is not stored in the object store")
    bucket = s3.get("bucket")
    endpoint = s3.get("endpoint")
    if (bucket and bucket != store.bucket) or (
        endpoint and endpoint.rstrip("/") != store.config.endpoint.rstrip("/")
    ):
        raise ApiError(404, f"{what} is stored outside the platform's object store")
    if not in_namespace_area(namespace, key):
        raise ApiError(404, f"{what} is stored outside namespace {namespace}'s storage")
    return key


async def _workflow_artifact(
    request: Request, namespace: str, name: str, node_id: str, direction: str, artifact: str
) -> dict[str, Any]:
    wf = await context(request).store.get(WORKFLOW, namespace, name)
    node = ((wf.get("status") or {}).get("nodes") or {}).get(node_id)
    if node is None:
        raise ApiError(404, f'node "{node_id}" not found in workflow "{name}"')
    for art in (node.get(direction) or {}).get("artifacts") or []:
        if art.get("name") == artifact:
            return dict(art)
    raise ApiError(404, f'artifact "{artifact}" not found in {direction} of node "{node_id}"')


def _content_type(key: str) -> str:
    base = posixpath.basename(key)
    if base.endswith((".tgz", ".gz")):
        return "application/gzip"  # never Content-Encoding: the client gets the archive
    guessed, encoding = mimetypes.guess_type(base)
    if encoding or not guessed:
        return "application/octet-stream"
    return guessed + ("; charset=utf-8" if guessed.startswith("text/") else "")


def _disposition(key: str) -> str:
    # Argo sends filename="<base of key>"; a quote or control character in a key must not
    # break the header, and RFC 6266's filename* carries any other name.
    base = posixpath.basename(key) or "artifact"
    safe = "".join(c if c.isprintable() and c not in '"\\' else "_" for c in base)
    return f"filename=\"{safe}\"; filename*=UTF-8''{quote(base)}"


#: Bigger pieces cost fewer event-loop turns per byte (1 MiB: ~150 MiB/s, 4 MiB: ~190 on the
#: bench machine); a download holds about one piece at a time.
STREAM_CHUNK = 4 * 1024 * 1024


async def _stream(store: ObjectStore, key: str, what: str) -> AsyncIterator[bytes]:
    chunks = store.get_stream(key, chunk_size=STREAM_CHUNK)
    try:
        async for chunk in chunks:
            yield chunk
    except ObjectStoreError as exc:  # headers are out: all we can do is end the body short
        raise RuntimeError(f"{what}: the object store broke off the download: {exc}") from exc
    finally:  # a client that leaves mid-download closes the store's response too
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()


async def _serve_object(store: ObjectStore, info: ObjectInfo, what: str) -> StreamingResponse:
    headers = {
        "Content-Disposition": _disposition(info.key),
        "Content-Length": str(info.size),
        **ARGO_SECURITY_HEADERS,
    }
    return StreamingResponse(
        _stream(store, info.key, what), media_type=_content_type(info.key), headers=headers
    )


async def _listing(store: ObjectStore, prefix: str, what: str) -> list[str]:
    """Up to MAX_LISTING object names under ``prefix/``, relative to it."""
    names: list[str] = []
    try:
        async for info in store.list(prefix + "/"):
            names.append(info.key[len(prefix) + 1 :])
            if len(names) >= MAX_LISTING:
                break
    except ObjectStoreError as exc:
        raise store_errors(exc, what) from None
    return names


def _render_listing(names: list[str]) -> str:
    """Argo's directory page: files at this level, and each sub-directory once."""
    entries: list[str] = []
    for name in names:
        head, sep, _ = name.partition("/")
        entry = head + sep
        if entry not in entries:
            entries.append(entry)
    items = "".join(f'<li><a href="./{quote(e)}">{html.escape(e)}</a></li>\n' for e in entries)
    return f'<html><body><ul>\n<li><a href="..">..</a></li>\n{items}</ul></body></html>'


async def _serve_artifact(
    request: Request,
    namespace: str,
    art: dict[str, Any],
    what: str,
    file_path: str | None = None,
    directory_ok: bool = False,
) -> Response:
    if "raw" in art and not art.get("s3"):  # Argo's raw artifacts carry their data inline
        data = str((art.get("raw") or {}).get("data") or "").encode()
        return Response(
            data,
            media_type="text/plain; charset=utf-8",
            headers={
                "Content-Disposition": _disposition(art.get("name") or "raw"),
                **ARGO_SECURITY_HEADERS,
            },
        )
    store = await context(request).objects()
    key = artifact_key(art, namespace, store, what)
    want_dir = file_path is not None and (file_path == "" or file_path.endswith("/"))
    if file_path:
        key = f"{key}/{file_path.rstrip('/')}"
        if not in_namespace_area(namespace, key):
            raise ApiError(400, f"{what}: invalid file path {file_path!r}")
    if not want_dir:
        try:
            info = await store.head(key)
        except ObjectNotFound:
            info = None
        except ObjectStoreError as exc:
            raise store_errors(exc, what) from None
        if info is not None:
            return await _serve_object(store, info, what)
    names = await _listing(store, key, what) if directory_ok else []
    if not names:
        raise ApiError(404, f"{what} has no stored object")
    if not want_dir:  # a directory asked for without its slash: Argo redirects to it
        # Relative, so the redirect holds behind any proxy that moves the path.
        return RedirectResponse(posixpath.basename(request.url.path) + "/", status_code=307)
    if "index.html" in names:
        return RedirectResponse("index.html", status_code=307)
    return HTMLResponse(_render_listing(names), headers=ARGO_SECURITY_HEADERS)


async def _argo_download(
    request: Request,
    identity: Any,
    where: tuple[str, str, str],
    direction: str,
    artifact: str,
    file_path: str | None = None,
    directory_ok: bool = True,
) -> Response:
    namespace, name, node_id = where
    authorize(identity, "get", namespace, "workflows")
    if direction not in ("inputs", "outputs"):
        raise ApiError(400, f"{direction!r}: a node's artifacts are its inputs or outputs")
    art = await _workflow_artifact(request, namespace, name, node_id, direction, artifact)
    what = f'artifact "{artifact}" of node "{node_id}" in workflow "{name}"'
    return await _serve_artifact(request, namespace, art, what, file_path, directory_ok)


@router.get("/artifact-files/{namespace}/workflows/{name}/{node_id}/{direction}/{artifact}")
async def read_artifact_file(
    request: Request,
    namespace: str,
    name: str,
    node_id: str,
    direction: str,
    artifact: str,
    identity: IdentityDep,
) -> Response:
    """Argo's ``GetArtifactFile``: the artifact's object (a directory: a redirect to it)."""
    return await _argo_download(request, identity, (namespace, name, node_id), direction, artifact)


@router.get(
    "/artifact-files/{namespace}/workflows/{name}/{node_id}/{direction}/{artifact}/{file_path:path}"
)
async def read_artifact_file_path(
    request: Request,
    namespace: str,
    name: str,
    node_id: str,
    direction: str,
    artifact: str,
    file_path: str,
    identity: IdentityDep,
) -> Response:
    """A file inside a directory artifact, or (path ending in ``/``) a directory's listing."""
    return await _argo_download(
        request, identity, (namespace, name, node_id), direction, artifact, file_path
    )


def _node_artifact_route(direction: str) -> Any:
    async def handler(
        request: Request,
        namespace: str,
        name: str,
        node_id: str,
        artifact: str,
        identity: IdentityDep,
    ) -> Response:
        return await _argo_download(
            request, identity, (namespace, name, node_id), direction, artifact, directory_ok=False
        )

    return handler


# Argo's ``GetOutputArtifact`` and ``GetInputArtifact``: the artifact's stored object.
for _prefix, _direction, _which in (
    ("artifacts", "outputs", "output"),
    ("input-artifacts", "inputs", "input"),
):
    _handler = _node_artifact_route(_direction)
    _handler.__name__ = f"read_{_which}_artifact"
    _handler.__doc__ = (
        f"Argo's ``Get{_which.title()}Artifact``: the {_which} artifact's stored object."
    )
    router.add_api_route(
        f"/{_prefix}/{{namespace}}/{{name}}/{{node_id}}/{{artifact}}", _handler, methods=["GET"]
    )
