"""Models from ``s3://`` and ``http(s)://``: in the platform's object store, handed to the server
as presigned URLs.

KServe's way: a storage initializer puts the model into the pod before the server starts.
Here the serving service makes sure the model is in the platform's bucket and the model
server's own start downloads it (:mod:`services.serving.modelserver.initializer`) into an
emptyDir at ``/mnt/models``, from presigned GET URLs in a small plan (the workload's read-only
``files``). No volume is written by the service and no host path is involved, so this works
the same on every runtime; the workload reaches only the object store, with URLs for its own
model's objects and no keys.

Where the model is found:

- ``s3://<platform bucket>/<key>`` in one of the namespace's areas: **used where it is**. The
  service lists it (one object, else a prefix) and the plan names those objects; nothing is
  copied.
- ``http(s)://`` and ``s3://`` of another endpoint (credentials from a Secret,
  :mod:`services.serving.credentials`): **copied once per version** into the namespace's cache
  area of the platform's bucket, ``models/<ns>/.cache/<uri digest>/<version>/``. The service
  streams the bytes (SSRF-checked through :mod:`services.common.fetch`, the size limited; a
  failed upload leaves no object) and writes ``model.json`` (the manifest) last: a copy that
  was killed leaves nothing that looks complete, and an unchanged model is found again with
  one GET (a restart of the serving service, another replica of it, another revision).

The *version* is what the source says about its content, so a changed model is a new version
and an unchanged one is found again without a transfer:

- an ``s3://`` object: its key, ETag and size; a prefix: a digest over every listed key,
  ETag and size;
- an ``http(s)://`` file: its ``ETag``, else its ``Last-Modified`` (from a HEAD, or the GET's
  headers when HEAD is refused); a server that sends neither is treated as immutable and
  cached by URI alone.

A revision is *pinned* to what was found when it was made (``pin``, its spec digest): every
replica gets the same objects and ETags, and the initializer refuses an object that changed
since (a copy in the cache area never changes; a model used in place may be overwritten).

KServe's storage-initializer rules, as far as they go here: an ``s3://`` URI that names an
object is that single file; otherwise it is a prefix (a directory: ``s3://b/models/ns/iris``
means every object under ``models/ns/iris/``) with its sub-paths; a single file that is an
archive (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``) is unpacked, by the initializer inside the
workload with :mod:`.unpack`'s rules. An ``http(s)://`` URI is one file named by the last path
segment, archives unpacked, and the server's ``Content-Type`` must match
(``application/octet-stream`` for a plain file).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import mimetypes
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from services.common.fetch import (
    AddressRefused,
    AllowedHosts,
    FetchError,
    GuardedClient,
    checked_address,
)
from services.common.objectstore import (
    BucketMissing,
    CredentialsRefused,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    StoreUnreachable,
    in_namespace_area,
    namespace_prefixes,
    parse_s3_uri,
)

if TYPE_CHECKING:
    from services.serving.credentials import S3Credentials
from services.serving.unpack import CHUNK, SizeLimitExceeded, UnpackError, archive_kind, safe_parts

log = logging.getLogger(__name__)

#: The namespace's cache area in the platform's bucket: ``models/<ns>/.cache/``.
CACHE_DIR = ".cache"
MANIFEST = "model.json"
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
ZIP_CONTENT_TYPES = (
    "application/x-zip-compressed",
    "application/zip",
    "application/zip-compressed",
)
TAR_CONTENT_TYPES = (
    "application/x-tar",
    "application/x-gtar",
    "application/x-gzip",
    "application/gzip",
)
S3_SCHEME, HTTP_SCHEMES = "s3://", ("http://", "https://")
#: At most this many objects under one s3:// prefix.
MAX_OBJECTS = 10_000


class ModelSourceError(Exception):
    """The model cannot be fetched from its storageUri; the message says why."""


class ModelPending(Exception):
    """The model is being downloaded; the message says from where."""


@dataclass(frozen=True)
class DownloadPolicy:
    """Limits of every download (the ``SHIPYARD_MODEL_DOWNLOAD_*`` settings)."""

    max_bytes: int = 10 * 1024**3
    timeout_seconds: float = 3600.0
    allowed_hosts: AllowedHosts = AllowedHosts(frozenset())
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


@dataclass(frozen=True)
class ModelObject:
    """One object of a model in the platform's bucket, and where it goes in the model
    directory: ``path`` (relative), or, for an archive (``unpack`` ``"tar"`` or ``"zip"``),
    unpacked into the directory itself."""

    key: str
    size: int
    etag: str
    path: str | None = None
    unpack: str | None = None


@dataclass(frozen=True)
class StoredModel:
    """A complete model in the platform's bucket; ``file`` is the model's one file when the
    source was a single (not archived) file."""

    objects: tuple[ModelObject, ...]
    file: str | None
    version: str
    #: Used where the tenant keeps it (not a copy): it may be overwritten there.
    in_place: bool = False

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)


def uri_digest(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:32]


def _digest(*lines: str) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


def cache_prefix(namespace: str, cache_id: str, version: str) -> str:
    """Where the copy of ``cache_id`` (a URI, or ``"<endpoint> <uri>"``) at ``version`` lives
    in the platform's bucket."""
    return f"models/{namespace}/{CACHE_DIR}/{uri_digest(cache_id)}/{version}/"


