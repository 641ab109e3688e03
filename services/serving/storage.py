"""Where a model server finds its model: always a PersistentVolumeClaim of its own namespace.

``storageUri`` schemes the local runtime serves:

``pvc://<claim>/<path>``
    KServe's own scheme and the one to use: ``<path>`` inside the claim ``<claim>`` of the
    InferenceService's namespace.
``file://<absolute path>``
    An alias kept for models written straight into a volume's directory on this host: the
    path must lie inside one of the namespace's *own* volumes (as the runtime resolves them,
    ``Runtime.resolve_volume``), and then means exactly ``pvc://<that claim>/<the rest>``.
    Any other path (``/etc``, the platform's state directory, another namespace's volume) is
    refused: a model server never sees the host, only its namespace's data (issue 10).

Either way the server gets the claim mounted read-only with a ``subPath`` (the model's
directory) at ``/mnt/models``, the place KServe gives a model. Before that, every component of
the path inside the claim is checked with ``lstat``: a symbolic link is refused, because a
link planted in a claim (by any job of the namespace) could lead the mount anywhere on the
host. The runtime refuses symbolic links in ``subPath`` too, at mount time; this check is the
one that gives the InferenceService a status that says why.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from services.common.errors import Cause
from services.common.runtime import Runtime, VolumeNotFound

MODEL_MOUNT = "/mnt/models"
SOURCE_VOLUME = "kserve-pvc-source"
PVC_SCHEME, FILE_SCHEME = "pvc://", "file://"
USE_PVC = "a model is read from a PersistentVolumeClaim of the namespace: use pvc://<claim>/<path>"


class StorageError(Exception):
    """The storageUri cannot be served; the message says why."""


@dataclass(frozen=True)
class ModelSource:
    """A path inside a claim of the InferenceService's namespace (``""``: the whole claim)."""

    claim: str
    path: str


@dataclass
class Storage:
    """What the model server is given: its model directory, and the volume behind it."""

    model_dir: str
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]


def _relative_parts(path: str, uri: str) -> tuple[str, ...]:
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if ".." in parts:
        raise StorageError(f"storageUri {uri!r}: '..' is not allowed")
    return parts


def parse_pvc_uri(uri: str) -> ModelSource:
    """``pvc://<claim>/<path>`` as a ModelSource; StorageError if it is not one."""
    claim, _, sub = uri.removeprefix(PVC_SCHEME).partition("/")
    if not claim:
        raise StorageError(f"storageUri {uri!r}: pvc:// needs a claim name (pvc://<claim>/<path>)")
    return ModelSource(claim, "/".join(_relative_parts(sub, uri)))


async def file_source(runtime: Runtime, namespace: str, uri: str) -> ModelSource:
    """The claim of ``namespace`` that a ``file://`` URI's path lies in; StorageError if none.

    The comparison is lexical (nothing on the path is followed here); links inside the claim
    are the business of :func:`check_source`.
    """
    raw = uri.removeprefix(FILE_SCHEME)
    if not raw.startswith("/"):
        raise StorageError(f"storageUri {uri!r}: file:// needs an absolute path")
    parts = _relative_parts(raw, uri)
    target = PurePosixPath("/", *parts)
    for volume in await runtime.list_volumes(namespace):
        try:
            root = await runtime.resolve_volume(namespace, volume.name)
        except (VolumeNotFound, ValueError):
            continue
        real = await asyncio.to_thread(os.path.realpath, root)
        for base in {PurePosixPath(root), PurePosixPath(real)}:
            if target == base or base in target.parents:
                inside = target.relative_to(base).parts
                return ModelSource(volume.name, "/".join(inside))
    raise StorageError(
        f"storageUri {uri!r}: not inside a volume of namespace {namespace!r}; {USE_PVC}"
    )


async def model_source(runtime: Runtime, namespace: str, uri: str) -> ModelSource:
    if uri.startswith(PVC_SCHEME):
        return parse_pvc_uri(uri)
    if uri.startswith(FILE_SCHEME):
        return await file_source(runtime, namespace, uri)
    raise StorageError(f"storageUri {uri!r}: only pvc:// (and file:// inside one) are served")


async def check_source(runtime: Runtime, namespace: str, source: ModelSource) -> int:
    """How many leading components of ``source.path`` are directories, each checked not to
    be a symbolic link (StorageError); -1 when the claim does not exist (yet)."""
    try:
        root = await runtime.resolve_volume(namespace, source.claim)
    except (VolumeNotFound, ValueError):
        return -1
    return await asyncio.to_thread(_directories_without_links, Path(root), source)


def _directories_without_links(root: Path, source: ModelSource) -> int:
    parts = [p for p in source.path.split("/") if p]
    current = root
    for depth, part in enumerate(parts):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return depth  # the model server reports what is missing
        if stat.S_ISLNK(mode):
            inside = "/".join(parts[: depth + 1])
            raise StorageError(
                f"storageUri: {inside!r} in claim {source.claim!r} is a symbolic link; a model "
                "is read only from inside its claim, so links on its path are refused"
            )
        if not stat.S_ISDIR(mode):
            return depth  # a file: its directory is mounted
    return len(parts)


async def resolve_storage(runtime: Runtime, namespace: str, uri: str) -> Storage:
    """The read-only mount of the model's directory, and where the model is inside it."""
    source = await model_source(runtime, namespace, uri)
    parts = [p for p in source.path.split("/") if p]
    depth = await check_source(runtime, namespace, source)
    # Mount the deepest directory on the path that exists (the claim itself if it is missing:
    # the runtime then says the claim is not there); the rest is the model server's to find.
    mounted = parts[: max(depth, 0)]
    volume = {
        "name": SOURCE_VOLUME,
        "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True},
    }
    mount: dict[str, Any] = {"name": SOURCE_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": True}
    if mounted:
        mount["subPath"] = "/".join(mounted)
    model_dir = PurePosixPath(MODEL_MOUNT, *parts[len(mounted) :])
    return Storage(str(model_dir), [volume], [mount])


def storage_uris(isvc: dict[str, Any]) -> dict[str, str]:
    """The model's storageUri by field path (none for custom containers)."""
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    return {
        f"spec.predictor.{key}.storageUri": predictor[key]["storageUri"]
        for key in ("model", "sklearn")
        if isinstance(predictor.get(key), dict) and predictor[key].get("storageUri")
    }


async def check_file_uris(
    runtime: Runtime, new: dict[str, Any], current: dict[str, Any] | None
) -> list[Cause]:
    """Admission: a new or changed ``file://`` storageUri names a path inside one of the
    namespace's volumes (422 otherwise, at once). The controller checks again, links too, each
    time it starts a server: volumes and their contents change after admission."""
    before = storage_uris(current) if current is not None else {}
    namespace = new["metadata"]["namespace"]
    causes: list[Cause] = []
    for field, uri in storage_uris(new).items():
        if uri.startswith(FILE_SCHEME) and before.get(field) != uri:
            try:
                await file_source(runtime, namespace, uri)
            except StorageError as exc:
                causes.append(Cause(field, str(exc), "FieldValueForbidden"))
    return causes
