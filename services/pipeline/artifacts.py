"""Argo's default artifact repository on the platform's object store, as steps use it.

Steps exchange artifacts only through the store (issue 11): never through a directory two
steps share, so steps can run on different machines. A step never holds the store's keys
either. When the service prepares a step it gives the step's wrapper (``stepwrap.py``)

* a presigned GET URL for every object of every input artifact (the service lists them, so
  a directory artifact stored as many objects works too), and
* a presigned PUT URL per output artifact for exactly its key, and a presigned POST form
  valid only for keys under ``<key>/`` (a directory stored with ``archive: none``; the store
  checks the signed policy: key prefix, size, expiry).

The wrapper downloads, runs the command, then packs (tar+gzip unless ``archive: none``) and
uploads. The service records an output only after the step has ended and the store shows the
object: an upload cut short leaves nothing recorded (and S3 never shows half an object).

Keys follow Argo's default key format under the namespace's area of the bucket:
``artifacts/<namespace>/<workflow name>/<pod name>/<artifact>.tgz``
(:func:`services.common.objectstore.namespace_prefixes`). A step may read or write only keys
in its own namespace's areas.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from services.common import safe_yaml
from services.common.fetch import AllowedHosts, FetchError, GuardedClient
from services.common.namespace_reads import NamespaceReader, NamespaceReadError
from services.common.objectstore import (
    ObjectNotFound,
    ObjectStore,
    in_namespace_area,
    namespace_prefixes,
)

ARGO_ROOT = "artifacts"
MAX_URL_TTL = 7 * 24 * 3600  # SigV4's longest presigned lifetime
REPORT_LIMIT = 8 * 1024 * 1024  # a step's report: parameters, a result and a few small files
REPOSITORIES_CONFIGMAP = "artifact-repositories"  # Argo's name for a namespace's repositories
DEFAULT_REPOSITORY_ANNOTATION = "workflows.argoproj.io/default-artifact-repository"
_VARIABLE = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")


class ArtifactError(ValueError):
    """An artifact cannot be used by this step; the message says why (node status)."""


@dataclass(frozen=True)
class InputObject:
    """One object of an input artifact: where to fetch it, and where it goes under the path."""

    url: str
    rel: str
    size: int


def archive_kind(art: dict[str, Any]) -> str:
    """``none`` or ``tgz``: how an artifact is (to be) stored, from Argo's ``archive`` field."""
    archive = art.get("archive") or {}
    if "none" in archive:
        return "none"
    if "zip" in archive:
        raise ArtifactError(f"artifact {art.get('name')!r}: archive.zip is not supported")
    return "tgz"


