"""``/openapi/v3``: the Kubernetes OpenAPI v3 documents, for ``kubectl explain`` and
``kubectl apply`` (its server-side field validation and strategic merge patches).

A group-version's document is merged from the services that serve its kinds: each service
publishes the documents of its own kinds on ``/internal/v1/openapi/v3`` (built by
``services.common.resources.openapi`` from its ResourceKinds and spec models); core/v1 alone
spans three services. The gateway adds its own kind (Profile) and the aliases the catalog
lists (KFServing's ``serving.kubeflow.org``, the same InferenceServices), and keeps the
result: the documents change only when a service is upgraded, so they are fetched again
after :data:`REFRESH_SECONDS`, or sooner if a service did not answer.

As on a Kubernetes API server, ``/openapi/v3`` lists each group-version with a
``serverRelativeURL`` that carries the document's hash (clients cache by it), and any
signed-in user may read the documents: they describe the API, not any object.
``/openapi/v2`` is the same documents as one Swagger 2.0 document, in JSON only: kubectl 1.32
reads v3 and asks for v2 only in protobuf (it is answered 406 and goes on without), but other
clients and validators read the JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from services.common import catalog
from services.common.identity import ASSERTION_HEADER, Identity
from services.common.resources.kinds import ResourceKind
from services.common.resources.openapi import (
    INTERNAL_PATH,
    document,
    gv_key,
    merge_documents,
    schema_prefix,
)

from .deps import GatewayDep, PrincipalDep
from .errors import GatewayError

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger(__name__)

router = APIRouter(tags=["openapi"])

REFRESH_SECONDS = 300.0
RETRY_SECONDS = 5.0
FETCH_TIMEOUT = 5.0


class ProfileOwner(BaseModel):
    """The profile's owner, who administers its namespace."""

    kind: str = Field("User", description="User (or Group).")
    name: str = Field(description="The owner's user name (email).")


class ProfileSpec(BaseModel):
    """A Kubeflow Profile: a namespace of the same name, owned by one user."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    owner: ProfileOwner
    resource_quota_spec: dict[str, Any] | None = Field(
        None,
        alias="resourceQuotaSpec",
        description="A ResourceQuotaSpec for the namespace (hard limits): its ResourceQuota "
        "kf-resource-quota, enforced on every runtime; only a cluster admin may change it.",
    )
    plugins: list[dict[str, Any]] | None = Field(
        None, description="Kubeflow profile plugins (accepted, not acted on)."
    )


def profile_kind() -> ResourceKind:
    """The gateway's own kind, as a ResourceKind for the schema builder."""
    info = catalog.PROFILE
    return ResourceKind(**info.resource_kind_fields(), spec_model=ProfileSpec)


def alias_document(original: dict[str, Any], alias: catalog.KindInfo) -> dict[str, Any]:
    """``original`` (the aliased kind's group-version document) under the alias's group."""
    assert alias.alias_of is not None
    source, target = alias.alias_of, alias
    text = json.dumps(original)
    for old, new in (
        (source.api_version, target.api_version),  # paths and descriptions
        (
            schema_prefix(source.group, source.version) + ".",
            schema_prefix(target.group, target.version) + ".",
        ),
        (f'"group": "{source.group}"', f'"group": "{target.group}"'),
        (f'"tags": ["{source.group}"]', f'"tags": ["{target.group}"]'),
    ):
        text = text.replace(old, new)
    return json.loads(text)  # type: ignore[no-any-return]


_GV_KEY = re.compile(r"^(api/v1|apis/[a-z0-9.-]+/v[a-z0-9]+)$")


def _is_document(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("paths"), dict) and isinstance(
        (doc.get("components") or {}).get("schemas"), dict
    )


def _hash(doc: dict[str, Any]) -> str:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha512(canonical).hexdigest()[:128].upper()


class OpenApiDocuments:
    """The merged documents by group-version key (``api/v1``, ``apis/{g}/{v}``), cached."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.documents: dict[str, dict[str, Any]] = {}
        self.hashes: dict[str, str] = {}
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> dict[str, dict[str, Any]]:
        async with self._lock:
            if time.monotonic() >= self._expires:
                complete = await self._refresh()
                self._expires = time.monotonic() + (REFRESH_SECONDS if complete else RETRY_SECONDS)
        return self.documents

    async def _fetch(self, service: str, base: str) -> dict[str, Any] | None:
        admin = self.gw.signer.sign(
            Identity(user="system:gateway", role="admin", cluster_admin=True)
        )
        try:
            resp = await self.gw.http.get(
                base + INTERNAL_PATH, headers={ASSERTION_HEADER: admin}, timeout=FETCH_TIMEOUT
            )
            if resp.status_code == 200:
                return resp.json()  # type: ignore[no-any-return]
            log.warning("openapi: %s answered %s", service, resp.status_code)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("openapi: %s not reachable (%s)", service, exc.__class__.__name__)
        return None

    async def _refresh(self) -> bool:
        """Fetch every service's documents and merge them; False if one did not answer (the
        documents of the services that did are served meanwhile)."""
        urls = self.gw.settings.service_urls
        names = sorted(urls)
        answers = await asyncio.gather(*(self._fetch(n, urls[n]) for n in names))
        parts: dict[str, list[dict[str, Any]]] = {}
        for name, answer in zip(names, answers, strict=True):
            for key, doc in (answer if isinstance(answer, dict) else {}).items():
                if _GV_KEY.match(key) and isinstance(doc, dict) and _is_document(doc):
                    parts.setdefault(key, []).append(doc)
                else:
                    log.warning("openapi: %s sent %r, not a group-version's document", name, key)
        profile = profile_kind()
        parts.setdefault(gv_key(profile.group, profile.version), []).append(document([profile]))
        merged = {key: merge_documents(docs) for key, docs in parts.items()}
        for alias in (k for k in catalog.ALL_KINDS if k.alias_of is not None):
            source = merged.get(gv_key(alias.alias_of.group, alias.alias_of.version))  # type: ignore[union-attr]
            if source is not None:
                key = gv_key(alias.group, alias.version)
                merged[key] = merge_documents(
                    [*([merged[key]] if key in merged else []), alias_document(source, alias)]
                )
        if merged or not self.documents:
            self.documents = dict(sorted(merged.items()))
            self.hashes = {key: _hash(doc) for key, doc in self.documents.items()}
        return all(a is not None for a in answers)


def _v2_parameter(param: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3 path or query parameter in Swagger 2.0's form (its type inline)."""
    out = {k: v for k, v in param.items() if k != "schema"}
    out.update(param.get("schema") or {"type": "string"})
    return out