def s3_tenancy_problem(uri: str, namespace: str, bucket: str | None) -> str | None:
    """Why namespace ``namespace`` may not read ``uri`` from the platform's store (or None)."""
    if bucket is None:
        return (
            "no object store is configured on this platform (SHIPYARD_S3_ENDPOINT), so s3:// "
            "storage URIs cannot be served"
        )
    try:
        got_bucket, key = parse_s3_uri(uri)
    except ValueError as exc:
        return str(exc)
    areas = ", ".join(f"s3://{bucket}/{p}" for p in namespace_prefixes(namespace))
    if got_bucket != bucket:
        return (
            f"bucket {got_bucket!r} is not the platform's bucket {bucket!r}: other buckets "
            "and endpoints need their own credentials, a Secret named by the ServiceAccount "
            "in spec.predictor.serviceAccountName (KServe's way); without one, namespace "
            f"{namespace!r} may use {areas}"
        )
    if not in_namespace_area(namespace, key.rstrip("/") or key):
        return f"{key!r} is outside namespace {namespace!r}'s areas; it may use {areas}"
    return None


def http_uri_problem(uri: str) -> str | None:
    """Why an ``http(s)://`` storageUri cannot name a model file (or None)."""
    parts = urlsplit(uri)
    if not parts.hostname:
        return "names no host"
    if parts.username or parts.password:
        return "credentials in the URL are not supported"
    if not PurePosixPath(unquote(parts.path)).name:
        return "names no file (KServe downloads one file, named by the URL's last segment)"
    return None


