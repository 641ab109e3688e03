"""The platform's object store: a small async client for any S3-compatible endpoint.

Artifacts and models (issue 11) live in one bucket of one S3-compatible store: MinIO, AWS
S3, GCS's interoperability API, or the SeaweedFS that ``shipyard up`` embeds
(``shipyard/seaweedfs.py``). This module is the only place that speaks S3; later layers
(Argo and KFP artifacts, ``storageUri``, per-namespace prefixes) build on :class:`ObjectStore`
and never import botocore themselves.

Why aiobotocore: it is botocore (the AWS SDK's own request signing, retry modes, error
codes, presigning and every S3 operation, bucket creation included) on aiohttp, released in
lockstep with botocore and widely used (s3fs, aioboto3). obstore was the alternative: fast,
but it has no bucket operations (``ensure_bucket`` would need hand-rolled SigV4) and hides
the S3 error codes we turn into the clear errors below.

Memory is bounded: :meth:`ObjectStore.put_stream` buffers one part (``part_size``, 8 MiB
by default; S3's minimum is 5 MiB; with botocore's and aiohttp's copies of the request
about four parts' worth at the peak, whatever the object's size) and :meth:`ObjectStore.get_stream`
yields chunks as they arrive. Errors a user can hit become :class:`ObjectStoreError`
subclasses whose message names the endpoint and the bucket.

botocore is imported when a store is opened, not with this module: settings import
:class:`S3Config`, and every process imports settings (botocore costs ~0.3 s).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

DEFAULT_REGION = "us-east-1"
DEFAULT_BUCKET = "mlpipeline"  # as Kubeflow's manifests
DEFAULT_PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3: every part but the last is at least 5 MiB
#: Where each namespace's objects live in the platform's bucket: ``<root>/<namespace>/...``.
#: ``artifacts`` is Argo's default repository (``artifacts/<ns>/<workflow>/<pod>/...``),
#: ``v2/artifacts`` KFP's default ``pipeline_root``, ``models`` the place for models a person
#: uploads. A namespace may read and write only its own areas (docs/storage.md).
TENANT_ROOTS = ("artifacts", "v2/artifacts", "models")


def namespace_prefixes(namespace: str) -> tuple[str, ...]:
    """The key prefixes of ``namespace``'s areas in the platform's bucket."""
    return tuple(f"{root}/{namespace}/" for root in TENANT_ROOTS)


def in_namespace_area(namespace: str, key: str) -> bool:
    """Whether ``key`` (or a prefix ``key/``) lies in one of ``namespace``'s areas.

    Keys with empty, ``.`` or ``..`` segments are never inside: S3 keys are literal, but a
    client or a proxy on the way may normalise them.
    """
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", ".."):
        return False
    return any(key.startswith(p) and len(key) > len(p) for p in namespace_prefixes(namespace))


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` (or ``minio://``, KFP's alias) as ``(bucket, key)``; ValueError."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("s3", "minio"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket (s3://<bucket>/<key>)")
    return bucket, key


_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "403"}
)
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


@dataclass(frozen=True)
class S3Config:
    """Where the store is and how to sign in (the ``SHIPYARD_S3_*`` settings)."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str = DEFAULT_REGION
    bucket: str = DEFAULT_BUCKET
    #: Check the endpoint's TLS certificate (KServe's ``s3-verifyssl``; the platform's own
    #: store always does).
    verify_tls: bool = True
    #: Send unsigned requests (KServe's ``s3-useanoncredential``: a public bucket).
    anonymous: bool = False

    def __repr__(self) -> str:  # the secret key stays out of logs and tracebacks
        return (
            f"S3Config(endpoint={self.endpoint!r}, region={self.region!r}, bucket={self.bucket!r})"
        )

    def env(self) -> dict[str, str]:
        """The ``SHIPYARD_S3_*`` environment that makes a service use this store."""
        return {
            "SHIPYARD_S3_ENDPOINT": self.endpoint,
            "SHIPYARD_S3_ACCESS_KEY_ID": self.access_key_id,
            "SHIPYARD_S3_SECRET_ACCESS_KEY": self.secret_access_key,
            "SHIPYARD_S3_REGION": self.region,
            "SHIPYARD_S3_BUCKET": self.bucket,
        }


