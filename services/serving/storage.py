"""Where a model server finds its model, and how it gets there, on every runtime.

``storageUri`` schemes:

``pvc://<claim>/<path>``
    KServe's own scheme and the one to use for a volume: ``<path>`` inside the claim
    ``<claim>`` of the InferenceService's namespace. The claim is mounted read-only at
    ``/mnt/models`` (the place KServe gives a model) and the server reads
    ``/mnt/models/<path>``. Whether the claim exists is the runtime's to say (a revision
    waits for it); what is inside it only the workload sees.
``s3://<platform bucket>/<key>``, ``s3://<bucket>/<key>`` with ``serviceAccountName``, and
``http(s)://<host>/<file>``
    Made available in the platform's object store by the serving service
    (:mod:`services.serving.modelcache`), and downloaded by the model server's own start
    into an emptyDir at ``/mnt/models`` from presigned URLs in a plan that the runtime places
    in the workload (:mod:`services.serving.modelserver.initializer`, KServe's storage
    initializer; a ServingRuntime's own server gets it as an init container of its workload
    instead, :mod:`services.serving.servers`). An ``s3://`` key without credentials must lie
    in one of the namespace's areas of the platform's bucket.
``file://<path>``
    Refused (422 at admission; a failed revision for an object stored before): a path on
    some host means nothing to a model server that runs in its own sandbox or pod. KServe
    users name a volume with ``pvc://<claim>/<path>``.

No path inside a claim is checked here for symbolic links: that would need the volume's host
path, which the service never has. It needs no check either: the model server resolves the
path inside its own sandbox or pod, where a link can only lead to what that workload already
sees (its own mounts and a read-only system), never to the host or another namespace's
volume. The runtime still refuses links in a mount's ``subPath``, where it resolves them
itself on the host (docs/security.md).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from services.common.errors import Cause
from services.common.fetch import AllowedHosts, address_refusal
from services.common.objectstore import parse_s3_uri
from services.common.resources.names import check_name
from services.common.runtime.models import FILES_MAX_BYTES
from services.serving.credentials import S3Credentials
from services.serving.modelcache import (
    ModelCache,
    ModelPending,
    ModelSourceError,
    s3_tenancy_problem,
)
from services.serving.models import LEGACY_BLOCKS

MODEL_MOUNT = "/mnt/models"
SOURCE_VOLUME = "kserve-pvc-source"
#: KServe's name for the emptyDir its storage initializer fills.
PROVISION_VOLUME = "kserve-provision-location"
#: Where the storage initializer's plan is placed in the workload (read-only).
STORAGE_PLAN = "/var/run/shipyard/model/storage-plan.json"
#: How long a plan's presigned URLs work: a server (or a restarted one whose emptyDir was
#: lost) must start within it. SigV4 allows at most 7 days.
PLAN_URL_TTL = 7 * 24 * 3600
PVC_SCHEME, FILE_SCHEME = "pvc://", "file://"
DOWNLOAD_SCHEMES = ("s3://", "http://", "https://")
S3_ANNOTATION_PREFIXES = ("serving.kserve.io/s3-", "serving.kubeflow.org/s3-")
ANNOTATIONS_ON_SECRET = (
    "KServe reads the serving.kserve.io/s3-* annotations from the Secret (or the "
    "ServiceAccount) named through spec.predictor.serviceAccountName, not from the "
    "InferenceService: put them there"
)
USE_PVC = "a model is read from a PersistentVolumeClaim of the namespace: use pvc://<claim>/<path>"
FILE_REFUSAL = (
    "file:// names a path on a host, which a model server (in its own sandbox or pod) never "
    f"sees; {USE_PVC}"
)


class StorageError(Exception):
    """The storageUri cannot be served; the message says why."""


class StoragePending(StorageError):
    """The model is still being made available in the store; not a failure."""


@dataclass(frozen=True)
class ModelSource:
    """A path inside a claim of the InferenceService's namespace (``""``: the whole claim)."""

    claim: str
    path: str


@dataclass
class Storage:
    """What the model server is given: its model directory, the volume behind it, and the
    storage initializer's plan (``files``, and ``plan``: its path, for ``--storage-plan``)."""

    model_dir: str
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    plan: str | None = None


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


