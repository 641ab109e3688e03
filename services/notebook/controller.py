"""Reconcilers of the notebook service.

``ClaimController`` backs each PersistentVolumeClaim with a runtime volume (locally a
directory per namespace and claim) and reports it ``Bound``. A claim being deleted
keeps its ``kubernetes.io/pvc-protection`` finalizer until no running workload
mounts it, as Kubernetes' pvc-protection controller does; the API refuses such a
delete up front with a message that names the workloads.
"""

from __future__ import annotations

import logging
from typing import Any

from services.common.controller import Controller
from services.common.errors import ApiError
from services.common.resources import ResourceKind, ResourceStore
from services.common.runtime import Runtime
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
        size = str(
            ((spec.get("resources") or {}).get("requests") or {}).get("storage") or DEFAULT_SIZE
        )
        await self.runtime.create_volume(
            namespace, name, size=size, labels=claim["metadata"].get("labels") or {}
        )
        status = {
            "phase": "Bound",
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "capacity": {"storage": size},
        }
        if claim.get("status") != status:
            await self.store.update_status(PVC, namespace, name, status)
