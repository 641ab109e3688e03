"""KFAM-compatible access management: ``/kfam/v1/bindings`` and ``/kfam/v1/profiles``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from .deps import GatewayDep, PrincipalDep
from .errors import GatewayError
from .registration import register

router = APIRouter(prefix="/kfam/v1")

ROLE_TO_CLUSTERROLE = {"admin": "kubeflow-admin", "edit": "kubeflow-edit", "view": "kubeflow-view"}
CLUSTERROLE_TO_ROLE = {v: k for k, v in ROLE_TO_CLUSTERROLE.items()} | {
    "admin": "admin",
    "edit": "edit",
    "view": "view",
}


def binding_json(ns: str, user: str, role: str) -> dict[str, Any]:
    return {
        "user": {"kind": "User", "name": user},
        "referredNamespace": ns,
        "RoleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": ROLE_TO_CLUSTERROLE[role],
        },
        "status": "Succeeded",
    }


def parse_binding(body: dict[str, Any]) -> tuple[str, str, str | None]:
    user = (body.get("user") or {}).get("name")
    ns = body.get("referredNamespace")
    ref = body.get("RoleRef") or body.get("roleRef") or {}
    if not isinstance(user, str) or not user:
        raise GatewayError(422, "user.name: required", "Invalid")
    if not isinstance(ns, str) or not ns:
        raise GatewayError(422, "referredNamespace: required", "Invalid")
    role = CLUSTERROLE_TO_ROLE.get(str(ref.get("name", ""))) if ref else None
    if ref and role is None:
        raise GatewayError(422, f"RoleRef.name: unknown role {ref.get('name')!r}", "Invalid")
    return ns, user, role


def _deny(user: str, verb: str, ns: str) -> GatewayError:
    return GatewayError(
        403,
        f'User "{user}" cannot {verb} bindings in namespace "{ns}"',
        "Forbidden",
        {"user": user, "verb": verb, "namespace": ns},
    )


@router.get("/bindings")
async def list_bindings(
    gw: GatewayDep,
    p: PrincipalDep,
    namespace: str | None = None,
    user: str | None = None,
    role: str | None = None,
) -> dict[str, Any]:
    rows = await gw.store.list_bindings(namespace, user)
    if not gw.authz.is_cluster_admin(p):
        rows = [r for r in rows if r[1] == p.user or gw.authz.role_in(p, r[0]) is not None]
    if role:
        wanted = CLUSTERROLE_TO_ROLE.get(role)
        rows = [r for r in rows if r[2] == wanted]
    return {"bindings": [binding_json(*r) for r in rows]}


@router.post("/bindings")
async def create_binding(request: Request, gw: GatewayDep, p: PrincipalDep) -> dict[str, Any]:
    ns, user, role = parse_binding(await gw.read_json(request))
    if not gw.authz.can_manage(p, ns):
        raise _deny(p.user, "create", ns)
    await gw.store.add_binding(ns, user, role or "edit")
    return binding_json(ns, user, role or "edit")


@router.delete("/bindings")
async def delete_binding(request: Request, gw: GatewayDep, p: PrincipalDep) -> dict[str, Any]:
    ns, user, _ = parse_binding(await gw.read_json(request))
    if not gw.authz.can_manage(p, ns):
        raise _deny(p.user, "delete", ns)
    if not await gw.store.remove_binding(ns, user):
        raise GatewayError(404, f'binding of "{user}" in namespace "{ns}" not found')
    return {}


@router.post("/profiles")
async def create_profile(request: Request, gw: GatewayDep, p: PrincipalDep) -> dict[str, Any]:
    return await register(gw, p, await gw.read_json(request))


@router.delete("/profiles/{name}")
async def delete_profile(name: str, gw: GatewayDep, p: PrincipalDep) -> dict[str, Any]:
    current = await gw.store.get_profile(name)
    if not gw.authz.is_cluster_admin(p) and current["spec"]["owner"]["name"] != p.user:
        raise _deny(p.user, "delete profile", name)
    await gw.store.delete_profile(name)
    return {}
