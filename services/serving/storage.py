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

``s3://<platform bucket>/<key>`` and ``http(s)://<host>/<file>``
    Downloaded by the serving service into the namespace's model cache volume
    (:mod:`services.serving.modelcache`); the server gets the cached copy, the same way.
    An ``s3://`` key must lie in one of the namespace's areas of the platform's bucket.
``s3://<bucket>/<key>`` with ``spec.predictor.serviceAccountName``
    From the endpoint and with the keys of the ServiceAccount's Secret
    (:mod:`services.serving.credentials`), into the same cache.

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
from urllib.parse import urlsplit

from services.common.errors import Cause
from services.common.fetch import AllowedHosts, address_refusal
from services.common.objectstore import parse_s3_uri
from services.common.resources.names import check_name
from services.common.runtime import Runtime, VolumeNotFound
from services.serving.credentials import S3Credentials
from services.serving.modelcache import (
    ModelCache,
    ModelPending,
    ModelSourceError,
    s3_tenancy_problem,
)

MODEL_MOUNT = "/mnt/models"
SOURCE_VOLUME = "kserve-pvc-source"
PVC_SCHEME, FILE_SCHEME = "pvc://", "file://"
DOWNLOAD_SCHEMES = ("s3://", "http://", "https://")
S3_ANNOTATION_PREFIXES = ("serving.kserve.io/s3-", "serving.kubeflow.org/s3-")
ANNOTATIONS_ON_SECRET = (
    "KServe reads the serving.kserve.io/s3-* annotations from the Secret (or the "
    "ServiceAccount) named through spec.predictor.serviceAccountName, not from the "
    "InferenceService: put them there"
)
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


class StoragePending(StorageError):
    """The model is still being downloaded into the cache; not a failure."""


async def cached_storage(
    models: ModelCache | None,
    namespace: str,
    uri: str,
    pin: str,
    credentials: S3Credentials | None = None,
) -> Storage:
    """The read-only mount of a downloaded model's cache directory; StoragePending while it
    downloads, StorageError when it cannot be had."""
    if models is None:
        raise StorageError(f"storageUri {uri!r}: this service downloads no models")
    try:
        cached = await models.resolve(namespace, uri, pin, credentials)
    except ModelPending as exc:
        raise StoragePending(str(exc)) from None
    except ModelSourceError as exc:
        raise StorageError(str(exc)) from None
    volume = {
        "name": SOURCE_VOLUME,
        "persistentVolumeClaim": {"claimName": cached.claim, "readOnly": True},
    }
    mount = {
        "name": SOURCE_VOLUME,
        "mountPath": MODEL_MOUNT,
        "readOnly": True,
        "subPath": cached.sub_path,
    }
    model_dir = PurePosixPath(MODEL_MOUNT, *([cached.file] if cached.file else []))
    return Storage(str(model_dir), [volume], [mount])


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


async def resolve_storage(
    runtime: Runtime,
    namespace: str,
    uri: str,
    models: ModelCache | None = None,
    pin: str = "",
    credentials: S3Credentials | None = None,
) -> Storage:
    """The read-only mount of the model's directory, and where the model is inside it.

    ``s3://`` and ``http(s)://`` models come from ``models``' cache (``pin``: the revision's
    spec digest, so its replicas serve the same download; ``credentials``: an ``s3://``
    model's other endpoint and keys, from the ServiceAccount's Secret)."""
    if uri.startswith(DOWNLOAD_SCHEMES):
        s3 = credentials if uri.startswith("s3://") else None
        return await cached_storage(models, namespace, uri, pin, s3)
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


def check_download_uris(
    new: dict[str, Any], bucket: str | None, allowed: AllowedHosts
) -> list[Cause]:
    """Admission of ``s3://`` and ``http(s)://`` storage URIs, which need the settings.

    Without ``spec.predictor.serviceAccountName`` an ``s3://`` bucket is the platform's and
    the key in the namespace's areas; with one, the Secret says where the bucket is, which
    the download checks (it may be missing yet: that is a status, not a 422). S3
    annotations belong on the Secret, not here. An http host given as an address is a
    public one.

    The download checks all of it again (and resolves host names): a stored object predates
    later settings."""
    namespace = new["metadata"]["namespace"]
    predictor = (new.get("spec") or {}).get("predictor") or {}
    annotations = (new.get("metadata") or {}).get("annotations") or {}
    causes: list[Cause] = []
    s3_keys = sorted(k for k in annotations if k.startswith(S3_ANNOTATION_PREFIXES))
    if s3_keys and any(u.startswith("s3://") for u in storage_uris(new).values()):
        causes.append(
            Cause(
                f"metadata.annotations[{s3_keys[0]}]",
                ANNOTATIONS_ON_SECRET,
                "FieldValueNotSupported",
            )
        )
    account = predictor.get("serviceAccountName")
    if account:
        causes += check_name(account, "spec.predictor.serviceAccountName")
    for field, uri in storage_uris(new).items():
        if uri.startswith("s3://"):
            problem = (
                s3_tenancy_problem(uri, namespace, bucket) if not account else _s3_uri_problem(uri)
            )
            if problem is not None:
                causes.append(Cause(field, problem, "FieldValueForbidden"))
        elif uri.startswith(("http://", "https://")):
            parts = urlsplit(uri)
            host = parts.hostname or ""
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
                why = address_refusal(host)
            except ValueError:
                continue  # a name (or a bad port, which the download reports): checked then
            if why is not None and not allowed.allows(host, port):
                causes.append(
                    Cause(
                        field,
                        f"{host} is {why}: models are not downloaded from the platform's own "
                        "network (an operator may allow a host with "
                        "SHIPYARD_MODEL_DOWNLOAD_ALLOWED_HOSTS)",
                        "FieldValueForbidden",
                    )
                )
    return causes


def _s3_uri_problem(uri: str) -> str | None:
    """What is wrong with an ``s3://`` URI read with a Secret's credentials (None: fine)."""
    try:
        _, key = parse_s3_uri(uri)
    except ValueError as exc:
        return str(exc)
    if any(p in (".", "..") for p in key.split("/")):
        return "an object key with '.' or '..' segments is not allowed"
    return None
