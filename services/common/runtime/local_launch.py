"""Parts of a local workload's launch plan (``launch.json``) that follow from its spec alone.

The supervisor (services/common/runtime/supervision) reads them: the port a server listens on
inside its sandbox, the init steps it runs before the command, and the readiness probe. Kept
apart from local.py, which adds what depends on the host (mounts, uids, cgroups, egress).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .expansion import expand
from .models import InitContainer, Probe, WorkloadSpec

#: The port a server listens on inside its own network namespace, unless it declares one.
DEFAULT_SERVER_PORT = 8080


def container_port(spec: WorkloadSpec) -> int:
    """The server's port inside its sandbox: its first declared containerPort, else 8080."""
    for port in spec.ports:
        if port.container_port:
            return int(port.container_port)
    return DEFAULT_SERVER_PORT


def init_step(step: InitContainer, env: Mapping[str, str]) -> dict[str, Any]:
    """An init container's launch: its argv and environment (the workload's, then its own;
    ``$(VAR)`` expanded from them as Kubernetes does). The supervisor runs the steps first,
    each to success, in the workload's own sandbox (``Supervisor.initialize``)."""
    own = dict(env)
    for var in step.env:
        own[var.name] = expand(var.value, own)
    argv = [expand(a, own) for a in [*step.command, *step.args]]
    return {"name": step.name, "argv": argv, "env": own}


def probe_plan(probe: Probe | None) -> dict[str, Any] | None:
    """The readiness probe as the supervisor's loop reads it (None: ready once it runs)."""
    if probe is None:
        return None
    return {
        "path": probe.http_get.path if probe.http_get else None,
        "initialDelay": probe.initial_delay_seconds,
        "period": probe.period_seconds,
        "timeout": probe.timeout_seconds,
        "failureThreshold": probe.failure_threshold,
    }
