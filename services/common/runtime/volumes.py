"""Local volumes: one directory per (namespace, claim) under the runtime's state directory.

Layout: ``<root>/<namespace>/<claim>/volume.json`` (metadata) and ``.../data/`` (what the
workload sees at its ``mountPath``). The data directory is created before the metadata file,
so a volume that is listed always has its data directory.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from .errors import VolumeNotFound
from .labels import LabelSelector, parse_selector
from .models import VolumeInfo, check_name, check_namespace

META = "volume.json"


class VolumeStore:
    """Synchronous file operations behind LocalRuntime's volume methods (all are quick)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, namespace: str, name: str) -> Path:
        return self.root / check_namespace(namespace) / check_name(name, "claimName")

    def create(
        self, namespace: str, name: str, size: str | None, labels: Mapping[str, str] | None
    ) -> VolumeInfo:
        vdir = self._dir(namespace, name)
        if (vdir / META).exists():
            return self._info(namespace, name, vdir)
        (vdir / "data").mkdir(parents=True, exist_ok=True)
        meta = {"size": size, "labels": dict(labels or {}), "createdAt": time.time()}
        # Creators may race (two services, or two threads of one): each writes a file of its
        # own, and the first to link it in place makes the volume; the others find it made.
        tmp = vdir / f".{META}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(meta))
        try:
            os.link(tmp, vdir / META)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return self._info(namespace, name, vdir)

    def delete(self, namespace: str, name: str) -> None:
        vdir = self._dir(namespace, name)
        # Remove the metadata first: a half-deleted volume is then simply absent.
        (vdir / META).unlink(missing_ok=True)
        shutil.rmtree(vdir, ignore_errors=True)

    def resolve(self, namespace: str, name: str) -> Path:
        vdir = self._dir(namespace, name)
        if not (vdir / META).exists():
            raise VolumeNotFound(namespace, name)
        return vdir / "data"

    def size(self, namespace: str, name: str) -> str | None:
        """The claim's requested size (``spec.resources.requests.storage``), if it has one."""
        meta = json.loads((self._dir(namespace, name) / META).read_text())
        size = meta.get("size")
        return str(size) if size else None

    def list(self, namespace: str | None, selector: LabelSelector) -> list[VolumeInfo]:
        match = parse_selector(selector)
        namespaces = (
            [namespace]
            if namespace
            else sorted(p.name for p in self.root.iterdir() if p.is_dir())
            if self.root.exists()
            else []
        )
        found: list[VolumeInfo] = []
        for ns in namespaces:
            nsdir = self.root / ns
            if not nsdir.is_dir():
                continue
            for vdir in sorted(nsdir.iterdir()):
                if (vdir / META).exists():
                    info = self._info(ns, vdir.name, vdir)
                    if match(info.labels):
                        found.append(info)
        return found

    def is_inside(self, path: Path) -> bool:
        """True if path (resolved) lies inside some volume's data directory."""
        try:
            rel = path.resolve().relative_to(self.root.resolve())
        except ValueError:
            return False
        parts = rel.parts
        return (
            len(parts) >= 3
            and parts[2] == "data"
            and (self.root / parts[0] / parts[1] / META).exists()
        )

    @staticmethod
    def _info(namespace: str, name: str, vdir: Path) -> VolumeInfo:
        meta = json.loads((vdir / META).read_text())
        created = meta.get("createdAt")
        return VolumeInfo(
            namespace=namespace,
            name=name,
            size=meta.get("size"),
            labels=meta.get("labels") or {},
            created_at=datetime.fromtimestamp(created, UTC) if created else None,
        )
