"""Central-dashboard ``/api/workgroup/*`` endpoints (same JSON shapes as Kubeflow's)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from .deps import GatewayDep, PrincipalDep
from .errors import GatewayError
from .profiles import namespace_for_user
from .registration import register

router = APIRouter(prefix="/api/workgroup")


@router.get("/exists")
async def read_exists(gw: GatewayDep, p: PrincipalDep) -> dict[str, Any]:
    owned = [
        ns
        for ns, role in gw.store.snapshot.namespaces_of(p.user)
        if role == "admin" and gw.store.snapshot.owners.get(ns) == p.user
    ]
    return {
        "user": p.user,
        "hasAuth": True,
        "hasWorkgroup": bool(owned),
        "registrationFlowAllowed": gw.settings.registration_flow,
    }


@router.get("/env-info")
async def read_env_info(gw: GatewayDep, p: PrincipalDep) -> dict[str, Any]:
    snap = gw.store.snapshot
    namespaces = [
        {"namespace": ns, "role": "owner" if role == "admin" else "contributor", "user": p.user}
        for ns, role in snap.namespaces_of(p.user)
    ]
    return {
        "user": p.user,
        "platform": {
            "kubeflowVersion": "shipyard",
            "provider": "shipyard://local",
            "providerName": "shipyard",
            "logoutUrl": "/oauth2/sign_out",
        },
        "namespaces": namespaces,
        "isClusterAdmin": gw.authz.is_cluster_admin(p),
    }


@router.post("/create")
async def create_workgroup(request: Request, gw: GatewayDep, p: PrincipalDep) -> dict[str, Any]:
    body = await gw.read_json(request, allow_empty=True)
    user = body.get("user") or p.user
    ns = body.get("namespace") or namespace_for_user(user)
    if not gw.authz.is_cluster_admin(p) and not gw.settings.registration_flow:
        raise GatewayError(
            403,
            f'User "{p.user}" cannot create a workgroup: registration is turned off',
            "Forbidden",
            {"user": p.user, "verb": "create", "namespace": ns},
        )
    await register(
        gw, p, {"metadata": {"name": ns}, "spec": {"owner": {"kind": "User", "name": user}}}
    )
    return {"message": f"Created namespace {ns}", "namespace": ns, "user": user}


@router.get("/get-all-namespaces")
async def list_all_namespaces(gw: GatewayDep, p: PrincipalDep) -> list[list[str]]:
    snap = gw.store.snapshot
    if gw.authz.is_cluster_admin(p):
        return [[ns, owner] for ns, owner in sorted(snap.owners.items())]
    return [[ns, snap.owners[ns]] for ns, _ in snap.namespaces_of(p.user)]


def _manage_or_403(gw: Any, p: Any, ns: str, verb: str) -> None:
    if not gw.authz.can_manage(p, ns):
        raise GatewayError(
            403,
            f'User "{p.user}" cannot {verb} contributors of namespace "{ns}"',
            "Forbidden",
            {"user": p.user, "verb": verb, "namespace": ns},
        )


def contributors(gw: Any, ns: str) -> list[str]:
    snap = gw.store.snapshot
    return sorted(u for u in snap.bindings.get(ns, {}) if snap.owners.get(ns) != u)


@router.get("/get-contributors/{ns}")
async def list_contributors(ns: str, gw: GatewayDep, p: PrincipalDep) -> list[str]:
    if not gw.authz.is_cluster_admin(p) and gw.authz.role_in(p, ns) is None:
        raise GatewayError(
            403,
            f'User "{p.user}" cannot list contributors of namespace "{ns}"',
            "Forbidden",
            {"user": p.user, "verb": "list", "namespace": ns},
        )
    await gw.store.get_profile(ns)
    return contributors(gw, ns)


@router.post("/add-contributor/{ns}")
async def add_contributor(ns: str, request: Request, gw: GatewayDep, p: PrincipalDep) -> list[str]:
    _manage_or_403(gw, p, ns, "add")
    body = await gw.read_json(request)
    who = body.get("contributor")
    if not isinstance(who, str) or "@" not in who:
        raise GatewayError(422, "contributor: must be an email address", "Invalid")
    await gw.store.add_binding(ns, who, body.get("role") or "edit")
    return contributors(gw, ns)


@router.delete("/remove-contributor/{ns}")
async def remove_contributor(
    ns: str, request: Request, gw: GatewayDep, p: PrincipalDep
) -> list[str]:
    _manage_or_403(gw, p, ns, "remove")
    body = await gw.read_json(request)
    who = body.get("contributor")
    if not isinstance(who, str):
        raise GatewayError(422, "contributor: required", "Invalid")
    await gw.store.remove_binding(ns, who)
    return contributors(gw, ns)
