"""The local runtime's namespace quotas: each profile's ``kf-resource-quota`` as a file, and
the lock that makes admitting a workload against it atomic across the platform's services.

Every service that starts workloads has its own ``LocalRuntime`` over one state directory, so
the namespace's usage is what all of them have recorded: the lock is a file lock
(``flock``), held while the usage is read and the new workload's spec is written, so the next
admission, in whichever process, counts it. Without a quota file nothing is locked or read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from .local_files import read_json, write_json_atomic


class QuotaFiles:
    """``<runtime>/quotas/<namespace>.json`` (the hard map) and ``.lock`` beside it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def set(self, namespace: str, hard: Mapping[str, str] | None) -> None:
        """Record the namespace's quota, or remove it (None or empty)."""
        path = self.root / f"{namespace}.json"
        if hard:
            self.root.mkdir(mode=0o700, exist_ok=True)
            write_json_atomic(path, {"hard": dict(hard)})
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def hard(self, namespace: str) -> dict[str, str]:
        state = read_json(self.root / f"{namespace}.json") or {}
        hard = state.get("hard") or {}
        return {str(k): str(v) for k, v in hard.items()}

    @contextlib.contextmanager
    def admitting(self, namespace: str) -> Iterator[dict[str, str]]:
        """The namespace's quota, under its lock while the caller admits a workload; {} (and
        no lock) when it has none."""
        if not (self.root / f"{namespace}.json").exists():
            yield {}
            return
        fd = os.open(self.root / f"{namespace}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for one directory scan: milliseconds
            yield self.hard(namespace)
        finally:
            os.close(fd)
