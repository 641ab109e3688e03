"""Models from ``s3://`` and ``http(s)://``: downloaded once into a per-namespace cache volume.

The model server never talks to the store or the network: the serving service downloads the
model (with the platform's store credentials, after the tenancy check; or over HTTP through
:mod:`services.common.fetch`'s address check) into a runtime volume of the namespace,
``kserve-model-cache``, and the server gets that volume read-only at ``/mnt/models`` with a
``subPath``, exactly as a ``pvc://`` model.

Layout of the volume: ``<uri digest>/<version digest>/`` holds one complete model. The
version is what the source says about its content, so a changed model is a new directory
and an unchanged one is found again without a download (a restart of the serving service,
another replica of it, a new replica of the model server):

- an ``s3://`` object: its key and ETag; a prefix: a digest over every listed key and ETag;
- an ``http(s)://`` file: its ``ETag``, else its ``Last-Modified`` (from a HEAD, or the GET's
  headers when HEAD is refused); a server that sends neither is treated as immutable and
  cached by URI alone.

A download is written to ``<uri digest>/.partial-<random>/`` and renamed to its version
directory only when it is complete (files fsynced), so a download that is killed leaves
nothing that looks complete; partial directories older than an hour are removed by the next
download of the same URI. Bytes are streamed to disk in 1 MiB pieces, file writes and
unpacking run in worker threads, and a download runs as a background task: the controller
asks :meth:`ModelCache.resolve` on each reconcile and reports "downloading" until it is done.

KServe's storage-initializer rules, as far as they go here: an ``s3://`` URI that names an
object is that single file; otherwise it is a prefix (a directory: ``s3://b/models/ns/iris``
means every object under ``models/ns/iris/``) copied with its sub-paths; a single file that is
an archive (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``) is unpacked (:mod:`.unpack`). An
``http(s)://`` URI is one file named by the last path segment, archives unpacked, and the
server's ``Content-Type`` must match (``application/octet-stream`` for a plain file).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO
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
from services.common.runtime import Runtime

if TYPE_CHECKING:
    from services.serving.credentials import S3Credentials
from services.serving.unpack import (
    CHUNK,
    Budget,
    SafeDir,
    UnpackError,
    archive_kind,
    safe_parts,
    unpack,
)

log = logging.getLogger(__name__)

CACHE_CLAIM = "kserve-model-cache"
CACHE_LABELS = {"shipyard.io/service": "serving", "serving.shipyard.io/model-cache": "true"}
PARTIAL, ARCHIVE = ".partial-", ".archive-"
STALE_PARTIAL_SECONDS = 3600.0
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
class CachedModel:
    """A complete model in the cache volume: mount ``sub_path`` of ``claim``; ``file`` is
    the model's one file when the source was a single (not archived) file."""

    claim: str
    sub_path: str
    file: str | None = None


@dataclass(frozen=True)
class _Source:
    """What the source says before any byte is downloaded."""

    version: str  # digest of the content's identity (keys+ETags, ETag, Last-Modified)
    file: str | None  # a single plain file's name


def uri_digest(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:32]


