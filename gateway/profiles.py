"""Profiles and contributor bindings: the gateway's own tables, store and Profile API.

A Profile (``kubeflow.org/v1``, cluster-scoped) owns the namespace of the same name. The
owner is admin; contributors are bound as admin, edit or view (KFAM's ClusterRoles
``kubeflow-admin``/``kubeflow-edit``/``kubeflow-view``). The store keeps an in-memory
snapshot of who may do what, so authorizing a request needs no database round trip; every
write refreshes it, and a periodic reload picks up writes from other gateway replicas.

Deleting a Profile reserves its name (``deleted_profiles``) instead of deleting the
namespace's objects. The objects live in the services' own schemas and workloads, which the
gateway does not own (no service reads another's tables), so a cascade would be a
distributed delete through every service that can stop half-way; a reservation is one row,
atomic with the deletion, and never destroys data by mistake. What it must prevent is that
somebody else registers the name and so inherits the data: a reserved name can be registered
again only for its last owner (by them, or by a cluster admin on their behalf). A cluster
admin who means to hand the data over re-creates the profile for its last owner and then
changes the owner, which is explicit.

A Profile is also a place for workloads: creating one calls ``Runtime.ensure_namespace`` (on
Kubernetes the Namespace, its ServiceAccounts, RoleBindings and NetworkPolicy, as Kubeflow's
profile controller makes them), deleting one ``Runtime.delete_namespace``, and a change of
owner ensures it again (:class:`NamespaceSync`). The Profile is the record and is stored
first; when the runtime fails, the error is logged, the Profile's ``Ready`` condition says
so, and the call is retried with back-off. Every gateway start ensures every profile's
namespace once, so a failure that outlived its gateway is mended by the next one. The
runtime is built lazily, so the quickstart never loads a Kubernetes client.

A Profile's ``spec.resourceQuotaSpec`` goes with it: the namespace's ResourceQuota
``kf-resource-quota`` (services/common/runtime/quota.py), enforced by the API server on
Kubernetes and by the local runtime's admission otherwise. Only a cluster admin may change
it, or delete a profile that has one (gateway/profiles_api.py): otherwise the quota would
limit nobody.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, Column, Integer, String, Table, delete, insert, select, update

from services.common.db import Database, new_metadata
from services.common.resources.patch import merge_patch
from services.common.runtime import Runtime, RuntimeSettings, get_runtime
from services.common.runtime.quota import hard_of
from services.common.timestamps import now_rfc3339

from .errors import GatewayError

log = logging.getLogger(__name__)

metadata = new_metadata()

profiles_table = Table(
    "profiles",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("uid", String(36), nullable=False),
    Column("resource_version", Integer, nullable=False),
    Column("owner", String(320), nullable=False),
    Column("created", String(32), nullable=False),
    Column("body", JSON, nullable=False),
)

bindings_table = Table(
    "bindings",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("user", String(320), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created", String(32), nullable=False),
)

deleted_profiles_table = Table(
    "deleted_profiles",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("owner", String(320), nullable=False),
    Column("deleted", String(32), nullable=False),
)

ROLES = ("view", "edit", "admin")
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def namespace_for_user(user: str) -> str:
    """Kubeflow's default profile name: ``user@example.com`` -> ``kubeflow-user-example-com``."""
    slug = re.sub(r"[^a-z0-9]+", "-", user.lower()).strip("-")
    return f"kubeflow-{slug}"[:63].rstrip("-")


@dataclass(frozen=True)
class NamespaceWish:
    """What a profile asks of its namespace in the runtime: its owner, and its quota (the
    ``hard`` map of ``spec.resourceQuotaSpec``, as sorted pairs; empty: none)."""

    owner: str
    quota: tuple[tuple[str, str], ...] = ()


