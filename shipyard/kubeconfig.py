"""A kubeconfig context for the gateway, so ``kubectl`` talks to shipyard (docs/kubectl.md).

``shipyard kubeconfig`` (and ``shipyard login --kubeconfig``) adds or updates one cluster, user
and context in the kubeconfig kubectl reads (``--kubeconfig``, else the first file in
``$KUBECONFIG``, else ``~/.kube/config``), leaving every other entry alone. kubectl sends
credentials over HTTPS only (client-go drops them for an ``http://`` server), so outside
single-user mode the cluster entry names the gateway's HTTPS URL (``--api-server``) and how to
trust it (``--certificate-authority``). The user's credential depends on how the gateway is
reached:

- after ``shipyard login`` (OIDC): an ``exec`` credential plugin, ``shipyard
  kubectl-credential``, which prints a ``client.authentication.k8s.io/v1`` ExecCredential with
  the stored ID token, refreshed with the stored refresh token when near expiry; kubectl runs
  it again once the token's ``expirationTimestamp`` has passed, so the context keeps working;
- with ``SHIPYARD_TOKEN`` set: that bearer token, written into the file;
- in single-user mode: no credential at all.
"""

from __future__ import annotations

import base64
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from services.common import safe_yaml
from shipyard import auth

EXEC_API_VERSION = "client.authentication.k8s.io/v1"


class KubeconfigError(Exception):
    """The kubeconfig cannot be read or written; the message is meant for the user."""


def default_path() -> Path:
    """Where kubectl looks first: the first entry of ``$KUBECONFIG``, else ``~/.kube/config``."""
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return Path(listed[0]) if listed else Path.home() / ".kube" / "config"


def context_name(server: str) -> str:
    """``shipyard-<host>-<port>``: one context per gateway."""
    parts = urlsplit(server)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"shipyard-{(parts.hostname or 'gateway').replace('.', '-')}-{port}"


def exec_user(server: str) -> dict[str, Any]:
    """The ``exec`` plugin entry: this Python running ``shipyard kubectl-credential``."""
    return {
        "exec": {
            "apiVersion": EXEC_API_VERSION,
            "command": sys.executable,
            "args": ["-m", "shipyard.cli", "--server", server.rstrip("/"), "kubectl-credential"],
            "interactiveMode": "Never",
            "provideClusterInfo": False,
        }
    }


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    try:
        data = safe_yaml.load(path.read_bytes()) or {}
    except (OSError, ValueError, yaml.YAMLError, safe_yaml.YamlError) as exc:
        raise KubeconfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise KubeconfigError(f"{path} is not a kubeconfig (not a mapping)")
    return data


def _upsert(entries: list[dict[str, Any]], name: str, key: str, value: dict[str, Any]) -> None:
    for entry in entries:
        if entry.get("name") == name:
            entry[key] = value
            return
    entries.append({"name": name, key: value})


def cluster_entry(
    server: str,
    certificate_authority: Path | None = None,
    insecure: bool = False,
    tls_server_name: str | None = None,
) -> dict[str, Any]:
    """The kubeconfig ``cluster``: the gateway's URL and how to trust its certificate
    (``tls_server_name``: the name to verify it for, when the URL's host is not on it)."""
    cluster: dict[str, Any] = {"server": server.rstrip("/")}
    if tls_server_name:
        cluster["tls-server-name"] = tls_server_name
    if certificate_authority is not None:
        try:
            pem = certificate_authority.read_bytes()
        except OSError as exc:
            raise KubeconfigError(f"cannot read {certificate_authority}: {exc}") from None
        cluster["certificate-authority-data"] = base64.b64encode(pem).decode()
    elif insecure:
        cluster["insecure-skip-tls-verify"] = True
    return cluster


def write_context(
    cluster: dict[str, Any],
    user: dict[str, Any],
    *,
    namespace: str,
    path: Path | None = None,
    name: str | None = None,
) -> tuple[Path, str]:
    """Add (or replace) the gateway's cluster, user and context, make it current; mode 0600."""
    path = path or default_path()
    name = name or context_name(cluster["server"])
    config = _load(path)
    config.setdefault("apiVersion", "v1")
    config.setdefault("kind", "Config")
    for section in ("clusters", "users", "contexts"):
        if not isinstance(config.get(section), list):
            config[section] = []
    _upsert(config["clusters"], name, "cluster", cluster)
    _upsert(config["users"], name, "user", user)
    context = {"cluster": name, "user": name, "namespace": namespace}
    _upsert(config["contexts"], name, "context", context)
    config["current-context"] = name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".shipyard-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config, fh, default_flow_style=False, sort_keys=False)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path, name


def user_for(server: str, token: str) -> dict[str, Any]:
    """The credential for ``server``: the exec plugin after ``shipyard login``, else the
    bearer ``token`` (``SHIPYARD_TOKEN``), else none (single-user mode)."""
    if auth.stored_entry(server) is not None:
        return exec_user(server)
    if token:
        return {"token": token}
    return {}


def exec_credential(server: str, token: str = "") -> dict[str, Any]:
    """The ExecCredential kubectl reads from ``shipyard kubectl-credential``.

    The stored login's ID token, refreshed when near expiry; its ``expirationTimestamp`` is
    set a refresh margin early, so kubectl asks again before the gateway would refuse it.
    """
    entry = auth.fresh_entry(server)
    status: dict[str, Any]
    if entry is not None:
        expires = float(entry.get("expires_at", 0)) - auth.REFRESH_MARGIN_SECONDS
        status = {"token": entry["id_token"]}
        if expires > time.time():
            status["expirationTimestamp"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)
            )
    elif token:
        status = {"token": token}
    else:
        raise KubeconfigError(
            f"no stored credentials for {server.rstrip('/')} (or they could not be refreshed): "
            f"run `shipyard --server {server.rstrip('/')} login`"
        )
    return {"apiVersion": EXEC_API_VERSION, "kind": "ExecCredential", "status": status}