class ModelCache:
    """The models of remote storage URIs, in the platform's object store; see the module doc.

    ``objects`` opens the platform's store (``ServiceContext.objects``); ``bucket`` is its
    bucket (None: no store configured, and nothing is downloaded).
    """

    #: How long :meth:`resolve` waits for a new check or copy before it reports
    #: "downloading" (a model that is already there is usually found well within it).
    inline_wait = 1.0
    retry_min, retry_max = 5.0, 300.0

    def __init__(
        self,
        objects: Callable[[], Awaitable[ObjectStore]] | None,
        bucket: str | None,
        policy: DownloadPolicy | None = None,
        platform_endpoint: str | None = None,
    ) -> None:
        self.objects = objects
        self.bucket = bucket
        self.policy = policy or DownloadPolicy()
        #: The platform's own store: with a tenant's credentials, its bucket keeps the
        #: namespace-area rule.
        self.platform_endpoint = platform_endpoint
        self._tasks: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._ready: dict[tuple[str, str, str], StoredModel] = {}
        self._failed: dict[tuple[str, str, str], tuple[str, float, float]] = {}
        #: How many copies into the store (not cache hits, not models used in place) this
        #: process made: tests and metrics.
        self.downloads = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ for the controller
    async def resolve(
        self,
        namespace: str,
        uri: str,
        pin: str = "",
        credentials: S3Credentials | None = None,
        *,
        renew: bool = False,
    ) -> StoredModel:
        """The stored model, or ModelPending while it is checked or copied (in the
        background), or ModelSourceError with why the last attempt failed (retried after a
        back-off). ``pin`` (a revision's spec digest) keeps one answer per revision: its
        replicas all serve what was found when it was created in this process.
        ``credentials`` (an ``s3://`` URI's, from a Secret) name another S3 endpoint; a
        changed Secret is a fresh attempt.

        ``renew``: the revision has no server running (it starts again from zero), so no
        replica can differ from another: a model used in place is looked at again, and a
        changed one becomes the revision's answer (its old objects would be refused). A copy
        never changes, so it is kept."""
        if credentials is not None:
            pin = f"{pin}/{credentials.fingerprint()}"
        key = (namespace, uri, pin)
        if key in self._ready:
            if renew and self._ready[key].in_place:
                await self._renew(key, credentials)
            return self._ready[key]
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() < failed[1]:
            raise ModelSourceError(failed[0])
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(self._run(key, failed[2] if failed else 0.0, credentials))
            self._tasks[key] = task
        await asyncio.wait({task}, timeout=self.inline_wait)
        if key in self._ready:
            return self._ready[key]
        if task.done() and key in self._failed:
            raise ModelSourceError(self._failed[key][0])
        raise ModelPending(
            f"downloading the model from {uri} into namespace {namespace!r}'s model cache"
        )

    async def _renew(self, key: tuple[str, str, str], credentials: S3Credentials | None) -> None:
        namespace, uri, _ = key
        try:
            async with asyncio.timeout(self.inline_wait * 5):
                fresh = await self.fetch(namespace, uri, credentials)
        except Exception as exc:  # the pinned answer stands; its server says what is wrong
            log.warning("could not look at %s again (%s); keeping what was found", uri, exc)
            return
        if fresh.version != self._ready[key].version:
            log.info("the model at %s changed: servers started from now serve the new one", uri)
            self._ready[key] = fresh

    async def plan(self, model: StoredModel, dest: str, ttl: int) -> dict[str, Any]:
        """The storage initializer's plan for one server: presigned GETs of the model's
        objects (valid ``ttl`` seconds), where each goes below ``dest``, and the limits."""
        store = await self._platform()
        objects = []
        for o in model.objects:
            url = await store.presigned_get_url(o.key, ttl)
            entry: dict[str, Any] = {"url": url, "size": o.size, "etag": o.etag, "path": o.path}
            if o.unpack is not None:
                entry |= {"unpack": o.unpack, "name": PurePosixPath(o.key).name}
            objects.append(entry)
        digest = _digest(model.version, *(f"{o.key}\0{o.etag}\0{o.size}" for o in model.objects))
        return {
            "dest": dest,
            "maxBytes": self.policy.max_bytes,
            "digest": digest,
            "objects": objects,
        }

    async def _run(
        self,
        key: tuple[str, str, str],
        last_backoff: float,
        credentials: S3Credentials | None = None,
    ) -> None:
        namespace, uri, _ = key
        try:
            async with asyncio.timeout(self.policy.timeout_seconds):
                model = await self.fetch(namespace, uri, credentials)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = _message(uri, exc)
            if not isinstance(exc, ModelSourceError | FetchError | UnpackError | TimeoutError):
                log.exception("model download of %s failed", uri)
            else:
                log.warning("model download failed: %s", message)
            backoff = min(self.retry_max, max(self.retry_min, last_backoff * 2))
            self._failed[key] = (message, time.monotonic() + backoff, backoff)
        else:
            self._failed.pop(key, None)
            self._ready[key] = model
            if len(self._ready) > 4096:  # revisions come and go; forget the oldest
                self._ready.pop(next(iter(self._ready)))
        finally:
            self._tasks.pop(key, None)

    # ------------------------------------------------------------------ finding and copying
    async def fetch(
        self, namespace: str, uri: str, credentials: S3Credentials | None = None
    ) -> StoredModel:
        """Check the source; copy the model into the store unless it is used in place or
        its version is there already."""
        if uri.startswith(S3_SCHEME) and credentials is not None:
            return await self._fetch_external_s3(namespace, uri, credentials)
        if uri.startswith(S3_SCHEME):
            return await self._fetch_s3(namespace, uri)
        if uri.startswith(HTTP_SCHEMES):
            return await self._fetch_http(namespace, uri)
        raise ModelSourceError(f"storageUri {uri!r}: only s3://, http:// and https:// download")

    async def _platform(self) -> ObjectStore:
        if self.objects is None or self.bucket is None:
            raise ModelSourceError(
                "no object store is configured on this platform (SHIPYARD_S3_ENDPOINT): "
                "models from s3:// and http(s):// are kept there for the model servers"
            )
        return await self.objects()

    async def _fetch_s3(self, namespace: str, uri: str) -> StoredModel:
        """A model in the platform's bucket: used in place, after the tenancy check."""
        problem = s3_tenancy_problem(uri, namespace, self.bucket)
        if problem is not None:
            raise ModelSourceError(problem)
        store = await self._platform()
        listing = await self._list_s3(uri, store)
        single = _single(listing)
        kind = archive_kind(single) if single else None
        objects = tuple(
            ModelObject(
                info.key,
                info.size,
                info.etag,
                None if kind else "/".join(rel),
                kind,
            )
            for rel, info in listing
        )
        file = single if single and kind is None else None
        return StoredModel(objects, file, _version(listing), in_place=True)

    async def _fetch_external_s3(
        self, namespace: str, uri: str, credentials: S3Credentials
    ) -> StoredModel:
        """An ``s3://`` model from the endpoint and with the keys of a tenant's Secret.

        The endpoint is the tenant's choice, so it is an SSRF target like an http(s) URL: its
        host must resolve only to public addresses (or be allowed by
        ``SHIPYARD_MODEL_DOWNLOAD_ALLOWED_HOSTS``), and a plain-HTTP (or unverified TLS)
        connection goes to the address that was checked, so DNS rebinding cannot move it;
        a verified TLS connection keeps the host name, whose certificate pins it. The one
        exception is the platform's own store, which the platform talks to anyway: there
        the platform's bucket keeps the namespace-area rule whatever keys are given, and
        the model is used in place like any other of the namespace's."""
        try:
            bucket, _ = parse_s3_uri(uri)
        except ValueError as exc:
            raise ModelSourceError(str(exc)) from None
        where = f"the S3 endpoint {credentials.endpoint} (Secret {credentials.secret})"
        connect = credentials.endpoint
        if not await self._is_platform_endpoint(credentials):
            try:
                address = await checked_address(
                    credentials.host, credentials.port, self.policy.allowed_hosts
                )
            except AddressRefused as exc:
                raise ModelSourceError(f"{where}: {exc}") from None
            except FetchError as exc:
                raise ModelSourceError(f"{where}: {exc}") from None
            if urlsplit(credentials.endpoint).scheme == "http" or not credentials.verify_tls:
                literal = f"[{address}]" if ":" in address else address
                connect = f"{urlsplit(credentials.endpoint).scheme}://{literal}:{credentials.port}"
        elif bucket == self.bucket:
            problem = s3_tenancy_problem(uri, namespace, self.bucket)
            if problem is not None:
                raise ModelSourceError(
                    f"{problem} (the platform's own store and bucket keep the namespace's "
                    "areas, whatever credentials are given)"
                )
            return await self._fetch_s3(namespace, uri)
        platform = await self._platform()
        config = credentials.config(bucket, connect)
        try:
            async with ObjectStore(
                config,
                connect_timeout=self.policy.connect_timeout,
                read_timeout=self.policy.read_timeout,
                max_attempts=2,
            ) as store:
                # The copy is keyed by endpoint and URI: s3://b/k elsewhere is another model.
                return await self._copy_s3(
                    namespace, uri, f"{credentials.endpoint} {uri}", store, platform
                )
        except CredentialsRefused as exc:
            if exc.endpoint != config.endpoint:
                raise  # the platform's store, not the tenant's
            raise ModelSourceError(
                f"{where} refused the credentials: check the Secret's AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, and that this key may read bucket {bucket!r}"
            ) from None
        except StoreUnreachable as exc:
            if exc.endpoint != config.endpoint:
                raise
            raise ModelSourceError(
                f"{where} does not answer: check the serving.kserve.io/s3-endpoint and "
                "s3-usehttps annotations"
            ) from None
        except BucketMissing as exc:
            if exc.endpoint != config.endpoint:
                raise
            raise ModelSourceError(f"{where} has no bucket {bucket!r}") from None

    async def _is_platform_endpoint(self, credentials: S3Credentials) -> bool:
        """Whether the Secret's endpoint is the platform's own store (same scheme, port and
        an address in common)."""
        if not self.platform_endpoint:
            return False
        ours = urlsplit(self.platform_endpoint)
        theirs = urlsplit(credentials.endpoint)
        our_port = ours.port or (443 if ours.scheme == "https" else 80)
        if (ours.scheme, our_port) != (theirs.scheme, credentials.port):
            return False
        if (ours.hostname or "").lower() == credentials.host.lower():
            return True
        loop = asyncio.get_running_loop()
        try:
            mine = await loop.getaddrinfo(ours.hostname, our_port)
            other = await loop.getaddrinfo(credentials.host, credentials.port)
        except OSError:
            return False
        return bool({i[4][0] for i in mine} & {i[4][0] for i in other})

    async def _list_s3(
        self, uri: str, store: ObjectStore
    ) -> list[tuple[tuple[str, ...], ObjectInfo]]:
        """``uri``'s objects in ``store`` (one object, else a prefix) with their paths in the
        model directory; ModelSourceError if there are none, too many or too many bytes."""
        _, key = parse_s3_uri(uri)
        listing: list[tuple[tuple[str, ...], ObjectInfo]] = []
        if key and not key.endswith("/"):
            try:
                info = await store.head(key)
            except ObjectNotFound:
                pass
            else:
                listing.append(((PurePosixPath(key).name,), info))
        if not listing:
            prefix = key.rstrip("/") + "/"
            async for info in store.list(prefix):
                if info.key.endswith("/"):
                    continue  # a "directory" marker some tools write
                rel = safe_parts(info.key[len(prefix) :], "object key")
                listing.append((rel, info))
                if len(listing) > MAX_OBJECTS:
                    raise ModelSourceError(f"more than {MAX_OBJECTS} objects under {uri}")
            if not listing:
                raise ModelSourceError(
                    f"no model found: no object {key!r} and none under {prefix!r}"
                )
        total = sum(info.size for _, info in listing)
        if total > self.policy.max_bytes:
            raise ModelSourceError(
                f"{uri} holds {total} bytes, more than the download limit of "
                f"{self.policy.max_bytes} (SHIPYARD_MODEL_DOWNLOAD_MAX_BYTES)"
            )
        return listing

    async def _copy_s3(
        self, namespace: str, uri: str, cache_id: str, source: ObjectStore, platform: ObjectStore
    ) -> StoredModel:
        """Copy ``uri`` from ``source`` into the namespace's cache area unless that version
        is there already."""
        listing = await self._list_s3(uri, source)
        single = _single(listing)
        kind = archive_kind(single) if single else None
        version = _version(listing)
        prefix = cache_prefix(namespace, cache_id, version)
        found = await self._lookup(namespace, prefix, version, platform)
        if found is not None:
            return found
        log.info("copying %s into namespace %s's model cache", uri, namespace)
        copy = _Copy(prefix, platform, self.policy.max_bytes)
        for rel, info in listing:
            await copy.put(rel, kind, source.get_stream(info.key, CHUNK))
        return await copy.commit(single if single and kind is None else None, version, self)

    async def _fetch_http(self, namespace: str, uri: str) -> StoredModel:
        problem = http_uri_problem(uri)
        if problem is not None:
            raise ModelSourceError(f"storageUri {uri!r}: {problem}")
        filename = PurePosixPath(unquote(urlsplit(uri).path)).name
        safe_parts(filename, "file name")
        kind = archive_kind(filename)
        platform = await self._platform()
        policy = self.policy
        client = GuardedClient(
            policy.allowed_hosts,
            connect_timeout=policy.connect_timeout,
            read_timeout=policy.read_timeout,
        )
        try:
            async with client.open("HEAD", uri) as (_, head):
                validators = _validators(head) if head.status_code == 200 else None
            if validators is not None:
                version = _digest("http", validators)
                found = await self._lookup(
                    namespace, cache_prefix(namespace, uri, version), version, platform
                )
                if found is not None:
                    return found
            async with client.open("GET", uri) as (_, response):
                if response.status_code != 200:
                    raise ModelSourceError(f"{uri} answered {response.status_code} to GET")
                _check_content_type(uri, filename, kind, response.headers.get("content-type", ""))
                version = _digest("http", _validators(response))
                length = response.headers.get("content-length")
                if length and length.isdigit() and int(length) > policy.max_bytes:
                    raise ModelSourceError(
                        f"{uri} is {length} bytes, more than the download limit of "
                        f"{policy.max_bytes} (SHIPYARD_MODEL_DOWNLOAD_MAX_BYTES)"
                    )
                prefix = cache_prefix(namespace, uri, version)
                if validators is None:  # HEAD was refused: look now that the version is known
                    found = await self._lookup(namespace, prefix, version, platform)
                    if found is not None:
                        return found
                log.info("copying %s into namespace %s's model cache", uri, namespace)
                copy = _Copy(prefix, platform, policy.max_bytes)
                await copy.put((filename,), kind, response.aiter_raw(CHUNK))
                return await copy.commit(None if kind else filename, version, self)
        finally:
            await client.aclose()

    async def _lookup(
        self, namespace: str, prefix: str, version: str, store: ObjectStore
    ) -> StoredModel | None:
        """The complete copy at ``prefix`` (its manifest), or None.

        The cache area lies in the namespace's own part of the bucket, which its workloads may
        write to: a manifest is read as the tenant's data, so every object it names must lie
        below ``prefix`` (it can only ever lead to the namespace's own objects)."""
        raw = bytearray()
        try:
            async for chunk in store.get_stream(prefix + MANIFEST, CHUNK):
                raw += chunk
                if len(raw) > MANIFEST_MAX_BYTES:
                    break  # not ours: a manifest is a few hundred bytes per object
        except ObjectNotFound:
            return None
        try:
            if len(raw) > MANIFEST_MAX_BYTES:
                raise ValueError("too large")
            manifest = json.loads(raw)
            objects = tuple(_manifest_object(prefix, namespace, o) for o in manifest["objects"])
            file = manifest.get("file")
            if not objects or not (file is None or isinstance(file, str)):
                raise ValueError("no objects")
        except (ValueError, KeyError, TypeError, UnpackError) as exc:
            log.warning("ignoring the unreadable manifest %s%s: %s", prefix, MANIFEST, exc)
            return None
        return StoredModel(objects, file, version)