def _v2_operation(op: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in op.items() if k not in ("parameters", "requestBody", "responses")}
    params = [_v2_parameter(p) for p in op.get("parameters") or []]
    content = (op.get("requestBody") or {}).get("content") or {}
    if content:
        out["consumes"] = list(content)
        body = content.get("application/json") or {"schema": {"type": "object"}}
        params.append({"name": "body", "in": "body", "required": True, "schema": body["schema"]})
    out["parameters"] = params
    out["produces"] = ["application/json"]
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    out["responses"] = {
        "200": {"description": "OK", "schema": ok},
        "401": {"description": "Unauthorized"},
    }
    return out


def swagger_v2(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every group-version's document as one Swagger 2.0 document (``/openapi/v2``)."""
    paths: dict[str, Any] = {}
    definitions: dict[str, Any] = {}
    for doc in documents.values():
        definitions.update(doc["components"]["schemas"])
        for path, item in doc["paths"].items():
            entry: dict[str, Any] = {
                method: _v2_operation(op)
                for method, op in item.items()
                if method in ("get", "put", "post", "patch", "delete")
            }
            if item.get("parameters"):
                entry["parameters"] = [_v2_parameter(p) for p in item["parameters"]]
            paths[path] = entry
    v2 = {
        "swagger": "2.0",
        "info": {"title": "shipyard", "version": "v1.32.0-shipyard"},
        "paths": dict(sorted(paths.items())),
        "definitions": dict(sorted(definitions.items())),
    }
    return json.loads(json.dumps(v2).replace('"#/components/schemas/', '"#/definitions/'))  # type: ignore[no-any-return]


def documents_of(request: Request, gw: Gateway) -> OpenApiDocuments:
    cache = getattr(request.app.state, "openapi_documents", None)
    if cache is None:
        cache = request.app.state.openapi_documents = OpenApiDocuments(gw)
    return cache  # type: ignore[no-any-return]


@router.get("/openapi/v3")
async def read_openapi_v3_root(
    request: Request, gw: GatewayDep, _principal: PrincipalDep
) -> dict[str, Any]:
    """The group-versions, each with the URL of its document (``?hash=`` for caches)."""
    cache = documents_of(request, gw)
    await cache.current()
    return {
        "paths": {
            key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={cache.hashes[key]}"}
            for key in cache.documents
        }
    }


@router.get("/openapi/v3/{path:path}")
async def read_openapi_v3_document(
    path: str, request: Request, gw: GatewayDep, _principal: PrincipalDep
) -> Response:
    """One group-version's OpenAPI 3.0 document."""
    cache = documents_of(request, gw)
    documents = await cache.current()
    key = path.strip("/")
    if key not in documents:
        raise GatewayError(
            404,
            f'the group-version "{key}" has no OpenAPI document; see /openapi/v3 for the '
            "ones served",
            "NotFound",
        )
    digest = cache.hashes[key]
    pinned = request.query_params.get("hash") == digest
    headers = {
        "ETag": f'"{digest}"',
        # As the API server: a URL with the current hash never changes; one without may.
        "Cache-Control": "public, immutable, max-age=31536000" if pinned else "no-cache",
    }
    body = json.dumps(documents[key], separators=(",", ":"))
    return Response(body, media_type="application/json", headers=headers)


@router.get("/openapi/v2")
async def read_openapi_v2(request: Request, gw: GatewayDep, _principal: PrincipalDep) -> Response:
    """Swagger 2.0, JSON only: a client that accepts only protobuf (kubectl) gets 406."""
    accept = request.headers.get("accept") or "*/*"
    if not any(t in accept for t in ("application/json", "*/*", "application/*")):
        raise GatewayError(
            406,
            "the OpenAPI v2 document is served as application/json only; "
            "OpenAPI v3 is at /openapi/v3",
            "NotAcceptable",
        )
    cache = documents_of(request, gw)
    documents = await cache.current()
    body = json.dumps(swagger_v2(documents), separators=(",", ":"))
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-cache"})