class ObjectStoreError(RuntimeError):
    """The store refused or failed an operation; the message names endpoint and bucket."""

    def __init__(self, message: str, *, endpoint: str, bucket: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.bucket = bucket


class StoreUnreachable(ObjectStoreError):
    """Nothing answers at the endpoint (wrong URL, server down, network)."""


class CredentialsRefused(ObjectStoreError):
    """The endpoint answered but refused the access key or its signature."""


class BucketMissing(ObjectStoreError):
    """The bucket does not exist (and was not created)."""


class ObjectNotFound(ObjectStoreError):
    """No object under that key."""


@dataclass(frozen=True)
class ObjectInfo:
    """What the store says about one object."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None


class ObjectStore:
    """An async client for the platform's bucket; use it as ``async with ObjectStore(cfg)``."""

    def __init__(
        self,
        config: S3Config,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.config = config
        self.bucket = config.bucket
        self.part_size = part_size
        from aiobotocore.config import AioConfig
        from botocore import UNSIGNED

        self._boto_config = AioConfig(
            signature_version=UNSIGNED if config.anonymous else "s3v4",
            s3={"addressing_style": "path"},  # MinIO and SeaweedFS have no virtual hosts
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            # botocore >= 1.36 adds CRC trailers to every upload by default; MinIO before
            # 2024, GCS's interoperability API and others reject or mangle them, and
            # computing them costs a copy of each part. S3 checks Content-MD5 where it must.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def __aenter__(self) -> ObjectStore:
        from aiobotocore.session import get_session

        stack = contextlib.AsyncExitStack()
        self._client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self.config.endpoint,
                region_name=self.config.region,
                aws_access_key_id=self.config.access_key_id,
                aws_secret_access_key=self.config.secret_access_key,
                config=self._boto_config,
                verify=self.config.verify_tls,
            )
        )
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._exit_stack is not None:
            stack, self._exit_stack, self._client = self._exit_stack, None, None
            await stack.aclose()

    @property
    def _s3(self) -> Any:
        if self._client is None:
            raise RuntimeError("ObjectStore is not open: use `async with ObjectStore(...)`")
        return self._client

    def uri(self, key: str) -> str:
        """The object's ``s3://bucket/key`` URI."""
        return f"s3://{self.bucket}/{key}"

    async def ensure_bucket(self) -> bool:
        """Create the bucket if it is missing; True if it was created."""
        with self._errors():
            from botocore.exceptions import ClientError

            try:
                await self._s3.head_bucket(Bucket=self.bucket)
                return False
            except ClientError as exc:
                if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            try:
                await self._s3.create_bucket(Bucket=self.bucket)
            except ClientError as exc:  # a concurrent start created it first
                if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                return False
            return True

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = "application/octet-stream",
    ) -> ObjectInfo:
        """Upload an object from an async stream of bytes, one part in memory at a time.

        A stream shorter than one part is a single PUT; a longer one a multipart upload,
        aborted if the stream or an upload fails, so a failed put leaves no object behind.
        """
        buffer = bytearray()
        iterator = aiter(chunks)
        with self._errors(key):
            async for chunk in iterator:
                buffer += chunk
                if len(buffer) >= self.part_size:
                    break
            else:
                resp = await self._s3.put_object(
                    Bucket=self.bucket, Key=key, Body=bytes(buffer), ContentType=content_type
                )
                return ObjectInfo(key, len(buffer), _etag(resp))
            created = await self._s3.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type
            )
            upload_id = created["UploadId"]
            try:
                parts, size = await self._upload_parts(key, upload_id, buffer, iterator)
                resp = await self._s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._s3.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
                raise
            return ObjectInfo(key, size, _etag(resp))

    async def _upload_parts(
        self, key: str, upload_id: str, buffer: bytearray, rest: AsyncIterator[bytes]
    ) -> tuple[list[dict[str, Any]], int]:
        parts: list[dict[str, Any]] = []
        size = 0

        async def send(data: bytes) -> None:
            nonlocal size
            number = len(parts) + 1
            resp = await self._s3.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
            parts.append({"PartNumber": number, "ETag": resp["ETag"]})
            size += len(data)

        while True:
            while len(buffer) >= self.part_size:
                data = bytes(buffer[: self.part_size])
                del buffer[: self.part_size]
                await send(data)
            chunk = await anext(rest, None)
            if chunk is None:
                break
            buffer += chunk
        if buffer:
            await send(bytes(buffer))
        return parts, size

    async def get_stream(self, key: str, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """The object's bytes, as chunks of at most ``chunk_size`` while they arrive."""
        with self._errors(key):
            resp = await self._s3.get_object(Bucket=self.bucket, Key=key)
        body = resp["Body"]
        try:
            with self._errors(key):
                async for chunk in body.iter_chunks(chunk_size):
                    yield chunk
        finally:
            body.close()

    async def head(self, key: str) -> ObjectInfo:
        """Size and ETag of one object; :class:`ObjectNotFound` if there is none."""
        with self._errors(key):
            resp = await self._s3.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(key, int(resp["ContentLength"]), _etag(resp), resp.get("LastModified"))

    async def delete(self, key: str) -> None:
        """Delete one object (no error if it is already gone, as S3)."""
        with self._errors(key):
            await self._s3.delete_object(Bucket=self.bucket, Key=key)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order, page by page."""
        paginator = self._s3.get_paginator("list_objects_v2")
        with self._errors(prefix):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        item["Key"], int(item["Size"]), _etag(item), item.get("LastModified")
                    )

    async def presigned_post(
        self, prefix: str, *, expires_in: int, max_bytes: int
    ) -> dict[str, Any]:
        """A browser-style POST upload form for any key under ``prefix`` (and nothing else).

        ``{"url": ..., "fields": {...}}``: a client sends the fields and its own ``key`` (which
        must start with ``prefix``) with the file as ``multipart/form-data``. The store checks
        the signed policy (key prefix, size at most ``max_bytes``, expiry), so the form is a
        credential for exactly that prefix: what a workload gets instead of the store's keys.
        """
        with self._errors(prefix):
            post: dict[str, Any] = await self._s3.generate_presigned_post(
                self.bucket,
                prefix + "${filename}",
                Conditions=[
                    ["starts-with", "$key", prefix],
                    ["content-length-range", 0, max_bytes],
                ],
                ExpiresIn=expires_in,
            )
        return post

    async def presigned_get_url(self, key: str, expires_in: int = 3600) -> str:
        """A URL anyone holding it can GET the object with, for ``expires_in`` seconds."""
        return await self._presigned_url("get_object", key, expires_in)

    async def presigned_put_url(self, key: str, expires_in: int = 3600) -> str:
        """A URL anyone holding it can PUT exactly this object with (one request, so at most
        S3's 5 GiB single-upload size), for ``expires_in`` seconds."""
        return await self._presigned_url("put_object", key, expires_in)

    async def _presigned_url(self, operation: str, key: str, expires_in: int) -> str:
        if not 1 <= expires_in <= 7 * 24 * 3600:  # SigV4's limit is 7 days
            raise ValueError("expires_in must be between 1 s and 7 days")
        with self._errors(key):
            url: str = await self._s3.generate_presigned_url(
                operation,
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=expires_in,
            )
        return url

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Turn botocore's exceptions into ours, naming the endpoint, bucket (and key)."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        where = f"S3 endpoint {self.config.endpoint}, bucket {self.bucket!r}"
        kw = {"endpoint": self.config.endpoint, "bucket": self.bucket}
        try:
            yield
        except (EndpointConnectionError, BotoConnectionError) as exc:
            raise StoreUnreachable(
                f"the object store does not answer at {where}: {exc}. "
                "Check SHIPYARD_S3_ENDPOINT and that the server runs and is reachable.",
                **kw,
            ) from exc
        except NoCredentialsError as exc:
            raise CredentialsRefused(
                f"no credentials for {where}: set SHIPYARD_S3_ACCESS_KEY_ID and "
                "SHIPYARD_S3_SECRET_ACCESS_KEY",
                **kw,
            ) from exc
        except ClientError as exc:
            code = _code(exc)
            if code in _CREDENTIAL_CODES:
                raise CredentialsRefused(
                    f"the object store at {where} refused the credentials ({code}): check "
                    "SHIPYARD_S3_ACCESS_KEY_ID and SHIPYARD_S3_SECRET_ACCESS_KEY, and that "
                    "this key may use the bucket",
                    **kw,
                ) from exc
            if code in _MISSING_BUCKET_CODES:
                raise BucketMissing(
                    f"the bucket does not exist at {where}: create it or set SHIPYARD_S3_BUCKET",
                    **kw,
                ) from exc
            if key is not None and code in _MISSING_KEY_CODES:
                raise ObjectNotFound(f"no object {key!r} at {where}", **kw) from exc
            raise ObjectStoreError(f"{where}: {code}: {exc}", **kw) from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"{where}: {exc}", **kw) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _etag(resp: dict[str, Any]) -> str:
    return str(resp.get("ETag", "")).strip('"')