def _digest(*lines: str) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


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
    """Downloads of remote storage URIs into each namespace's cache volume; see the module doc.

    ``objects`` opens the platform's store (``ServiceContext.objects``); ``bucket`` is its
    bucket (None: no store configured, and s3:// is refused).
    """

    #: How long :meth:`resolve` waits for a new check or download before it reports
    #: "downloading" (a model that is already cached is usually found well within it).
    inline_wait = 1.0
    retry_min, retry_max = 5.0, 300.0

    def __init__(
        self,
        runtime: Runtime,
        objects: Callable[[], Awaitable[ObjectStore]] | None,
        bucket: str | None,
        policy: DownloadPolicy | None = None,
        platform_endpoint: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.objects = objects
        self.bucket = bucket
        self.policy = policy or DownloadPolicy()
        #: The platform's own store: with a tenant's credentials, its bucket keeps the
        #: namespace-area rule.
        self.platform_endpoint = platform_endpoint
        self._tasks: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._ready: dict[tuple[str, str, str], CachedModel] = {}
        self._failed: dict[tuple[str, str, str], tuple[str, float, float]] = {}
        #: How many downloads (not cache hits) this process made: tests and metrics.
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
    ) -> CachedModel:
        """The cached model, or ModelPending while it is checked or downloaded (in the
        background), or ModelSourceError with why the last attempt failed (retried after a
        back-off). ``pin`` (a revision's spec digest) keeps one answer per revision: its
        replicas all serve what was found when it was created in this process.
        ``credentials`` (an ``s3://`` URI's, from a Secret) name another S3 endpoint; a
        changed Secret is a fresh attempt."""
        if credentials is not None:
            pin = f"{pin}/{credentials.fingerprint()}"
        key = (namespace, uri, pin)
        if key in self._ready:
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

    # ------------------------------------------------------------------ the download itself
    async def fetch(
        self, namespace: str, uri: str, credentials: S3Credentials | None = None
    ) -> CachedModel:
        """Check the source and download the model unless its version is cached already."""
        await self.runtime.create_volume(namespace, CACHE_CLAIM, labels=CACHE_LABELS)
        root = await self.runtime.resolve_volume(namespace, CACHE_CLAIM)
        if uri.startswith(S3_SCHEME) and credentials is not None:
            return await self._fetch_external_s3(namespace, uri, root, credentials)
        if uri.startswith(S3_SCHEME):
            return await self._fetch_s3(namespace, uri, root)
        if uri.startswith(HTTP_SCHEMES):
            return await self._fetch_http(uri, root)
        raise ModelSourceError(f"storageUri {uri!r}: only s3://, http:// and https:// download")

    async def _fetch_s3(self, namespace: str, uri: str, root: Path) -> CachedModel:
        problem = s3_tenancy_problem(uri, namespace, self.bucket)
        if problem is not None or self.objects is None:
            raise ModelSourceError(problem or "no object store is configured")
        store = await self.objects()
        return await self._download_s3(uri, uri, root, store)

    async def _fetch_external_s3(
        self, namespace: str, uri: str, root: Path, credentials: S3Credentials
    ) -> CachedModel:
        """An ``s3://`` model from the endpoint and with the keys of a tenant's Secret.

        The endpoint is the tenant's choice, so it is an SSRF target like an http(s) URL: its
        host must resolve only to public addresses (or be allowed by
        ``SHIPYARD_MODEL_DOWNLOAD_ALLOWED_HOSTS``), and a plain-HTTP (or unverified TLS)
        connection goes to the address that was checked, so DNS rebinding cannot move it;
        a verified TLS connection keeps the host name, whose certificate pins it. The one
        exception is the platform's own store, which the platform talks to anyway: there
        the platform's bucket keeps the namespace-area rule whatever keys are given."""
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
        config = credentials.config(bucket, connect)
        try:
            async with ObjectStore(
                config,
                connect_timeout=self.policy.connect_timeout,
                read_timeout=self.policy.read_timeout,
                max_attempts=2,
            ) as store:
                # The cache directory is keyed by endpoint and URI: s3://b/k elsewhere is
                # another model.
                return await self._download_s3(uri, f"{credentials.endpoint} {uri}", root, store)
        except CredentialsRefused:
            raise ModelSourceError(
                f"{where} refused the credentials: check the Secret's AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, and that this key may read bucket {bucket!r}"
            ) from None
        except StoreUnreachable:
            raise ModelSourceError(
                f"{where} does not answer: check the serving.kserve.io/s3-endpoint and "
                "s3-usehttps annotations"
            ) from None
        except BucketMissing:
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

    async def _download_s3(
        self, uri: str, cache_id: str, root: Path, store: ObjectStore
    ) -> CachedModel:
        """List ``uri`` in ``store`` (one object, else a prefix) and download it into the cache
        directory of ``cache_id`` unless that version is there already."""
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
        single = listing[0][0][-1] if len(listing) == 1 else None
        kind = archive_kind(single) if single else None
        version = _digest(
            "s3", *(f"{'/'.join(rel)}\0{info.etag}\0{info.size}" for rel, info in listing)
        )
        source = _Source(version, single if single and kind is None else None)

        async def download(partial: _Partial) -> None:
            if single is not None and kind is not None:
                name = await partial.archive_path(single)
                await partial.write(None, name, store.get_stream(listing[0][1].key, CHUNK))
                await partial.unpack(name, kind)
                return
            for rel, info in listing:
                await partial.write(rel, None, store.get_stream(info.key, CHUNK))

        return await self._materialise(cache_id, root, source, download)

    async def _fetch_http(self, uri: str, root: Path) -> CachedModel:
        problem = http_uri_problem(uri)
        if problem is not None:
            raise ModelSourceError(f"storageUri {uri!r}: {problem}")
        filename = PurePosixPath(unquote(urlsplit(uri).path)).name
        safe_parts(filename, "file name")
        kind = archive_kind(filename)
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
                known = _Source(_digest("http", validators), None if kind else filename)
                found = await asyncio.to_thread(self._lookup, root, uri, known)
                if found is not None:
                    return found
            async with client.open("GET", uri) as (_, response):
                if response.status_code != 200:
                    raise ModelSourceError(f"{uri} answered {response.status_code} to GET")
                _check_content_type(uri, filename, kind, response.headers.get("content-type", ""))
                source = _Source(_digest("http", _validators(response)), None if kind else filename)
                length = response.headers.get("content-length")
                if length and length.isdigit() and int(length) > policy.max_bytes:
                    raise ModelSourceError(
                        f"{uri} is {length} bytes, more than the download limit of "
                        f"{policy.max_bytes} (SHIPYARD_MODEL_DOWNLOAD_MAX_BYTES)"
                    )

                async def download(partial: _Partial) -> None:
                    body = response.aiter_raw(CHUNK)
                    if kind is None:
                        await partial.write((filename,), None, body)
                        return
                    name = await partial.archive_path(filename)
                    await partial.write(None, name, body)
                    await partial.unpack(name, kind)

                return await self._materialise(uri, root, source, download)
        finally:
            await client.aclose()

    def _lookup(self, root: Path, uri: str, source: _Source) -> CachedModel | None:
        digest = uri_digest(uri)
        with SafeDir.open(root) as top:
            if not top.exists(digest):
                return None
            with top.subdir(digest, create=False) as by_uri:
                if not by_uri.exists(source.version):
                    return None
        return CachedModel(CACHE_CLAIM, f"{digest}/{source.version}", source.file)

    async def _materialise(
        self,
        uri: str,
        root: Path,
        source: _Source,
        download: Callable[[_Partial], Awaitable[None]],
    ) -> CachedModel:
        """The cached model of ``source``'s version: found, or downloaded and renamed in."""
        found = await asyncio.to_thread(self._lookup, root, uri, source)
        if found is not None:
            return found
        digest = uri_digest(uri)
        partial = await asyncio.to_thread(_Partial.begin, root, digest, self.policy.max_bytes)
        try:
            log.info("downloading %s into the model cache", uri.rsplit(" ", 1)[-1])
            await download(partial)
            self.downloads += 1
            await asyncio.to_thread(partial.commit, source.version)
        finally:
            await asyncio.to_thread(partial.discard)
        return CachedModel(CACHE_CLAIM, f"{digest}/{source.version}", source.file)