class _Copy:
    """One copy into the cache area in progress: objects first, the manifest last."""

    def __init__(self, prefix: str, store: ObjectStore, max_bytes: int) -> None:
        self.prefix = prefix
        self.store = store
        self.left = max_bytes
        self.max_bytes = max_bytes
        self.objects: list[ModelObject] = []

    async def put(
        self, rel: tuple[str, ...], kind: str | None, chunks: AsyncIterator[bytes]
    ) -> None:
        """Stream one object (a model file, or the archive ``kind``) into the cache area."""
        name = "/".join(rel)
        key = f"{self.prefix}{'archive' if kind else 'files'}/{name}"

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                self.left -= len(chunk)
                if self.left < 0:
                    raise SizeLimitExceeded(
                        f"the model is larger than the download limit of {self.max_bytes} "
                        "bytes (SHIPYARD_MODEL_DOWNLOAD_MAX_BYTES)"
                    )
                yield chunk

        info = await self.store.put_stream(key, counted())
        self.objects.append(ModelObject(key, info.size, info.etag, None if kind else name, kind))

    async def commit(self, file: str | None, version: str, cache: ModelCache) -> StoredModel:
        manifest = {
            "file": file,
            "objects": [
                {
                    "name": o.key[len(self.prefix) :],
                    "size": o.size,
                    "etag": o.etag,
                    "path": o.path,
                    "unpack": o.unpack,
                }
                for o in self.objects
            ],
        }
        data = json.dumps(manifest).encode()

        async def body() -> AsyncIterator[bytes]:
            yield data

        await self.store.put_stream(self.prefix + MANIFEST, body(), content_type="application/json")
        cache.downloads += 1
        return StoredModel(tuple(self.objects), file, version)


