"""The workload runtime: one interface (``Runtime``) to run jobs and servers, locally or on k8s.

Start with :func:`get_runtime` and the contract in :mod:`services.common.runtime.base`.
"""

from .base import Runtime
from .config import RUNTIME_CLASSES, RuntimeSettings, get_runtime, register_runtime
from .errors import RuntimeBackendError, VolumeNotFound, WorkloadNotFound
from .labels import SERVICE_LABEL, LabelSelector, parse_selector
from .local import LocalRuntime
from .models import (
    EnvVar,
    InitContainer,
    Phase,
    Probe,
    ResourceRequirements,
    Volume,
    VolumeInfo,
    VolumeMount,
    WorkloadSpec,
    WorkloadStatus,
)
from .placement import placement

__all__ = [
    "SERVICE_LABEL",
    "RUNTIME_CLASSES",
    "EnvVar",
    "InitContainer",
    "LabelSelector",
    "LocalRuntime",
    "Phase",
    "Probe",
    "ResourceRequirements",
    "Runtime",
    "RuntimeBackendError",
    "RuntimeSettings",
    "Volume",
    "VolumeInfo",
    "VolumeMount",
    "VolumeNotFound",
    "WorkloadNotFound",
    "WorkloadSpec",
    "WorkloadStatus",
    "get_runtime",
    "register_runtime",
    "parse_selector",
    "placement",
]
