"""The real ``kubectl`` for the gateway's tests: one runner and the seed manifests they apply.

``Kubectl`` runs the binary with a HOME and cache of its own, either through a kubeconfig
(as ``shipyard kubeconfig`` writes it) or, without one, with ``--server`` and ``-n`` on each
command line (single-user mode: no credential).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

SEED = Path(__file__).resolve().parents[1] / "seed"


def kubectl_binary() -> str:
    """The ``kubectl`` on PATH; without one the test fails (it is a required tool)."""
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is required (Debian package `kubectl`; `make test` installs it)")
    return found


class Kubectl:
    """``kubectl`` with its own HOME and cache, through ``kubeconfig`` or, without one,
    ``--server=server`` and ``-n namespace`` on every command line."""

    def __init__(
        self,
        binary: str,
        home: Path,
        *,
        kubeconfig: Path | None = None,
        server: str | None = None,
        namespace: str | None = None,
    ) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig or home / "no-kubeconfig"
        self.env = dict(os.environ, HOME=str(home), KUBECONFIG=str(self.kubeconfig))
        self.env.pop("KUBE_EDITOR", None)
        self.cache = home / "kube-cache"
        self.flags = [f"--server={server}"] if server else []
        if namespace:
            self.flags += ["-n", namespace]

    def argv(self, *args: str) -> list[str]:
        return [self.binary, f"--cache-dir={self.cache}", *self.flags, *args]

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        ok: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl args``; with ``ok`` it must exit 0, else the test fails with its output."""
        done = subprocess.run(
            self.argv(*args),
            input=stdin,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=90,
        )
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done


def seed_pvc(name: str, storage: str = "128Mi", labels: dict[str, str] | None = None) -> str:
    """The seed's PersistentVolumeClaim (tests/seed/pvc.yaml) under ``name``, as YAML."""
    pvc = yaml.safe_load((SEED / "pvc.yaml").read_text())
    pvc["metadata"]["name"] = name
    pvc["spec"]["resources"]["requests"]["storage"] = storage
    if labels:
        pvc["metadata"]["labels"] = labels
    return yaml.safe_dump(pvc)