def quota_of(spec: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A profile spec's quota as :class:`NamespaceWish` keeps it; a GatewayError 422 naming
    the field when it is malformed."""
    try:
        return tuple(sorted(hard_of(spec.get("resourceQuotaSpec")).items()))
    except ValueError as exc:
        raise GatewayError(422, str(exc), "Invalid") from None


@dataclass
class AccessSnapshot:
    """Who owns and contributes to which namespace (read by every authorization), and each
    profile's quota."""

    owners: dict[str, str] = field(default_factory=dict)
    bindings: dict[str, dict[str, str]] = field(default_factory=dict)
    quotas: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def role(self, user: str, namespace: str) -> str | None:
        if namespace not in self.owners:
            return None
        if self.owners[namespace] == user:
            return "admin"
        return self.bindings.get(namespace, {}).get(user)

    def namespaces_of(self, user: str) -> list[tuple[str, str]]:
        out = [(ns, "admin") for ns, owner in self.owners.items() if owner == user]
        owned = {ns for ns, _ in out}
        for ns, users in self.bindings.items():
            if user in users and ns not in owned and ns in self.owners:
                out.append((ns, users[user]))
        return sorted(out)


class NamespaceSync:
    """A profile's namespace in the runtime, made and removed beside the Profile record.

    ``owners`` returns the current profiles (namespace -> owner). Calls that fail are
    remembered (the latest wish per namespace) and retried by :meth:`retry_due` with
    exponential back-off, from ``retry_seconds`` up to ``max_retry_seconds``; a retry asks
    ``owners`` again first, so one for a profile deleted or registered again since is
    dropped. Calls for one namespace never overlap.
    """

    def __init__(
        self,
        runtime: Callable[[], Runtime],
        *,
        timeout: float = 30.0,
        retry_seconds: float = 5.0,
        max_retry_seconds: float = 300.0,
    ) -> None:
        self._build = runtime
        self._runtime: Runtime | None = None
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        #: namespace -> (what to ensure, or None to delete it), attempts, next try, error
        self.pending: dict[str, tuple[NamespaceWish | None, int, float, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = self._build()
        return self._runtime

    async def ensure(self, namespace: str, wish: NamespaceWish) -> bool:
        async with self._lock(namespace):
            return await self._call(namespace, wish)

    async def delete(self, namespace: str) -> bool:
        async with self._lock(namespace):
            return await self._call(namespace, None)

    def _lock(self, namespace: str) -> asyncio.Lock:
        return self._locks.setdefault(namespace, asyncio.Lock())

    async def _call(self, namespace: str, wish: NamespaceWish | None) -> bool:
        what = "make" if wish is not None else "remove"
        try:
            runtime = self.runtime()
            async with asyncio.timeout(self.timeout):
                if wish is not None:
                    await runtime.ensure_namespace(namespace, wish.owner, dict(wish.quota) or None)
                else:
                    await runtime.delete_namespace(namespace)
        except Exception as exc:
            previous = self.pending.get(namespace)
            attempts = previous[1] + 1 if previous and previous[0] == wish else 1
            delay = min(self.retry_seconds * 2 ** (attempts - 1), self.max_retry_seconds)
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.pending[namespace] = (wish, attempts, time.monotonic() + delay, error)
            log.warning(
                "profile %s: could not %s its namespace in the runtime (attempt %d, %s); "
                "retrying in %.0f s",
                namespace,
                what,
                attempts,
                error,
                delay,
                exc_info=attempts == 1,
            )
            return False
        if self.pending.pop(namespace, None) is not None:
            log.info("profile %s: its namespace is %sd now, after a retry", namespace, what)
        return True

    def pending_error(self, namespace: str) -> str | None:
        """Why a profile's namespace is not made yet (None: made, or nothing pending)."""
        entry = self.pending.get(namespace)
        return entry[3] if entry is not None and entry[0] is not None else None

    async def retry_due(self, wishes: Callable[[], dict[str, NamespaceWish]]) -> None:
        """Retry each failed call whose back-off has passed, as ``wishes`` now wants it."""
        now = time.monotonic()
        for namespace, (wish, _, due, _) in list(self.pending.items()):
            if due > now:
                continue
            async with self._lock(namespace):
                if self.pending.get(namespace, (None, 0, 0.0))[0] != wish:
                    continue  # a request dealt with it meanwhile
                wanted = wishes().get(namespace)
                if (wish is None) != (wanted is None):
                    self.pending.pop(namespace, None)  # deleted, or registered again, since
                elif wanted is not None:
                    await self._call(namespace, wanted)
                else:
                    await self._call(namespace, None)

    async def reconcile(self, wishes: Callable[[], dict[str, NamespaceWish]]) -> None:
        """Ensure every profile's namespace once (at a gateway's start)."""
        for namespace in sorted(wishes()):
            async with self._lock(namespace):
                wish = wishes().get(namespace)
                if wish is not None:
                    await self._call(namespace, wish)

    async def close(self) -> None:
        if self._runtime is not None:
            runtime, self._runtime = self._runtime, None
            await runtime.close()


def namespace_sync_for(settings: Any = None) -> NamespaceSync:
    """A :class:`NamespaceSync` for the configured runtime (``SHIPYARD_RUNTIME``, or
    ``settings.runtime``). Nothing is built or imported until the first profile needs it. The
    local runtime's namespaces need only their quotas (files in its state directory): the
    gateway's copy is built without what starting workloads takes (identities, the store)."""
    kind = str(getattr(settings, "runtime", None) or RuntimeSettings().runtime).strip().lower()

    def build() -> Runtime:
        if settings is None:
            from services.common.settings import ServiceSettings

            base: Any = ServiceSettings(service_name="gateway")
        else:
            base = settings
        if kind in ("", "local"):
            return get_runtime(
                base, workload_env=None, workload_tokens=None, store_endpoint=None, in_cluster=None
            )
        return get_runtime(base)

    return NamespaceSync(build)


class ProfileStore:
    """Profiles and bindings in the gateway's schema.

    ``namespaces`` makes and removes each profile's namespace (and its quota) in the runtime;
    by default it follows ``SHIPYARD_RUNTIME`` (:func:`namespace_sync_for`). Pass one to
    choose, or None for none (tests pass one around a fake runtime).
    """

    _DEFAULT: Any = object()

    def __init__(
        self,
        db: Database,
        reload_seconds: float = 5.0,
        *,
        namespaces: NamespaceSync | None = _DEFAULT,
    ) -> None:
        self.db = db
        self.snapshot = AccessSnapshot()
        self.reload_seconds = reload_seconds
        self._reloader: asyncio.Task[None] | None = None
        self.namespaces: NamespaceSync | None = (
            namespace_sync_for() if namespaces is ProfileStore._DEFAULT else namespaces
        )
        self._namespace_worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.db.ensure_schema()
        async with self.db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        await self.reload()
        self._reloader = asyncio.create_task(self._reload_forever())
        if self.namespaces is not None:
            # In the background: a slow or absent API server must not hold the gateway up.
            self._namespace_worker = asyncio.create_task(self._sync_namespaces(self.namespaces))

    async def stop(self) -> None:
        for task in (self._reloader, self._namespace_worker):
            if task is not None:
                task.cancel()
        if self.namespaces is not None:
            await self.namespaces.close()

    async def _reload_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reload_seconds)
            try:
                async with asyncio.timeout(10):
                    await self.reload()
            except Exception:  # keep serving the last snapshot
                log.warning("profile snapshot reload failed", exc_info=True)

    def _wishes(self) -> dict[str, NamespaceWish]:
        snap = self.snapshot
        return {
            ns: NamespaceWish(owner, snap.quotas.get(ns, ())) for ns, owner in snap.owners.items()
        }

    async def _sync_namespaces(self, namespaces: NamespaceSync) -> None:
        """Every profile's namespace once, then the failed calls as their back-off ends."""
        await namespaces.reconcile(self._wishes)
        while True:
            await asyncio.sleep(min(self.reload_seconds, namespaces.retry_seconds))
            try:
                await namespaces.retry_due(self._wishes)
            except Exception:  # _call catches the runtime's errors; this is a bug's net
                log.exception("retrying profile namespaces failed")

    async def reload(self) -> None:
        async with self.db.transaction() as s:
            owners, quotas = {}, {}
            query = select(profiles_table.c.name, profiles_table.c.owner, profiles_table.c.body)
            for r in await s.execute(query):
                owners[r.name] = r.owner
                try:
                    quotas[r.name] = quota_of((r.body or {}).get("spec") or {})
                except GatewayError as exc:  # stored before quotas were checked on write
                    log.warning("profile %s: its resourceQuotaSpec is ignored: %s", r.name, exc)
            bindings: dict[str, dict[str, str]] = {}
            for r in await s.execute(select(bindings_table)):
                bindings.setdefault(r.namespace, {})[r.user] = r.role
        self.snapshot = AccessSnapshot(owners, bindings, quotas)

    # ---- profiles -------------------------------------------------------------------------

    @staticmethod
    def _object(row: Any) -> dict[str, Any]:
        body = dict(row.body)
        meta = dict(body.get("metadata") or {})
        meta.update(
            name=row.name,
            uid=row.uid,
            resourceVersion=str(row.resource_version),
            creationTimestamp=row.created,
        )
        meta.setdefault("labels", {})
        meta.setdefault("annotations", {})
        return {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": meta,
            "spec": body.get("spec") or {},
            "status": body.get("status") or {"conditions": [{"type": "Ready", "status": "True"}]},
        }

    def _with_namespace_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A profile whose namespace the runtime has not made yet is not Ready (this
        replica's view; the error itself is in the gateway's log, not shown to users)."""
        name = obj["metadata"]["name"]
        if self.namespaces is not None and self.namespaces.pending_error(name) is not None:
            obj["status"] = {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "NamespaceNotReady",
                        "message": f"the runtime has not made namespace {name} yet; the "
                        "gateway keeps retrying",
                    }
                ]
            }
        return obj

    async def create_profile(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise GatewayError(422, "metadata.name: must be a DNS-1123 label", "Invalid")
        owner = ((obj.get("spec") or {}).get("owner") or {}).get("name")
        if not isinstance(owner, str) or not owner:
            raise GatewayError(422, "spec.owner.name: required", "Invalid")
        spec = dict(obj.get("spec") or {})
        spec["owner"] = {"kind": spec["owner"].get("kind", "User"), "name": owner}
        quota = quota_of(spec)
        body = {
            "metadata": {
                "labels": meta.get("labels") or {},
                "annotations": meta.get("annotations") or {},
            },
            "spec": spec,
        }
        async with self.db.transaction() as s:
            exists = await s.scalar(
                select(profiles_table.c.name).where(profiles_table.c.name == name)
            )
            if exists:
                raise GatewayError(
                    409,
                    f'profiles.kubeflow.org "{name}" already exists',
                    "AlreadyExists",
                    {"name": name, "kind": "profiles"},
                )
            last_owner = await s.scalar(
                select(deleted_profiles_table.c.owner).where(deleted_profiles_table.c.name == name)
            )
            if last_owner is not None and last_owner != owner:
                raise GatewayError(
                    409,
                    f'profiles.kubeflow.org "{name}" is reserved: a deleted profile used this '
                    "namespace and its data remains, so only its last owner can register it "
                    "again",
                    "Conflict",
                    {"name": name, "kind": "profiles"},
                )
            await s.execute(
                insert(profiles_table).values(
                    name=name,
                    uid=str(uuid.uuid4()),
                    resource_version=1,
                    owner=owner,
                    created=now_rfc3339(),
                    body=body,
                )
            )
        await self.reload()
        log.info("created profile %s (namespace %s) for %s", name, name, owner)
        if self.namespaces is not None:
            await self.namespaces.ensure(name, NamespaceWish(owner, quota))  # retried on failure
        return await self.get_profile(name)

    async def get_profile(self, name: str) -> dict[str, Any]:
        async with self.db.transaction() as s:
            row = (
                await s.execute(select(profiles_table).where(profiles_table.c.name == name))
            ).first()
        if row is None:
            raise GatewayError(
                404,
                f'profiles.kubeflow.org "{name}" not found',
                "NotFound",
                {"name": name, "kind": "profiles"},
            )
        return self._with_namespace_status(self._object(row))

    async def list_profiles(self) -> list[dict[str, Any]]:
        async with self.db.transaction() as s:
            rows = (await s.execute(select(profiles_table).order_by(profiles_table.c.name))).all()
        return [self._with_namespace_status(self._object(r)) for r in rows]

    async def delete_profile(self, name: str) -> dict[str, Any]:
        obj = await self.get_profile(name)
        owner = obj["spec"]["owner"]["name"]
        async with self.db.transaction() as s:
            await s.execute(delete(bindings_table).where(bindings_table.c.namespace == name))
            await s.execute(delete(profiles_table).where(profiles_table.c.name == name))
            # The namespace's data outlives the profile: keep the name for its owner.
            await s.execute(
                delete(deleted_profiles_table).where(deleted_profiles_table.c.name == name)
            )
            await s.execute(
                insert(deleted_profiles_table).values(name=name, owner=owner, deleted=now_rfc3339())
            )
        await self.reload()
        if self.namespaces is not None:
            await self.namespaces.delete(name)  # failures are retried, not raised
        return obj

    async def patch_profile(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch (RFC 7386) of labels, annotations and spec; owner may change."""
        current = await self.get_profile(name)
        merged = merge_patch(current, patch)
        owner = ((merged.get("spec") or {}).get("owner") or {}).get("name")
        if not isinstance(owner, str) or not owner:
            raise GatewayError(422, "spec.owner.name: required", "Invalid")
        meta = merged.get("metadata") or {}
        quota = quota_of(merged.get("spec") or {})
        body = {
            "metadata": {
                "labels": meta.get("labels") or {},
                "annotations": meta.get("annotations") or {},
            },
            "spec": merged.get("spec") or {},
        }
        async with self.db.transaction() as s:
            await s.execute(
                update(profiles_table)
                .where(profiles_table.c.name == name)
                .values(
                    owner=owner,
                    body=json.loads(json.dumps(body)),
                    resource_version=profiles_table.c.resource_version + 1,
                )
            )
        await self.reload()
        wish = NamespaceWish(owner, quota)
        if self.namespaces is not None and wish != NamespaceWish(
            current["spec"]["owner"]["name"], quota_of(current["spec"])
        ):
            await self.namespaces.ensure(name, wish)  # the new owner's RoleBinding, the quota
        return await self.get_profile(name)

    # ---- bindings -------------------------------------------------------------------------

    async def add_binding(self, namespace: str, user: str, role: str) -> None:
        if role not in ROLES:
            raise GatewayError(422, f"roleRef.name: unknown role {role!r}", "Invalid")
        await self.get_profile(namespace)
        async with self.db.transaction() as s:
            await s.execute(
                delete(bindings_table).where(
                    bindings_table.c.namespace == namespace, bindings_table.c.user == user
                )
            )
            await s.execute(
                insert(bindings_table).values(
                    namespace=namespace, user=user, role=role, created=now_rfc3339()
                )
            )
        await self.reload()

    async def remove_binding(self, namespace: str, user: str) -> bool:
        async with self.db.transaction() as s:
            result = await s.execute(
                delete(bindings_table).where(
                    bindings_table.c.namespace == namespace, bindings_table.c.user == user
                )
            )
        await self.reload()
        return bool(getattr(result, "rowcount", 0))  # a CursorResult for DELETE

    async def list_bindings(
        self, namespace: str | None = None, user: str | None = None
    ) -> list[tuple[str, str, str]]:
        """(namespace, user, role) rows, owners included as admin."""
        snap = self.snapshot
        rows = [(ns, owner, "admin") for ns, owner in snap.owners.items()]
        rows += [
            (ns, u, r)
            for ns, users in snap.bindings.items()
            for u, r in users.items()
            if ns in snap.owners and snap.owners[ns] != u
        ]
        return sorted(
            r
            for r in rows
            if (namespace is None or r[0] == namespace) and (user is None or r[1] == user)
        )

    async def ensure_profile(
        self, name: str, owner: str, spec: Mapping[str, Any] | None = None
    ) -> None:
        """The profile ``name`` for ``owner`` (with ``spec``'s other fields), unless it exists."""
        if name not in self.snapshot.owners:
            try:
                await self.create_profile(
                    {
                        "metadata": {"name": name},
                        "spec": {**(spec or {}), "owner": {"kind": "User", "name": owner}},
                    }
                )
            except GatewayError as exc:
                if exc.code != 409:
                    raise