def _manifest_object(prefix: str, namespace: str, entry: dict[str, Any]) -> ModelObject:
    name = "/".join(safe_parts(str(entry["name"]), "manifest object"))
    key = prefix + name
    if not in_namespace_area(namespace, key):
        raise ValueError(f"{key!r} is outside the namespace's areas")
    path, kind = entry.get("path"), entry.get("unpack")
    if path is not None:
        path = "/".join(safe_parts(str(path), "manifest path"))
    if kind not in (None, "tar", "zip") or (path is None) == (kind is None):
        raise ValueError(f"{name!r}: a file needs a path, an archive a kind")
    size = entry["size"]
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"{name!r}: bad size")
    return ModelObject(key, size, str(entry["etag"]), path, kind)


def _single(listing: list[tuple[tuple[str, ...], ObjectInfo]]) -> str | None:
    """The file name of a model that is one object (None for a prefix of several)."""
    return listing[0][0][-1] if len(listing) == 1 else None


def _version(listing: list[tuple[tuple[str, ...], ObjectInfo]]) -> str:
    return _digest("s3", *(f"{'/'.join(rel)}\0{info.etag}\0{info.size}" for rel, info in listing))


def _validators(response: object) -> str:
    """The response's ETag, else its Last-Modified ("" with neither)."""
    headers = getattr(response, "headers", {})
    etag = headers.get("etag")
    if etag:
        return f"etag:{etag}"
    modified = headers.get("last-modified")
    return f"last-modified:{modified}" if modified else ""


def _check_content_type(uri: str, filename: str, kind: str | None, content_type: str) -> None:
    """KServe's rule: the Content-Type must agree with the file name's kind."""
    wanted: tuple[str, ...]
    if kind == "zip":
        wanted = ZIP_CONTENT_TYPES
    elif kind == "tar":
        wanted = TAR_CONTENT_TYPES
    else:
        wanted = ("application/octet-stream",)
    if not content_type.lower().startswith(wanted):
        guessed = mimetypes.guess_type(filename)[0] or "unknown"
        raise ModelSourceError(
            f"{uri} answered Content-Type {content_type or 'none'!r} for a {guessed} file; "
            f"expected one of {', '.join(wanted)} (KServe's storage-initializer rule)"
        )


def _message(uri: str, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"storageUri {uri!r}: the download did not finish in time"
    if isinstance(exc, ObjectStoreError):
        return f"storageUri {uri!r}: {exc}"
    text = str(exc) or type(exc).__name__
    return text if text.startswith("storageUri") else f"storageUri {uri!r}: {text}"
