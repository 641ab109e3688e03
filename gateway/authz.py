"""Authorization: which role a request needs, and whether the caller holds it.

The caller (``Principal``) is decided by authentication; the namespace comes from the path
(``routes.resolve``) or, for the KFP API, from the query/body. The verb decides the role:
reads need view, writes and the data planes need edit, contributor management needs admin.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.identity import ROLES, Identity

from .errors import GatewayError
from .profiles import AccessSnapshot, namespace_for_user

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``sa_namespace`` is set for service-account tokens."""

    user: str
    groups: tuple[str, ...] = ()
    via: str = "bearer"  # bearer | cookie | single-user | trusted-header | serviceaccount
    sa_namespace: str | None = None


def needed_role(method: str, data_plane: bool = False) -> str:
    if data_plane:
        return "edit"
    return "view" if method.upper() in READ_METHODS else "edit"


def verb_of(method: str) -> str:
    return {
        "GET": "get",
        "HEAD": "get",
        "OPTIONS": "get",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }.get(method.upper(), method.lower())


class Authorizer:
    """Decides roles from the profile snapshot and the configured cluster admins."""

    #: How many granted decisions are remembered per snapshot (cleared when full).
    DECISIONS = 4096

    def __init__(self, snapshot_source: object, cluster_admins: set[str]) -> None:
        self._source = snapshot_source  # has a ``snapshot`` attribute (ProfileStore)
        self.cluster_admins = cluster_admins
        # Granted decisions, (principal, namespace, needed role) -> Identity, for the snapshot
        # they were made on: a profile or binding change replaces the snapshot (the store
        # never edits one), which empties this, so a decision is never older than the data.
        self._decided_on: AccessSnapshot | None = None
        self._decisions: dict[tuple[Principal, str | None, str], Identity] = {}

    @property
    def snapshot(self) -> AccessSnapshot:
        return self._source.snapshot  # type: ignore[attr-defined, no-any-return]

    def is_cluster_admin(self, p: Principal) -> bool:
        if p.sa_namespace is not None:
            return False
        return p.user in self.cluster_admins or any(g in self.cluster_admins for g in p.groups)

    def role_in(self, p: Principal, namespace: str) -> str | None:
        if p.sa_namespace is not None:
            return "edit" if p.sa_namespace == namespace else None
        return self.snapshot.role(p.user, namespace)

    def default_namespace(self, p: Principal) -> str | None:
        if p.sa_namespace is not None:
            return p.sa_namespace
        owned = self.snapshot.namespaces_of(p.user)
        admin_first = sorted(owned, key=lambda item: (item[1] != "admin", item[0]))
        return admin_first[0][0] if admin_first else None

    def authorize(
        self, p: Principal, namespace: str | None, needed: str, method: str, path: str = ""
    ) -> Identity:
        """The identity to assert upstream, or a 403 Status naming user, verb and namespace.

        Grants are remembered per profile snapshot (a refusal is decided afresh each time:
        its message names the method and path)."""
        snapshot = self.snapshot
        if snapshot is not self._decided_on or len(self._decisions) >= self.DECISIONS:
            self._decisions = {}
            self._decided_on = snapshot
        key = (p, namespace, needed)
        granted = self._decisions.get(key)
        if granted is None:
            granted = self._decide(p, namespace, needed, method, path)
            self._decisions[key] = granted
        return granted

    def _decide(
        self, p: Principal, namespace: str | None, needed: str, method: str, path: str
    ) -> Identity:
        if self.is_cluster_admin(p):
            return Identity(
                user=p.user, groups=p.groups, namespace=namespace, role="admin", cluster_admin=True
            )
        role = self.role_in(p, namespace) if namespace else None
        if role is None or ROLES.index(role) < ROLES.index(needed):
            where = f'namespace "{namespace}"' if namespace else "the cluster scope"
            raise GatewayError(
                403,
                f'User "{p.user}" cannot {verb_of(method)} {path or "resources"} in {where}: '
                f"needs role {needed}" + (f", has {role}" if role else ", has no access"),
                "Forbidden",
                {
                    "user": p.user,
                    "verb": verb_of(method),
                    "namespace": namespace or "",
                    "needed": needed,
                },
            )
        return Identity(user=p.user, groups=p.groups, namespace=namespace, role=role)

    def grants(self, p: Principal) -> dict[str, str]:
        """Every namespace the caller may use, with its role there."""
        if p.sa_namespace is not None:
            return {p.sa_namespace: "edit"}
        return dict(self.snapshot.namespaces_of(p.user))

    def authorize_by_object(self, p: Principal, default_namespace: str | None) -> Identity:
        """For a request that names its object only by id (KFP's ``/runs/{id}``): assert
        every namespace the caller may use, and let the service check the object's own."""
        if self.is_cluster_admin(p):
            return Identity(
                user=p.user,
                groups=p.groups,
                namespace=default_namespace,
                role="admin",
                cluster_admin=True,
            )
        grants = self.grants(p)
        role = grants.get(default_namespace or "", "view")
        return Identity(
            user=p.user, groups=p.groups, namespace=default_namespace, role=role, grants=grants
        )

    def check_register(self, p: Principal, namespace: str, owner: str) -> None:
        """Profile creation: a cluster admin may register any namespace for anyone; a person
        only the namespace their identity maps to (``namespace_for_user``), for themselves;
        a workload (service-account token) none. Else a 403 Status naming what is allowed."""
        if self.is_cluster_admin(p):
            return
        own = namespace_for_user(p.user)
        if p.sa_namespace is None and owner == p.user and namespace == own:
            return
        allowed = (
            "a workload cannot register namespaces"
            if p.sa_namespace is not None
            else f'may only register namespace "{own}" for themselves'
        )
        raise GatewayError(
            403,
            f'User "{p.user}" cannot create profiles.kubeflow.org "{namespace}" owned by '
            f'"{owner}": {allowed} (cluster admins may register any)',
            "Forbidden",
            {"user": p.user, "verb": "create", "name": namespace, "kind": "profiles"},
        )

    def can_manage(self, p: Principal, namespace: str) -> bool:
        """Contributor management: the owner, an admin contributor, or a cluster admin."""
        return self.is_cluster_admin(p) or self.role_in(p, namespace) == "admin"
