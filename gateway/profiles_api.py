"""``/apis/kubeflow.org/v1/profiles``: the Profile resource (cluster-scoped)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.common.errors import ApiError
from services.common.resources import printing, writes
from services.common.resources.patch import merge_patch

from .deps import GatewayDep, PrincipalDep
from .errors import GatewayError
from .openapi import profile_kind
from .profiles import quota_of
from .registration import register, sheds_quota

router = APIRouter(prefix="/apis/kubeflow.org/v1/profiles")


def _forbid(user: str, verb: str, name: str, why: str = "") -> GatewayError:
    return GatewayError(
        403,
        f'User "{user}" cannot {verb} profiles.kubeflow.org "{name}"' + (f": {why}" if why else ""),
        "Forbidden",
        {"user": user, "verb": verb, "name": name, "kind": "profiles"},
    )


def _as_table(request: Request, items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A ``meta.k8s.io`` Table of ``items`` when the client asks for one (``kubectl get``)."""
    try:
        version = printing.table_version(request.headers.get("accept"))
        if version is None:
            return None
        include = printing.include_object(request.query_params.get("includeObject"))
    except ApiError as err:  # 406 or 400, as a Status
        raise GatewayError(err.code, err.message, err.reason) from None
    return printing.table(profile_kind(), items, version=version, include=include)


async def _refuse_dry_run(request: Request) -> None:
    """A dry run (``kubectl --dry-run=server``, ``kubectl diff``) is refused, not performed:
    a profile's writes create and remove namespaces, which no transaction can take back."""
    try:
        if request.method == "DELETE":
            dry = await writes.delete_dry_run(request)
        else:
            dry = writes.dry_run(request)
    except ApiError as err:
        raise GatewayError(err.code, err.message, err.reason) from None
    if dry:
        raise GatewayError(400, "dryRun is not supported for profiles", "BadRequest")


@router.get("")
async def list_profiles(request: Request, gw: GatewayDep, p: PrincipalDep) -> dict[str, Any]:
    items = await gw.store.list_profiles()
    if not gw.authz.is_cluster_admin(p):
        items = [i for i in items if gw.authz.role_in(p, i["metadata"]["name"])]
    table = _as_table(request, items)
    if table is not None:
        return table
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "ProfileList",
        "metadata": {"resourceVersion": ""},
        "items": items,
    }


@router.post("", status_code=201)
async def create_profile(request: Request, gw: GatewayDep, p: PrincipalDep) -> dict[str, Any]:
    await _refuse_dry_run(request)
    return await register(gw, p, await gw.read_json(request))


@router.get("/{name}")
async def read_profile(
    name: str, request: Request, gw: GatewayDep, p: PrincipalDep
) -> dict[str, Any]:
    if not gw.authz.is_cluster_admin(p) and gw.authz.role_in(p, name) is None:
        raise _forbid(p.user, "get", name)
    profile = await gw.store.get_profile(name)
    return _as_table(request, [profile]) or profile


@router.patch("/{name}")
async def update_profile(
    name: str, request: Request, gw: GatewayDep, p: PrincipalDep
) -> dict[str, Any]:
    await _refuse_dry_run(request)
    body = await gw.read_json(request)
    admin = gw.authz.is_cluster_admin(p)
    if not admin and gw.authz.role_in(p, name) != "admin":
        raise _forbid(p.user, "patch", name)
    if not admin and "owner" in (body.get("spec") or {}):
        raise _forbid(p.user, "change the owner of", name)
    if not admin and "resourceQuotaSpec" in (body.get("spec") or {}):
        current = await gw.store.get_profile(name)
        after = merge_patch(current, body).get("spec") or {}
        if quota_of(after) != quota_of(current["spec"]):
            raise _forbid(p.user, "change the resource quota of", name)
    return await gw.store.patch_profile(name, body)


@router.delete("/{name}")
async def delete_profile(
    name: str, request: Request, gw: GatewayDep, p: PrincipalDep
) -> dict[str, Any]:
    await _refuse_dry_run(request)
    current = await gw.store.get_profile(name)
    owner = current["spec"]["owner"]["name"]
    if not gw.authz.is_cluster_admin(p):
        if owner != p.user:
            raise _forbid(p.user, "delete", name)
        if sheds_quota(dict(quota_of(current["spec"])), gw.settings.registration_hard):
            # Registering the name again would shed the quota a cluster admin set.
            raise _forbid(
                p.user,
                "delete",
                name,
                "its resource quota is stricter than the registration quota; ask a cluster admin",
            )

    await gw.store.delete_profile(name)
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "kind": "profiles"},
    }
