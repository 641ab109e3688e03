"""Choosing the runtime implementation by configuration (``SHIPYARD_RUNTIME``)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic_settings import BaseSettings, SettingsConfigDict

from ..settings import DEFAULT_STATE_DIR
from .base import Runtime
from .incluster import InClusterAPI

#: Where the gateway serves the API over TLS for workloads unless SHIPYARD_GATEWAY_TLS_PORT
#: says otherwise (gateway/settings.py reads the same variable).
DEFAULT_GATEWAY_TLS_PORT = 8443

log = logging.getLogger(__name__)

#: Implementations by name; values are "module:Class" so unused backends are never imported
#: (kubernetes-asyncio is heavy and absent from the quickstart). A third runtime joins with
#: :func:`register_runtime`.
RUNTIME_CLASSES: dict[str, str] = {
    "local": "services.common.runtime.local:LocalRuntime",
    "kubernetes": "services.common.runtime.kubernetes:KubernetesRuntime",
}


def register_runtime(name: str, target: str) -> None:
    """Make ``SHIPYARD_RUNTIME=name`` build ``target`` ("package.module:Class", a Runtime
    whose constructor takes the service's settings and keyword overrides)."""
    if ":" not in target:
        raise ValueError(f"runtime {name!r}: target {target!r} must be 'module:Class'")
    RUNTIME_CLASSES[name] = target


class RuntimeSettings(BaseSettings):
    """``SHIPYARD_RUNTIME``, ``SHIPYARD_STATE_DIR``, ``SHIPYARD_BWRAP_PATH``,
    ``SHIPYARD_GATEWAY_TLS_PORT``."""

    model_config = SettingsConfigDict(env_prefix="SHIPYARD_", extra="ignore")

    runtime: str = "local"
    state_dir: Path = DEFAULT_STATE_DIR
    bwrap_path: str = "bwrap"
    #: The gateway's TLS listener for workloads (the in-cluster API); 0: none.
    gateway_tls_port: int = DEFAULT_GATEWAY_TLS_PORT


def get_runtime(settings: Any = None, **overrides: Any) -> Runtime:
    """Build the configured Runtime.

    ``settings`` may be a service's settings object: its ``runtime``, ``state_dir`` and
    ``bwrap_path`` attributes win over the environment when present.
    """
    config = RuntimeSettings()
    kind = getattr(settings, "runtime", None) or config.runtime
    state_dir = getattr(settings, "state_dir", None) or config.state_dir
    bwrap_path = getattr(settings, "bwrap_path", None) or config.bwrap_path
    try:
        module_name, class_name = RUNTIME_CLASSES[kind].split(":")
    except KeyError:
        raise ValueError(
            f"SHIPYARD_RUNTIME={kind!r}: must be one of {', '.join(RUNTIME_CLASSES)}"
        ) from None
    cls = getattr(importlib.import_module(module_name), class_name)
    if kind == "local":
        overrides.setdefault("workload_env", workload_identity(settings))
        overrides.setdefault("workload_tokens", workload_tokens(settings))
        overrides.setdefault("store_endpoint", getattr(settings, "s3_endpoint", "") or None)
        overrides.setdefault("in_cluster", workload_in_cluster(settings, config))
        return cls(state_dir, bwrap_path=bwrap_path, **overrides)  # type: ignore[no-any-return]
    return cls(settings, **overrides)  # type: ignore[no-any-return]


#: Workload tokens are short-lived, like Kubernetes' projected tokens; the runtime rewrites
#: them in place well before they expire (see LocalRuntime.refresh_tokens).
WORKLOAD_TOKEN_TTL_SECONDS = 600


def workload_identity(settings: Any) -> Callable[[str], dict[str, str]] | None:
    """``SHIPYARD_URL`` and ``SHIPYARD_NAMESPACE`` for a workload's namespace.

    Only for a service's settings (which know the gateway URL); the ``shipyard`` CLI and
    Python client inside the workload pick both up as is. The token itself is a file
    (:func:`workload_tokens`), never an environment variable: it is refreshed in place.
    """
    if settings is None or not hasattr(settings, "serviceaccount_key_pem"):
        return None
    url = str(settings.gateway_url)

    def env(namespace: str) -> dict[str, str]:
        return {"SHIPYARD_URL": url, "SHIPYARD_NAMESPACE": namespace}

    return env


def workload_tokens(settings: Any) -> Callable[[str, str], str] | None:
    """``issue(namespace, binding)``: a service-account token bound to one workload run."""
    if settings is None or not hasattr(settings, "serviceaccount_key_pem"):
        return None
    from services.common.serviceaccounts import ServiceAccountTokens

    tokens = ServiceAccountTokens(settings.serviceaccount_key_pem(), WORKLOAD_TOKEN_TTL_SECONDS)
    service = str(getattr(settings, "service_name", "") or "")

    def issue(namespace: str, binding: str) -> str:
        return tokens.issue(namespace, binding=binding, service=service)

    return issue


def workload_in_cluster(settings: Any, config: RuntimeSettings) -> InClusterAPI | None:
    """Where workloads' in-cluster Kubernetes clients are relayed to (the gateway's TLS
    listener and HTTP port), with the platform CA's certificate for their ``ca.crt``.

    Only for a service's settings (they know the gateway); None without a TLS listener.
    """
    if settings is None or not hasattr(settings, "serviceaccount_key_pem"):
        return None
    tls_port = config.gateway_tls_port
    gateway = urlsplit(str(settings.gateway_url))
    if not tls_port or not gateway.hostname:
        return None
    from services.common.certs import read_ca_certificate

    keys = Path(settings.state_dir) / "keys"
    try:
        ca_pem = read_ca_certificate(keys)
    except OSError as exc:  # a read-only keys directory without the CA (a Secret mount)
        log.warning(
            "workloads get no in-cluster Kubernetes config: the platform CA (%s) cannot be "
            "read or made (%s); run `shipyard up --keys-only` where the keys are made",
            keys / "workload-ca.crt",
            exc,
        )
        return None
    return InClusterAPI(
        gateway_host=gateway.hostname,
        http_port=gateway.port or 80,
        tls_port=tls_port,
        ca_pem=ca_pem,
    )
