"""Kubernetes-style resources: one generic implementation every service registers its kinds with.

- :class:`ResourceKind` describes a kind (group, version, plural, pydantic spec model).
- :class:`ResourceStore` persists objects in the service's ``objects`` table, keeps
  resourceVersions, stages a ``ResourceEvent`` in the outbox on every change, and
  serves watches.
- :func:`resource_router` exposes a kind over the Kubernetes REST paths, so the
  official ``kubernetes`` client (CustomObjectsApi, CoreV1Api, watch) works unchanged.
"""

from services.common.resources.api import resource_router
from services.common.resources.kinds import PrinterColumn, ResourceKind
from services.common.resources.store import ResourceStore, WatchEvent

__all__ = ["PrinterColumn", "ResourceKind", "ResourceStore", "WatchEvent", "resource_router"]