def claim_storage(uri: str) -> Storage:
    """The read-only mount of a ``pvc://`` model's claim, and the model's path in it."""
    if uri.startswith(FILE_SCHEME):
        raise StorageError(f"storageUri {uri!r}: {FILE_REFUSAL}")
    if not uri.startswith(PVC_SCHEME):
        raise StorageError(f"storageUri {uri!r}: {USE_PVC}")
    source = parse_pvc_uri(uri)
    volume = {
        "name": SOURCE_VOLUME,
        "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True},
    }
    mount = {"name": SOURCE_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": True}
    model_dir = PurePosixPath(MODEL_MOUNT, *[p for p in source.path.split("/") if p])
    return Storage(str(model_dir), [volume], [mount])


async def downloaded_storage(
    models: ModelCache | None,
    namespace: str,
    uri: str,
    pin: str,
    credentials: S3Credentials | None = None,
    renew: bool = False,
) -> Storage:
    """An emptyDir at ``/mnt/models`` and the plan that fills it; StoragePending while the
    model is made available, StorageError when it cannot be had."""
    if models is None:
        raise StorageError(f"storageUri {uri!r}: this service downloads no models")
    try:
        stored = await models.resolve(namespace, uri, pin, credentials, renew=renew)
        plan = await models.plan(stored, MODEL_MOUNT, PLAN_URL_TTL)
    except ModelPending as exc:
        raise StoragePending(str(exc)) from None
    except ModelSourceError as exc:
        raise StorageError(str(exc)) from None
    text = json.dumps(plan, separators=(",", ":"))
    if len(text.encode()) > FILES_MAX_BYTES:
        raise StorageError(
            f"storageUri {uri!r}: its {len(stored.objects)} objects are too many to hand to a "
            f"model server (a plan of at most {FILES_MAX_BYTES} bytes); pack the model into "
            "one archive (.tar.gz or .zip), which is unpacked where it is served"
        )
    volume = {"name": PROVISION_VOLUME, "emptyDir": {}}
    mount = {"name": PROVISION_VOLUME, "mountPath": MODEL_MOUNT}
    model_dir = PurePosixPath(MODEL_MOUNT, *([stored.file] if stored.file else []))
    return Storage(str(model_dir), [volume], [mount], {STORAGE_PLAN: text}, STORAGE_PLAN)


async def resolve_storage(
    namespace: str,
    uri: str,
    models: ModelCache | None = None,
    pin: str = "",
    credentials: S3Credentials | None = None,
    renew: bool = False,
) -> Storage:
    """What the model server needs to find the model of ``uri``.

    ``s3://`` and ``http(s)://`` models come from ``models`` (``pin``: the revision's spec
    digest, so its replicas serve the same objects; ``credentials``: an ``s3://`` model's
    other endpoint and keys, from the ServiceAccount's Secret; ``renew``: the revision has
    no server running, see :meth:`ModelCache.resolve`)."""
    if uri.startswith(DOWNLOAD_SCHEMES):
        s3 = credentials if uri.startswith("s3://") else None
        return await downloaded_storage(models, namespace, uri, pin, s3, renew)
    return claim_storage(uri)


def storage_uris(isvc: dict[str, Any]) -> dict[str, str]:
    """The model's storageUri by field path (none for custom containers)."""
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    return {
        f"spec.predictor.{key}.storageUri": predictor[key]["storageUri"]
        for key in ("model", *LEGACY_BLOCKS)
        if isinstance(predictor.get(key), dict) and predictor[key].get("storageUri")
    }


def check_file_uris(new: dict[str, Any], current: dict[str, Any] | None) -> list[Cause]:
    """Admission: a new or changed ``file://`` storageUri is refused (422) with what to use
    instead. An unchanged one (stored before) stays, so the object can still be edited and
    deleted; its revision fails with the same message."""
    before = storage_uris(current) if current is not None else {}
    return [
        Cause(field, f"storageUri {uri!r}: {FILE_REFUSAL}", "FieldValueForbidden")
        for field, uri in storage_uris(new).items()
        if uri.startswith(FILE_SCHEME) and before.get(field) != uri
    ]


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
