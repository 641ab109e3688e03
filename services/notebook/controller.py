"""Reconcilers of the notebook service.

``ClaimController`` backs each PersistentVolumeClaim with a runtime volume (locally a
directory per namespace and claim) and reports it ``Bound``. The volume is made when the claim
is created, so a claim over its namespace's quota (``persistentvolumeclaims``,
``requests.storage``) is refused then, a 403 in the API server's words, as on Kubernetes.
A claim being deleted keeps its ``kubernetes.io/pvc-protection`` finalizer until no running
workload mounts it, as Kubernetes' pvc-protection controller does; the API refuses such a
delete up front with a message that names the workloads.
"""

from __future__ import annotations

import logging
from typing import Any

from services.common.controller import Controller
from services.common.errors import ApiError
from services.common.resources import ResourceKind, ResourceStore
from services.common.runtime import Runtime, RuntimeBackendError
from services.common.runtime.quota import QuotaRefused
from services.notebook.models import PVC

log = logging.getLogger(__name__)

PROTECTION = "kubernetes.io/pvc-protection"
DEFAULT_SIZE = "1Gi"


class ClaimController(Controller):
    kinds = (PVC,)

    def __init__(self, store: ResourceStore, runtime: Runtime) -> None:
        super().__init__(store)
        self.runtime = runtime
        store.add_delete_guard(PVC, self.refuse_delete_in_use)
        store.add_admission(PVC, self.admit)

    async def admit(self, session: Any, claim: dict[str, Any], current: Any) -> None:
        """A new claim's volume, made now: over the namespace's quota, the create is a 403.
        Any other runtime failure leaves it to the reconcile, which tries again."""
        if current is not None:
            return
        meta = claim["metadata"]
        try:
            await self._make_volume(meta["namespace"], meta["name"], claim)
        except QuotaRefused as exc:
            raise ApiError(
                403,
                exc.message,
                reason="Forbidden",
                details={"name": meta["name"], "kind": "persistentvolumeclaims"},
            ) from None
        except RuntimeBackendError as exc:
            log.warning(
                "volume of claim %s/%s not made yet: %s", meta["namespace"], meta["name"], exc
            )

    async def _make_volume(self, namespace: str, name: str, claim: dict[str, Any]) -> str:
        """The claim's volume (made unless it exists); its size."""
        spec = claim.get("spec") or {}
        size = str(
            ((spec.get("resources") or {}).get("requests") or {}).get("storage") or DEFAULT_SIZE
        )
        await self.runtime.create_volume(
            namespace, name, size=size, labels=claim["metadata"].get("labels") or {}
        )
        return size

    async def users(self, namespace: str, claim: str) -> list[str]:
        return await self.runtime.volume_users(namespace, claim)

    async def refuse_delete_in_use(self, claim: dict[str, Any]) -> None:
        meta = claim["metadata"]
        users = await self.users(meta["namespace"], meta["name"])
        if users:
            raise ApiError(
                409,
                f'persistentvolumeclaim "{meta["name"]}" is in use by running '
                f"workload(s) {', '.join(sorted(users))}; stop or delete them "
                "first",
                reason="Conflict",
                details={"name": meta["name"], "kind": "persistentvolumeclaims"},
            )

    async def reconcile(self, kind: ResourceKind, namespace: str, name: str) -> None:
        claim = await self.store.find(PVC, namespace, name)
        if claim is None:
            return
        if claim["metadata"].get("deletionTimestamp"):
            if await self.users(namespace, name):
                return  # the resync tries again once the workloads are gone
            await self.runtime.delete_volume(namespace, name)
            await self.store.remove_finalizer(PVC, namespace, name, PROTECTION)
            log.info("deleted volume of claim %s/%s", namespace, name)
            return
        spec = claim.get("spec") or {}
        try:
            size = await self._make_volume(namespace, name, claim)
        except QuotaRefused as exc:  # not made at admission (the runtime failed): no room now
            log.warning("claim %s/%s: %s", namespace, name, exc.message)
            return
        status = {
            "phase": "Bound",
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "capacity": {"storage": size},
        }
        if claim.get("status") != status:
            await self.store.update_status(PVC, namespace, name, status)
