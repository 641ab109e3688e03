"""Kubernetes API discovery, so ``kubectl`` (and any client-go tool) can talk to shipyard.

kubectl learns what a server serves before it sends a request: ``/version``, then either the
aggregated document (``/api`` and ``/apis`` answered as ``apidiscovery.k8s.io/v2``
``APIGroupDiscoveryList`` when the client asks for it, one request each) or the legacy walk
(``/api`` -> APIVersions, ``/apis`` -> APIGroupList, then one ``APIResourceList`` per
``/api/v1`` and ``/apis/{group}/{version}``). Both are answered here, from the kinds catalog
(``services.common.catalog``): the answer is the same for every caller and names no object,
so any signed-in user may read it, in every auth mode, as on a Kubernetes API server
(the ``system:discovery`` role).
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.common import catalog
from services.common.catalog import KindInfo

from .deps import PrincipalDep
from .errors import GatewayError

router = APIRouter(tags=["discovery"])

#: The Kubernetes release whose API conventions the platform follows (kubectl's skew policy
#: is one minor version either way: Debian's kubectl 1.32 is the one tested).
KUBE_MAJOR, KUBE_MINOR = "1", "32"
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

# Beyond the catalog: TokenRequest, the gateway's own (``POST .../serviceaccounts/{n}/token``).
_TOKEN_REQUEST = {
    "name": "serviceaccounts/token",
    "singularName": "",
    "namespaced": True,
    "group": "authentication.k8s.io",
    "version": "v1",
    "kind": "TokenRequest",
    "verbs": ["create"],
}


def version_info() -> dict[str, str]:
    """``/version``: a ``version.Info`` (k8s.io/apimachinery/pkg/version)."""
    try:
        release = metadata.version("shipyard")
    except metadata.PackageNotFoundError:
        release = "0.0.0"
    return {
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": f"v{KUBE_MAJOR}.{KUBE_MINOR}.0-shipyard",
        "gitCommit": f"shipyard-{release}",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _kinds(group: str, version: str) -> list[KindInfo]:
    return [k for k in catalog.ALL_KINDS if k.group == group and k.version == version]


def _storage_hash(kind: KindInfo) -> str:
    """A stable digest per kind, as the API server's storageVersionHash (opaque to clients)."""
    digest = hashlib.sha256(f"{kind.group}/{kind.version}/{kind.kind}".encode()).digest()
    return digest[:8].hex()


def api_resources(group: str, version: str) -> list[dict[str, Any]]:
    """The ``resources`` of an APIResourceList: each kind, then its ``/status``."""
    resources: list[dict[str, Any]] = []
    for k in _kinds(group, version):
        entry: dict[str, Any] = {
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": list(k.verbs),
            "storageVersionHash": _storage_hash(k),
        }
        if k.short_names:
            entry["shortNames"] = list(k.short_names)
        if k.categories:
            entry["categories"] = list(k.categories)
        resources.append(entry)
        if k.status:
            resources.append(
                {
                    "name": f"{k.plural}/status",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": list(catalog.STATUS_VERBS),
                }
            )
        if group == "" and k.plural == "serviceaccounts":
            resources.append(dict(_TOKEN_REQUEST))
    return resources


def resource_list(group: str, version: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": api_resources(group, version),
    }


def _group_entry(name: str, versions: list[str]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def api_groups() -> list[dict[str, Any]]:
    return [_group_entry(g, vs) for g, vs in catalog.group_versions().items() if g]


def _server_address(request: Request) -> list[dict[str, str]]:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]


# ---- aggregated discovery (apidiscovery.k8s.io/v2) ---------------------------------------------


def _discovery_resource(k: KindInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": k.plural,
        "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
        "scope": "Namespaced" if k.namespaced else "Cluster",
        "singularResource": k.singular,
        "verbs": list(k.verbs),
    }
    if k.short_names:
        entry["shortNames"] = list(k.short_names)
    if k.categories:
        entry["categories"] = list(k.categories)
    subresources: list[dict[str, Any]] = []
    if k.status:
        subresources.append(
            {
                "subresource": "status",
                "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                "verbs": list(catalog.STATUS_VERBS),
            }
        )
    if k.group == "" and k.plural == "serviceaccounts":
        subresources.append(
            {
                "subresource": "token",
                "responseKind": {
                    "group": "authentication.k8s.io",
                    "version": "v1",
                    "kind": "TokenRequest",
                },
                "verbs": ["create"],
            }
        )
    if subresources:
        entry["subresources"] = subresources
    return entry


def aggregated(core: bool) -> dict[str, Any]:
    """The ``APIGroupDiscoveryList`` of ``/api`` (core) or ``/apis`` (every named group)."""
    items = []
    for group, versions in catalog.group_versions().items():
        if (group == "") != core:
            continue
        items.append(
            {
                "metadata": {"name": group} if group else {},
                "versions": [
                    {
                        "version": v,
                        "resources": [_discovery_resource(k) for k in _kinds(group, v)],
                        "freshness": "Current",
                    }
                    for v in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def wants_aggregated(request: Request) -> bool:
    """Whether the Accept header asks for ``apidiscovery.k8s.io/v2`` before plain JSON."""
    for part in request.headers.get("accept", "").split(","):
        params = {
            key.strip().lower(): value.strip()
            for key, _, value in (p.partition("=") for p in part.split(";")[1:])
        }
        if params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2":
            return params.get("as") == "APIGroupDiscoveryList"
        if part.split(";")[0].strip() in ("application/json", "*/*"):
            return False
    return False


def _aggregated_response(core: bool) -> JSONResponse:
    return JSONResponse(aggregated(core), media_type=AGGREGATED_V2, headers={"Vary": "Accept"})


# ---- routes ------------------------------------------------------------------------------------


@router.get("/version")
async def read_version(_p: PrincipalDep) -> dict[str, str]:
    return version_info()


@router.get("/api")
async def read_core_versions(request: Request, _p: PrincipalDep) -> Any:
    if wants_aggregated(request):
        return _aggregated_response(core=True)
    return {
        "kind": "APIVersions",
        "versions": catalog.group_versions()[""],
        "serverAddressByClientCIDRs": _server_address(request),
    }


@router.get("/apis")
async def read_api_groups(request: Request, _p: PrincipalDep) -> Any:
    if wants_aggregated(request):
        return _aggregated_response(core=False)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": api_groups()}


@router.get("/api/{version}")
async def read_core_resources(version: str, _p: PrincipalDep) -> dict[str, Any]:
    if version not in catalog.group_versions()[""]:
        raise GatewayError(404, f"the server could not find the requested resource (api/{version})")
    return resource_list("", version)


@router.get("/apis/{group}")
async def read_api_group(group: str, _p: PrincipalDep) -> dict[str, Any]:
    versions = catalog.group_versions().get(group) if group else None
    if not versions:
        raise GatewayError(404, f"the server could not find the requested resource ({group})")
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


@router.get("/apis/{group}/{version}")
async def read_group_resources(group: str, version: str, _p: PrincipalDep) -> dict[str, Any]:
    if not group or version not in (catalog.group_versions().get(group) or ()):
        raise GatewayError(
            404, f"the server could not find the requested resource ({group}/{version})"
        )
    return resource_list(group, version)
