"""Errors the runtime raises to its callers (workload failures are statuses, not exceptions)."""

from __future__ import annotations


class RuntimeBackendError(Exception):
    """Base class for runtime errors."""


class _NotFound(RuntimeBackendError, KeyError):
    """A named object of a namespace is missing; ``what`` names its kind in the message."""

    what = "object"

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f"{self.what} {name} not found in namespace {namespace}")
        self.namespace, self.name = namespace, name

    def __str__(self) -> str:
        # KeyError's own str() is the repr of its argument (quoted); say the message.
        return str(self.args[0])


class WorkloadNotFound(_NotFound):
    what = "workload"


class VolumeNotFound(_NotFound):
    what = "PersistentVolumeClaim"
