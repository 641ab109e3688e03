"""A local workload's identity files: its service-account token, namespace and the platform
CA's certificate, in the in-cluster layout (``/var/run/secrets/kubernetes.io/serviceaccount``),
and the same directory where kfp looks for its pipelines token (incluster.py).

The directory is the workload's own (``<workload>/secrets``), read-only inside; the token is
rewritten in place (atomically) while the workload runs, as the kubelet rotates projected
tokens.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .incluster import PIPELINES_TOKEN_DIR, InClusterAPI

#: Where a workload finds its token, as in a Kubernetes pod.
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class WorkloadIdentity:
    """Writes identity directories; ``issue(namespace, binding)`` mints a token bound to one
    workload run, ``in_cluster`` (if any) adds ``ca.crt`` and the in-cluster variables."""

    def __init__(
        self, issue: Callable[[str, str], str], in_cluster: InClusterAPI | None = None
    ) -> None:
        self.issue = issue
        self.in_cluster = in_cluster

    def env(self) -> dict[str, str]:
        """The variables that name the identity (and, in-cluster, the API server)."""
        env = {"SHIPYARD_TOKEN_FILE": f"{TOKEN_DIR}/token"}
        if self.in_cluster is not None:
            env.update(self.in_cluster.env())
        return env

    def mounts(
        self, secrets: Path, namespace: str, binding: str, uid: int | None
    ) -> list[dict[str, Any]]:
        """Write the token, namespace (and CA certificate) files into ``secrets``; return its
        read-only mounts."""
        secrets.mkdir(exist_ok=True)
        self.write_token(secrets, namespace, binding, uid)
        (secrets / "namespace").write_text(namespace)
        files = ["namespace"]
        if self.in_cluster is not None:  # the CA's certificate, never its key
            (secrets / "ca.crt").write_bytes(self.in_cluster.ca_pem)
            files.append("ca.crt")
        if uid is not None:
            for name in files:
                os.chown(secrets / name, uid, uid)
            os.chown(secrets, uid, uid)
        # Read-only for the workload's uid; root refreshes it all the same. An unprivileged
        # platform shares its uid with the workload and must keep writing here.
        secrets.chmod(0o500 if uid is not None else 0o700)
        mount = {"src": str(secrets), "dst": TOKEN_DIR, "ro": True}
        if self.in_cluster is None:
            return [mount]
        return [mount, {**mount, "dst": PIPELINES_TOKEN_DIR}]

    def write_token(self, secrets: Path, namespace: str, binding: str, uid: int | None) -> None:
        """(Re)write the workload's token file atomically: readers see the old or the new."""
        token = self.issue(namespace, binding)
        tmp = secrets / f".token.{uuid.uuid4().hex[:8]}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        if uid is not None:
            os.chown(tmp, uid, uid)
        os.replace(tmp, secrets / "token")