class ArtifactRepository:
    """The default repository: the platform's bucket, keys in each namespace's areas."""

    def __init__(
        self,
        store: Callable[[], Awaitable[ObjectStore]],
        *,
        max_bytes: int = 5 * 1024**3,
        input_url_ttl: int = 3600,
        allowed_hosts: AllowedHosts | None = None,
        reader: NamespaceReader | None = None,
    ) -> None:
        self._store = store
        self.max_bytes = max_bytes
        self.input_url_ttl = input_url_ttl
        self.allowed_hosts = allowed_hosts or AllowedHosts(frozenset())
        self.reader = reader
        self._key_formats: dict[str, str | None] = {}  # workflow uid -> its repository's

    async def store(self) -> ObjectStore:
        return await self._store()

    @staticmethod
    def step_prefix(namespace: str, workflow: str, pod: str) -> str:
        """Argo's default ``{{workflow.name}}/{{pod.name}}`` in the namespace's area."""
        return f"{ARGO_ROOT}/{namespace}/{workflow}/{pod}"

    async def output_prefix(self, wf: dict[str, Any], pod: str) -> str:
        """Where a step's outputs go: the workflow's repository's ``keyFormat``, filled in, or
        the default repository's ``artifacts/<ns>/<workflow>/<pod>``."""
        meta = wf["metadata"]
        key_format = await self._key_format(wf)
        if key_format is None:
            return self.step_prefix(meta["namespace"], meta["name"], pod)
        created = _timestamp(meta.get("creationTimestamp"))
        values = {
            "workflow.name": meta["name"],
            "workflow.namespace": meta["namespace"],
            "workflow.uid": meta.get("uid", ""),
            "pod.name": pod,
            "workflow.creationTimestamp": meta.get("creationTimestamp", ""),
            **{f"workflow.creationTimestamp.{c}": created.strftime(f"%{c}") for c in "YmdHMSjy"},
        }

        def fill(m: re.Match[str]) -> str:
            if m.group(1) not in values:
                raise ArtifactError(
                    f"artifact repository keyFormat {key_format!r}: unknown variable "
                    f"{{{{{m.group(1)}}}}} (known: {', '.join(sorted(values))})"
                )
            return values[m.group(1)]

        return _VARIABLE.sub(fill, key_format).strip("/")

    async def _key_format(self, wf: dict[str, Any]) -> str | None:
        """The keyFormat of the repository ``spec.artifactRepositoryRef`` names (None: the
        default repository). Read once per workflow, as the namespace's service account."""
        ref = (wf.get("spec") or {}).get("artifactRepositoryRef")
        if not ref:
            return None
        uid = wf["metadata"].get("uid", "")
        if uid in self._key_formats:
            return self._key_formats[uid]
        if self.reader is None:
            raise ArtifactError("artifactRepositoryRef: this service cannot read ConfigMaps")
        ns = wf["metadata"]["namespace"]
        name = ref.get("configMap") or REPOSITORIES_CONFIGMAP
        try:
            cm = await self.reader.config_map(ns, name)
        except NamespaceReadError as exc:
            raise ArtifactError(f"artifactRepositoryRef: {exc}") from None
        if cm is None:
            raise ArtifactError(
                f"artifactRepositoryRef: ConfigMap {ns}/{name} not found (create it with "
                f"Argo's artifact-repositories format)"
            )
        annotations = (cm.get("metadata") or {}).get("annotations") or {}
        key = ref.get("key") or annotations.get(DEFAULT_REPOSITORY_ANNOTATION)
        data = cm.get("data") or {}
        if not key or key not in data:
            raise ArtifactError(
                f"artifactRepositoryRef: ConfigMap {ns}/{name} has no repository "
                f"{key or '(no key, and no ' + DEFAULT_REPOSITORY_ANNOTATION + ' annotation)'}"
                f"; keys: {', '.join(sorted(data)) or 'none'}"
            )
        try:
            repo = safe_yaml.load(data[key]) or {}
        except safe_yaml.YamlError as exc:
            raise ArtifactError(f"artifactRepositoryRef: {name}/{key}: {exc}") from None
        s3 = repo.get("s3") if isinstance(repo, dict) else None
        if not isinstance(s3, dict):
            raise ArtifactError(
                f"artifactRepositoryRef: {name}/{key}: only s3 repositories (in the platform's "
                "bucket) are supported"
            )
        await self.check_location(ns, {"name": f"{name}/{key}", "s3": s3}, f"{ARGO_ROOT}/{ns}/x")
        key_format = str(s3.get("keyFormat") or "{{workflow.name}}/{{pod.name}}")
        self._key_formats[uid] = key_format
        return key_format

    def forget(self, wf: dict[str, Any]) -> None:
        self._key_formats.pop(wf["metadata"].get("uid", ""), None)

    async def check_location(self, namespace: str, art: dict[str, Any], key: str) -> None:
        """Refuse a key outside the namespace's areas, or another bucket or endpoint."""
        store = await self.store()
        s3 = art.get("s3") or {}
        if s3.get("bucket") not in (None, "", store.bucket) or s3.get("endpoint") not in (
            None,
            "",
            store.config.endpoint.split("://", 1)[-1],
        ):
            raise ArtifactError(
                f"artifact {art.get('name')!r}: only the platform's bucket "
                f"{store.bucket!r} is reachable (other buckets and endpoints are not supported)"
            )
        if not in_namespace_area(namespace, key):
            allowed = ", ".join(namespace_prefixes(namespace))
            raise ArtifactError(
                f"artifact {art.get('name')!r}: key {key!r} is outside namespace "
                f"{namespace!r}'s areas of the bucket ({allowed})"
            )

    async def input_objects(self, namespace: str, art: dict[str, Any]) -> list[InputObject]:
        """Presigned GETs for an input artifact: one object, or every object under the key."""
        key = ((art.get("s3") or {}).get("key") or "").strip()
        if not key:
            raise ArtifactError(f"input artifact {art.get('name')!r} has no s3 key")
        await self.check_location(namespace, art, key)
        store = await self.store()
        objects: list[InputObject] = []
        try:
            info = await store.head(key)
        except ObjectNotFound:
            prefix = key.rstrip("/") + "/"
            async for item in store.list(prefix):
                url = await store.presigned_get_url(item.key, self.input_url_ttl)
                objects.append(InputObject(url, item.key[len(prefix) :], item.size))
            if not objects:
                raise ArtifactError(
                    f"input artifact {art.get('name')!r}: no object {key!r} in the store"
                ) from None
            return objects
        url = await store.presigned_get_url(key, self.input_url_ttl)
        return [InputObject(url, "", info.size)]

    async def import_url(self, url: str, key: str, headers: list[dict[str, str]]) -> int:
        """Copy ``url`` into the store at ``key`` (streamed, SSRF-checked); its size.

        The sandbox has no network of its own, so an ``http`` input artifact (or a KFP
        importer's URL) is fetched by the service, as a tenant's request: every hop's address
        is checked (services.common.fetch), the size is capped and a failed copy leaves no
        object (a multipart upload is aborted).
        """
        client = GuardedClient(self.allowed_hosts)
        store = await self.store()
        sent = 0

        async def chunks(response: httpx.Response) -> AsyncIterator[bytes]:
            nonlocal sent
            async for chunk in response.aiter_raw():
                sent += len(chunk)
                if sent > self.max_bytes:
                    raise ArtifactError(f"{url}: larger than {self.max_bytes} bytes")
                yield chunk

        try:
            async with client.open("GET", url, headers=headers) as (final, response):
                if response.status_code != 200:
                    raise ArtifactError(f"{final}: the server answered {response.status_code}")
                info = await store.put_stream(key, chunks(response))
        except FetchError as exc:
            raise ArtifactError(str(exc)) from None
        finally:
            await client.aclose()
        return info.size

    async def upload_form(self, key: str, ttl: int) -> dict[str, Any]:
        """How a step uploads the output artifact at ``key``: ``put``, a presigned PUT URL for
        ``key`` itself (a file, or the tar+gzip), and ``form``, a POST form for keys under
        ``key/`` (the files of a directory stored with ``archive: none``, whose names are not
        known in advance). A POST goes through SeaweedFS's slower form parser, so the PUT
        carries every single-object upload."""
        store = await self.store()
        expires = max(60, min(ttl, MAX_URL_TTL))
        return {
            "put": await store.presigned_put_url(key, expires),
            "form": await store.presigned_post(
                key + "/", expires_in=expires, max_bytes=self.max_bytes
            ),
        }

    async def uploaded(self, key: str, kind: str) -> bool:
        """Whether the store shows a finished upload at ``key`` (or under it, for a dir)."""
        store = await self.store()
        if kind != "dir":
            try:
                await store.head(key)
            except ObjectNotFound:
                return False
            return True
        async for _ in store.list(key.rstrip("/") + "/"):
            return True
        return False

    async def all_present(self, outputs: dict[str, Any]) -> bool:
        """Whether every artifact a (cached) step's outputs name is still in the store."""
        for art in outputs.get("artifacts") or []:
            key = (art.get("s3") or {}).get("key")
            if key and not (await self.uploaded(key, "file") or await self.uploaded(key, "dir")):
                return False
        return True

    # -- a step's own state: its report, and what the service must remember about it --------
    @classmethod
    def state_key(cls, wf: dict[str, Any], node_id: str, name: str) -> str:
        """``<step prefix>/.shipyard/<name>``: deleted with the workflow's artifacts."""
        meta = wf["metadata"]
        return f"{cls.step_prefix(meta['namespace'], meta['name'], node_id)}/.shipyard/{name}"

    async def put_json(self, key: str, data: Any) -> None:
        body = json.dumps(data).encode()

        async def one() -> AsyncIterator[bytes]:
            yield body

        await (await self.store()).put_stream(key, one(), content_type="application/json")

    async def read_json(self, key: str, limit: int = REPORT_LIMIT) -> Any:
        """The JSON object at ``key``; None if there is none (or it is not JSON). Other store
        errors raise ObjectStoreError: the caller tries again later."""
        store = await self.store()
        data = bytearray()
        try:
            async for chunk in store.get_stream(key):
                data += chunk
                if len(data) > limit:
                    return None
        except ObjectNotFound:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    async def forget_key(self, key: str) -> None:
        await (await self.store()).delete(key)

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (a deleted workflow's artifacts)."""
        store = await self.store()
        keys = [item.key async for item in store.list(prefix.rstrip("/") + "/")]
        for key in keys:
            await store.delete(key)


def _timestamp(value: str | None) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
