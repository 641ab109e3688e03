"""Where step artifacts live between steps: a pluggable store (local directory for now).

An artifact is a file or a directory under a key (``<ns>/<workflow-uid>/<node-id>/<name>``).
A future S3 store implements the same three operations.
"""

from __future__ import annotations

import abc
import os
import shutil
from pathlib import Path


class ArtifactStore(abc.ABC):
    """put/get/delete of files or directory trees by key."""

    @abc.abstractmethod
    def put(self, key: str, source: Path) -> None:
        """Take ``source`` (file or directory) into the store under ``key``."""

    @abc.abstractmethod
    def get(self, key: str, dest: Path) -> None:
        """Copy the artifact to ``dest``; raises FileNotFoundError."""

    @abc.abstractmethod
    def read(self, key: str, limit: int = 32 * 1024 * 1024) -> bytes:
        """The artifact's bytes (a file artifact) for API downloads."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Forget every artifact under ``prefix`` (a workflow's, on deletion)."""


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not str(path).startswith(str(self.root) + os.sep):
            raise ValueError(f"artifact key {key!r} escapes the store")
        return path

    def put(self, key: str, source: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        shutil.move(str(source), dest)

    def get(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.exists():
            raise FileNotFoundError(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, dest)

    def read(self, key: str, limit: int = 32 * 1024 * 1024) -> bytes:
        path = self._path(key)
        if path.is_dir():
            raise IsADirectoryError(key)
        with open(path, "rb") as f:
            return f.read(limit)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)
