"""Errors the runtime raises to its callers (workload failures are statuses, not exceptions)."""

from __future__ import annotations


class RuntimeBackendError(Exception):
    """Base class for runtime errors."""


class WorkloadNotFound(RuntimeBackendError, KeyError):
    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"workload {name} not found in namespace {namespace}")
        self.namespace, self.name = namespace, name

    def __str__(self) -> str:
        return str(self.args[0])


class VolumeNotFound(RuntimeBackendError, KeyError):
    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"PersistentVolumeClaim {name} not found in namespace {namespace}")
        self.namespace, self.name = namespace, name

    def __str__(self) -> str:
        return str(self.args[0])