class _Partial:
    """One download in progress: ``<uri digest>/.partial-<id>/`` and its archive file."""

    def __init__(self, by_uri: SafeDir, name: str, budget: Budget) -> None:
        self.by_uri = by_uri
        self.name = name
        self.dir: SafeDir | None = by_uri.subdir(name)
        self.budget = budget
        self.archives: list[str] = []

    @classmethod
    def begin(cls, root: Path, digest: str, max_bytes: int) -> _Partial:
        with SafeDir.open(root) as top:
            by_uri = top.subdir(digest)
        now = time.time()
        for entry in by_uri.entries():
            if entry.startswith((PARTIAL, ARCHIVE)):
                try:
                    age = now - os.stat(entry, dir_fd=by_uri.fd, follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
                if age > STALE_PARTIAL_SECONDS:  # left by a killed download
                    by_uri.remove_tree(entry)
        return cls(by_uri, f"{PARTIAL}{uuid.uuid4().hex}", Budget(max_bytes))

    async def archive_path(self, filename: str) -> str:
        name = f"{ARCHIVE}{uuid.uuid4().hex}-{filename}"
        self.archives.append(name)
        return name

    async def write(
        self, parts: tuple[str, ...] | None, archive: str | None, chunks: AsyncIterator[bytes]
    ) -> None:
        """Stream ``chunks`` into the file ``parts`` of the model (or into ``archive``, beside
        it), 1 MiB at a time through a worker thread."""
        out = await asyncio.to_thread(self._create, parts, archive)
        try:
            buffer = bytearray()
            async for chunk in chunks:
                self.budget.take(len(chunk))
                buffer += chunk
                if len(buffer) >= CHUNK:
                    await asyncio.to_thread(out.write, bytes(buffer))
                    buffer.clear()
            if buffer:
                await asyncio.to_thread(out.write, bytes(buffer))
            await asyncio.to_thread(_flush, out)
        finally:
            await asyncio.to_thread(out.close)

    def _create(self, parts: tuple[str, ...] | None, archive: str | None) -> BinaryIO:
        if archive is not None:
            return self.by_uri.create_file(archive)
        assert parts is not None and self.dir is not None
        self.budget.entry()
        with self.dir.walk_to(parts[:-1]) as parent:
            return parent.create_file(parts[-1])

    async def unpack(self, archive: str, kind: str) -> None:
        """Unpack ``archive`` into the model (the archive's bytes count once: as written out)."""
        assert self.dir is not None
        self.budget.written = 0
        await asyncio.to_thread(unpack, self.by_uri, archive, kind, self.dir, self.budget)
        await asyncio.to_thread(self.by_uri.remove_tree, archive)

    def commit(self, version: str) -> None:
        """Rename the complete download to its version directory (someone else's complete
        copy of the same version, when one got there first, is kept instead)."""
        try:
            os.rename(self.name, version, src_dir_fd=self.by_uri.fd, dst_dir_fd=self.by_uri.fd)
        except OSError:
            if not self.by_uri.exists(version):
                raise
            return  # a concurrent download (another replica) finished first
        os.fsync(self.by_uri.fd)
        self.name = ""

    def discard(self) -> None:
        if self.dir is not None:
            self.dir.close()
            self.dir = None
        for name in [self.name, *self.archives]:
            if name:
                self.by_uri.remove_tree(name)
        self.by_uri.close()


def _flush(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


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
