"""KubernetesRuntime: workloads as Pods, servers behind Services, volumes as PVCs.

The Kubernetes API is the runtime's only state: a job is a Pod (``restartPolicy`` Never or
OnFailure, ``activeDeadlineSeconds``), a server a Pod (``Always``) plus a Service whose DNS
name is its endpoint, a volume a PersistentVolumeClaim in the workload's namespace, and
``files`` a Secret mounted read-only. Everything carries ``app.kubernetes.io/managed-by:
shipyard`` and ``shipyard.io/workload`` (``k8s_manifests``), so a runtime that starts again
finds its pods by label (:meth:`adopt`) and carries on; nothing is kept in memory but a cache.

Status comes from one watch on our pods (``k8s_watch``): resumed from its last
resourceVersion, listed again on ``410 Gone``, and feeding an event per pod, so ``wait``
and following logs never poll. Logs come from the pod log API.

**Ownership.** No ownerReference ever points at a shipyard object: Notebooks, Trials and
the rest live in shipyard's database, not in the cluster, and an ownerReference to a uid
the API server does not know makes its garbage collector delete the dependent at once. A
workload's Service and Secret are owned by its Pod (they go when it goes); the platform
deletes Pods through :meth:`delete` when it deletes its own objects.

**Security.** Every pod runs under Pod Security "restricted" (non-root uid, no privilege
escalation, no capabilities, seccomp RuntimeDefault), as the ServiceAccount
``default-editor`` of its namespace, with no API token automounted; instead a projected
token for the platform's audience (``SHIPYARD_KUBE_TOKEN_AUDIENCE``), ten minutes long,
rotated by the kubelet, sits in the standard in-cluster layout with the namespace and CA.

**What differs from the local runtime**, all said in the status or in docs/kubernetes.md:
``stop_all`` brings a pod's deadline forward to one second (a pod cannot be stopped and
kept), so a stopped pod ends ``Failed``/``Stopped`` and stays listed; ``backoffLimit`` is a
batch Job's, not a Pod's: the runtime counts a job's restarts from the watch and ends it
the same way (``BackoffLimitExceeded``) once it restarted more often than that; the logs of
a restarted server are its current and previous container's, not every run's; an init
step's output is its init container's log, not the workload's (a failed step's end is in
the status message, as locally).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.timestamps import parse_time

from .base import Runtime
from .errors import RuntimeBackendError, VolumeNotFound, WorkloadNotFound
from .k8s_client import KubeApi, KubeApiError, build_api_client
from .k8s_manifests import (
    BACKOFF_ANNOTATION,
    MANAGED_BY,
    MANAGED_LABELS,
    MANAGED_SELECTOR,
    ROLE_LABEL,
    STOPPED_ANNOTATION,
    WORKLOAD_LABEL,
    PodOptions,
    check_labels,
    files_secret_manifest,
    files_secret_name,
    label_value,
    owner_reference,
    pod_manifest,
    pvc_manifest,
    reader_pod_manifest,
    service_manifest,
    service_name,
    workload_record,
)
from .k8s_network import attach_network
from .k8s_profile import namespace_manifest, profile_objects, resource_quota_manifest
from .k8s_reader import check_path, decode_reader_output
from .k8s_status import (
    EndpointFor,
    is_finished,
    over_backoff_limit,
    service_endpoint,
    workload_status,
)
from .k8s_watch import Key, PodCache
from .labels import LabelSelector, parse_selector
from .models import VolumeInfo, WorkloadSpec, WorkloadStatus, check_name, check_namespace
from .quota import QUOTA_NAME, QuotaRefused, api_refusal

log = logging.getLogger(__name__)

#: Seconds between re-reads while waiting, should a watch event ever be lost.
REREAD_SECONDS = 5.0
#: Seconds past a pod's grace period that delete and stop_all wait for it to end.
STOP_MARGIN_SECONDS = 30.0
#: Seconds apply waits for the watch to show the pod it created.
SEEN_SECONDS = 10.0


class KubernetesSettings(BaseSettings):
    """``SHIPYARD_PLATFORM_IMAGE``, ``SHIPYARD_KUBE_*``; a service's settings may set each."""

    model_config = SettingsConfigDict(env_prefix="SHIPYARD_", extra="ignore")

    platform_image: str = "ghcr.io/shipyard/shipyard:0.1.0"
    #: A kubeconfig file; unset: the in-cluster config of the pod the service runs in.
    kube_config: str | None = None
    kube_token_audience: str = "shipyard"
    kube_storage_class: str | None = None
    #: Where the platform (and its gateway) runs: the only source of workload traffic.
    kube_platform_namespace: str = "shipyard"
    kube_run_as_user: int = 1000
    kube_run_as_group: int = 1000
    kube_default_volume_size: str = "1Gi"
    #: The gateway's URL as workloads reach it (SHIPYARD_URL in every pod), if any.
    kube_gateway_url: str | None = None
    #: Seconds a read_file's reader pod may take (scheduling and image pull included).
    kube_read_timeout: float = 120.0


def resolve_settings(settings: Any, overrides: Mapping[str, Any]) -> KubernetesSettings:
    """The environment, then a service's settings attributes, then keyword overrides."""
    values: dict[str, Any] = {}
    for field in KubernetesSettings.model_fields:
        value = getattr(settings, field, None) if settings is not None else None
        if value is not None:
            values[field] = value
    unknown = set(overrides) - set(KubernetesSettings.model_fields)
    if unknown:
        raise TypeError(f"KubernetesRuntime: unknown settings {sorted(unknown)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    base = KubernetesSettings()
    return base.model_copy(update=values)


def _pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def _ns_path(namespace: str, kind: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/{kind}/{name}"


def _is_workload(pod: Mapping[str, Any]) -> bool:
    labels = pod.get("metadata", {}).get("labels") or {}
    return (
        labels.get(MANAGED_BY) == MANAGED_LABELS[MANAGED_BY]
        and WORKLOAD_LABEL in labels
        and ROLE_LABEL not in labels
        and bool(workload_record(pod))
    )


def _made_for(obj: Mapping[str, Any] | None, name: str) -> bool:
    """True for a Service or Secret this runtime made for the workload ``name``."""
    labels = (obj or {}).get("metadata", {}).get("labels") or {}
    return labels.get(MANAGED_BY) == MANAGED_LABELS[MANAGED_BY] and labels.get(
        WORKLOAD_LABEL
    ) == label_value(name)


def _claims(pod: Mapping[str, Any]) -> set[str]:
    return {
        v["persistentVolumeClaim"]["claimName"]
        for v in (pod.get("spec") or {}).get("volumes") or []
        if v.get("persistentVolumeClaim")
    }


def _volume_info(pvc: Mapping[str, Any]) -> VolumeInfo:
    meta = pvc.get("metadata") or {}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in MANAGED_LABELS}
    size = (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    return VolumeInfo(
        namespace=meta["namespace"],
        name=meta["name"],
        size=str(size) if size is not None else None,
        labels=labels,
        created_at=parse_time(meta.get("creationTimestamp")),
    )


class KubernetesRuntime(Runtime):
    """Runs workloads as Pods; see the module docstring and :class:`Runtime`.

    ``settings``: a service's settings object (or None: the environment). ``api_client``: a
    kubernetes-asyncio ``ApiClient`` to use (tests; the caller closes it), else one is
    built from ``SHIPYARD_KUBE_CONFIG`` or the in-cluster config. ``endpoint_for(namespace,
    service, port)`` makes a ready server's endpoint (default: the Service's DNS name; a
    test maps it to where its emulated cluster really serves).
    """

    name = "kubernetes"
    python = "python3"

    def __init__(
        self,
        settings: Any = None,
        *,
        api_client: Any = None,
        endpoint_for: EndpointFor | None = None,
        **overrides: Any,
    ) -> None:
        self.config = resolve_settings(settings, overrides)
        self.platform_image = self.config.platform_image
        self.endpoint_for = endpoint_for or service_endpoint
        gateway = self.config.kube_gateway_url or getattr(settings, "gateway_url", None)
        self._gateway_url = str(gateway) if gateway else None
        self.options = PodOptions(
            platform_image=self.config.platform_image,
            run_as_user=self.config.kube_run_as_user,
            run_as_group=self.config.kube_run_as_group,
            token_audience=self.config.kube_token_audience,
            platform_env={"SHIPYARD_URL": self._gateway_url} if self._gateway_url else {},
        )
        self._api_client = api_client
        self._owns_client = api_client is None
        self._api: KubeApi | None = None
        self._cache: PodCache | None = None
        self._init_lock = asyncio.Lock()
        self._locks: dict[Key, asyncio.Lock] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.sync_timeout = 60.0

    def workload_gateway_url(self, namespace: str) -> str | None:
        """``kube_gateway_url`` (else the service's ``gateway_url``): every pod's
        ``$SHIPYARD_URL``, the same in every namespace."""
        return self._gateway_url

    # -- plumbing ----------------------------------------------------------------------------

    async def _kube(self) -> KubeApi:
        async with self._init_lock:
            if self._api is None:
                if self._api_client is None:
                    self._api_client = await build_api_client(self.config.kube_config)
                self._api = KubeApi(self._api_client)
            return self._api

    async def _pods(self) -> PodCache:
        """The pod cache, listed at least once (started on first use)."""
        api = await self._kube()
        if self._cache is None:
            self._cache = PodCache(api, MANAGED_SELECTOR, on_change=self._on_pod_change)
        await self._cache.wait_synced(self.sync_timeout)
        return self._cache

    def _on_pod_change(self, pod: dict[str, Any]) -> None:
        """A job over its backoffLimit is ended as stop_all ends a pod, marked as such."""
        if not over_backoff_limit(pod):
            return
        meta = pod["metadata"]
        path = _ns_path(meta["namespace"], "pods", meta["name"])
        body = {
            "metadata": {"annotations": {BACKOFF_ANNOTATION: "true"}},
            "spec": {"activeDeadlineSeconds": 1},
        }
        task = asyncio.get_running_loop().create_task(self._patch_quietly(path, body))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _patch_quietly(self, path: str, body: dict[str, Any]) -> None:
        try:
            await (await self._kube()).patch(path, body)
        except KubeApiError as exc:  # gone meanwhile, or the next event tries again
            log.info("patching %s: %s", path, exc)

    @property
    def pod_cache(self) -> PodCache | None:
        """The watch behind statuses (for tests and metrics); None before first use."""
        return self._cache

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod from the cache, else from the API (created a moment ago, not seen yet)."""
        cache = await self._pods()
        pod = cache.get(namespace, name)
        if pod is None:
            pod = await (await self._kube()).get_or_none(_ns_path(namespace, "pods", name))
        return pod

    async def _workload_pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod = await self._read_pod(check_namespace(namespace), check_name(name))
        if pod is None or not _is_workload(pod):
            raise WorkloadNotFound(namespace, name)
        return pod

    # -- adopt and apply ---------------------------------------------------------------------

    async def adopt(self) -> builtins.list[WorkloadStatus]:
        """Find the pods labelled as ours (nothing else to take over: the API keeps it all)."""
        found = await self.list()
        running = sum(1 for s in found if not s.finished)
        if found:
            log.info("runtime adopted %d workloads (%d still running)", len(found), running)
        return found

    async def apply(self, spec: WorkloadSpec | Mapping[str, Any]) -> WorkloadStatus:
        if not isinstance(spec, WorkloadSpec):
            spec = WorkloadSpec.model_validate(spec)
        check_labels(spec.labels)  # what the API server would refuse, said with the field
        api = await self._kube()
        key = (spec.namespace, spec.name)
        async with self._lock(key):
            existing = await self._read_pod(*key)
            if existing is not None and not _is_workload(existing):
                raise RuntimeBackendError(
                    f"pod {spec.namespace}/{spec.name} exists and was not made by shipyard; "
                    "choose another name"
                )
            if existing is not None:
                return workload_status(existing, self.endpoint_for)
            failure = await self._unrunnable(spec)
            runnable = failure is None
            if spec.files and runnable:
                await self._put_files(api, spec)
            try:
                pod = await api.create(
                    _pods_path(spec.namespace), pod_manifest(spec, self.options, failure)
                )
            except KubeApiError as exc:
                refused = _quota_refusal(exc)
                if refused is not None:
                    if spec.files:  # made for this pod alone; a later try makes it again
                        await api.delete(
                            _ns_path(spec.namespace, "secrets", files_secret_name(spec.name))
                        )
                    raise refused from None
                if exc.status != 409:
                    raise
                pod = await api.get(_ns_path(spec.namespace, "pods", spec.name))
                return workload_status(pod, self.endpoint_for)
            if runnable and pod.get("metadata", {}).get("uid"):
                await self._attach_dependents(api, spec, pod)
            # Read your own writes: list() and volume_users() answer from the watch.
            uid = pod.get("metadata", {}).get("uid")
            await self._until(
                key,
                lambda p: p is not None and p.get("metadata", {}).get("uid") == uid,
                SEEN_SECONDS,
            )
        return workload_status(pod, self.endpoint_for)

    async def _unrunnable(self, spec: WorkloadSpec) -> tuple[str, str] | None:
        """Why the workload cannot start, in the local runtime's words; None if it can."""
        api = await self._kube()
        for vol in spec.volumes:
            if vol.host_path is not None:
                return (
                    "HostPathNotAllowed",
                    f"volumes[{vol.name}].hostPath: host paths are never mounted into a "
                    "workload; use a persistentVolumeClaim of the namespace",
                )
            claim = vol.persistent_volume_claim
            if claim is None:
                continue
            pvc = await api.get_or_none(
                _ns_path(spec.namespace, "persistentvolumeclaims", claim.claim_name)
            )
            if pvc is None or pvc.get("metadata", {}).get("deletionTimestamp"):
                return (
                    "PersistentVolumeClaimNotFound",
                    f"PersistentVolumeClaim {claim.claim_name} not found in namespace "
                    f"{spec.namespace}",
                )
        return None

    async def _put_files(self, api: KubeApi, spec: WorkloadSpec) -> None:
        """The files Secret, made before the pod so that the pod starts with it."""
        manifest = files_secret_manifest(spec)
        path = f"/api/v1/namespaces/{spec.namespace}/secrets"
        if not await api.create_or_keep(path, manifest):
            # Left over by a workload of the same name that was not deleted cleanly.
            await api.patch(
                f"{path}/{manifest['metadata']['name']}",
                {"metadata": {"labels": manifest["metadata"]["labels"]}, "data": manifest["data"]},
            )

    async def _attach_dependents(
        self, api: KubeApi, spec: WorkloadSpec, pod: Mapping[str, Any]
    ) -> None:
        """The Service of a server, and the pod's ownership of it and of the files Secret;
        a grouped workload's hostname Service and network policy (k8s_network.py)."""
        await attach_network(api, spec, pod)
        if spec.files:
            await api.patch(
                _ns_path(spec.namespace, "secrets", files_secret_name(spec.name)),
                {"metadata": {"ownerReferences": [owner_reference(pod)]}},
            )
        if spec.kind == "server":
            path = f"/api/v1/namespaces/{spec.namespace}/services"
            if not await api.create_or_keep(path, service_manifest(spec, pod)):
                await api.patch(
                    f"{path}/{service_name(spec.name)}",
                    {"metadata": {"ownerReferences": [owner_reference(pod)]}},
                )

    # -- status and waiting ------------------------------------------------------------------

    async def status(self, namespace: str, name: str) -> WorkloadStatus:
        return workload_status(await self._workload_pod(namespace, name), self.endpoint_for)

    async def wait(
        self,
        namespace: str,
        name: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract asks for it
        *,
        ready: bool = False,
    ) -> WorkloadStatus:
        cache = await self._pods()
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while True:
            changed = cache.waiter((namespace, name))
            status = await self.status(namespace, name)
            if status.finished or (ready and status.ready):
                return status
            left = None if end is None else end - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError(
                    f"workload {namespace}/{name} still {status.phase.value} after {timeout}s"
                )
            wait_for = REREAD_SECONDS if left is None else min(left, REREAD_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_for):
                    await changed.wait()

    async def _until(self, key: Key, done: Any, limit: float) -> dict[str, Any] | None:
        """Wait (on watch events) until ``done(pod or None)``; the last pod seen."""
        cache = await self._pods()
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        while True:
            changed = cache.waiter(key)
            pod = cache.get(*key)
            if done(pod):
                return pod
            left = end - loop.time()
            if left <= 0:
                return pod
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, REREAD_SECONDS)):
                    await changed.wait()

    # -- delete and stop ---------------------------------------------------------------------

    async def delete(self, namespace: str, name: str) -> None:
        api = await self._kube()
        key = (check_namespace(namespace), check_name(name))
        async with self._lock(key):
            pod = await self._read_pod(*key)
            if pod is not None and _is_workload(pod):
                grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30)
                await api.delete(_ns_path(namespace, "pods", name))
                gone = await self._until(key, lambda p: p is None, grace + STOP_MARGIN_SECONDS)
                if gone is not None:
                    log.warning("pod %s/%s still terminating after %.0fs", namespace, name, grace)
            # Owned by the pod, so the garbage collector removes them too: do not wait for it.
            for kind, obj_name in (
                ("services", service_name(name)),
                ("secrets", files_secret_name(name)),
            ):
                path = _ns_path(namespace, kind, obj_name)
                if _made_for(await api.get_or_none(path), name):
                    await api.delete(path)

    async def stop_all(self, label_selector: LabelSelector = None) -> builtins.list[WorkloadStatus]:
        """Bring each running pod's deadline forward to one second, marked as stopped."""
        targets = [s for s in await self.list(label_selector) if not s.finished]
        api = await self._kube()

        async def stop(status: WorkloadStatus) -> WorkloadStatus:
            key = (status.namespace, status.name)
            with contextlib.suppress(KubeApiError):  # gone meanwhile: nothing to stop
                pod = await api.patch(
                    _ns_path(status.namespace, "pods", status.name),
                    {
                        "metadata": {"annotations": {STOPPED_ANNOTATION: "true"}},
                        "spec": {"activeDeadlineSeconds": 1},
                    },
                )
                grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30)
                await self._until(
                    key,
                    lambda p: p is None or workload_status(p).finished,
                    grace + STOP_MARGIN_SECONDS,
                )
            try:
                return await self.status(*key)
            except WorkloadNotFound:
                return status

        return list(await asyncio.gather(*(stop(s) for s in targets)))

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        cache, self._cache = self._cache, None
        if cache is not None:
            await cache.close()
        api, self._api = self._api, None
        if api is not None and self._owns_client:
            await api.close()
            self._api_client = None

    async def run_is_live(self, binding: str) -> bool:
        """``<namespace>/<pod>/<pod uid>``: the pod a projected token is bound to."""
        parts = binding.split("/")
        if len(parts) != 3:
            return False
        try:
            pod = await self._read_pod(parts[0], parts[1])
        except (ValueError, KubeApiError):
            return False
        return (
            pod is not None
            and pod.get("metadata", {}).get("uid") == parts[2]
            and not is_finished(pod)
        )

    # -- list and logs -----------------------------------------------------------------------

    async def list(
        self, label_selector: LabelSelector = None, namespace: str | None = None
    ) -> builtins.list[WorkloadStatus]:
        match = parse_selector(label_selector)
        cache = await self._pods()
        found = [
            workload_status(pod, self.endpoint_for)
            for pod in cache.pods()
            if _is_workload(pod)
            and (namespace is None or pod["metadata"].get("namespace") == namespace)
            and match(workload_record(pod).get("labels") or {})
        ]
        return sorted(found, key=lambda s: (s.namespace, s.name))

    async def volume_users(self, namespace: str, claim: str) -> builtins.list[str]:
        cache = await self._pods()
        return sorted(
            pod["metadata"]["name"]
            for pod in cache.pods()
            if _is_workload(pod)
            and pod["metadata"].get("namespace") == namespace
            and claim in _claims(pod)
            and not workload_status(pod).finished
        )

    async def logs(
        self, namespace: str, name: str, tail: int | None = None, follow: bool = False
    ) -> AsyncIterator[str]:
        pod = await self._workload_pod(namespace, name)
        if not follow:
            for line in await self._log_lines(pod, tail):
                yield line
            return
        key = (namespace, name)
        # A container that has not started has no log yet: wait for it (or for the end).
        current = await self._until(key, _started_or_over, float("inf"))
        if current is None or not _container_state(current):
            return  # deleted, held back at apply, or stopped before it started: no log
        restarts = workload_status(current).restart_count
        query: list[tuple[str, str | int]] = [("follow", "true")]
        if tail is not None:
            query.append(("tailLines", max(0, tail)))
        api = await self._kube()
        try:
            async with api.lines(_ns_path(namespace, "pods", name) + "/log", query) as lines:
                async for raw in lines:
                    yield raw.decode(errors="replace").rstrip("\n")
        except KubeApiError as exc:
            if exc.status not in (400, 404):
                raise
        # The stream ends as the container exits; the pod's phase follows a moment later.
        await self._until(
            key,
            lambda p: (
                p is None
                or workload_status(p).finished
                or workload_status(p).restart_count > restarts
            ),
            STOP_MARGIN_SECONDS,
        )

    async def _log_lines(self, pod: Mapping[str, Any], tail: int | None) -> builtins.list[str]:
        """The current container's log, after the previous one's if it restarted."""
        api = await self._kube()
        meta = pod["metadata"]
        path = _ns_path(meta["namespace"], "pods", meta["name"]) + "/log"
        query: list[tuple[str, str | int]] = [] if tail is None else [("tailLines", max(0, tail))]
        texts: builtins.list[str] = []
        previous = workload_status(pod).restart_count > 0
        for extra in ([("previous", "true")], []) if previous else ([],):
            try:
                texts.append(await api.text(path, [*query, *extra]))
            except KubeApiError as exc:
                if exc.status not in (400, 404):  # not started yet, or no previous container
                    raise
        lines = [line for text in texts for line in _split_lines(text)]
        return lines if tail is None else lines[max(0, len(lines) - tail) :]

    # -- volumes -----------------------------------------------------------------------------

    async def create_volume(
        self,
        namespace: str,
        name: str,
        size: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> VolumeInfo:
        api = await self._kube()
        path = _ns_path(check_namespace(namespace), "persistentvolumeclaims", check_name(name))
        existing = await api.get_or_none(path)
        if existing is None:
            manifest = pvc_manifest(
                namespace,
                name,
                size or self.config.kube_default_volume_size,
                labels,
                self.config.kube_storage_class,
            )
            try:
                made = await api.create_or_keep(
                    f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", manifest
                )
            except KubeApiError as exc:
                refused = _quota_refusal(exc)
                if refused is None:
                    raise
                raise refused from None
            if made:
                log.info("created PersistentVolumeClaim %s/%s", namespace, name)
            existing = await api.get(path)
        return _volume_info(existing)

    async def delete_volume(self, namespace: str, name: str) -> None:
        api = await self._kube()
        await api.delete(
            _ns_path(check_namespace(namespace), "persistentvolumeclaims", check_name(name))
        )

    async def list_volumes(
        self, namespace: str | None = None, label_selector: LabelSelector = None
    ) -> builtins.list[VolumeInfo]:
        match = parse_selector(label_selector)
        api = await self._kube()
        path = (
            f"/api/v1/namespaces/{check_namespace(namespace)}/persistentvolumeclaims"
            if namespace
            else "/api/v1/persistentvolumeclaims"
        )
        listing = await api.get(path, [("labelSelector", MANAGED_SELECTOR)])
        infos = [
            _volume_info(pvc)
            for pvc in listing.get("items") or []
            if not pvc.get("metadata", {}).get("deletionTimestamp")
            and (pvc.get("metadata", {}).get("labels") or {}).get(MANAGED_BY)
            == MANAGED_LABELS[MANAGED_BY]
        ]
        return sorted((v for v in infos if match(v.labels)), key=lambda v: (v.namespace, v.name))

    async def volume_exists(self, namespace: str, name: str) -> bool:
        api = await self._kube()
        pvc = await api.get_or_none(
            _ns_path(check_namespace(namespace), "persistentvolumeclaims", check_name(name))
        )
        return pvc is not None and not pvc.get("metadata", {}).get("deletionTimestamp")

    async def read_file(
        self, namespace: str, claim: str, path: str, max_bytes: int = 1024 * 1024
    ) -> bytes:
        """Through a reader pod that mounts the claim read-only; see ``k8s_reader``.

        The pod must be able to mount the claim: a ReadWriteOnce volume in use on another
        node keeps it Pending, and the read fails after ``SHIPYARD_KUBE_READ_TIMEOUT``.
        """
        relative = check_path(path)
        if not await self.volume_exists(namespace, claim):
            raise VolumeNotFound(namespace, claim)
        api = await self._kube()
        pod_name = f"shipyard-read-{uuid.uuid4().hex[:12]}"
        manifest = reader_pod_manifest(
            namespace, pod_name, claim, relative, max_bytes, self.options
        )
        await api.create(_pods_path(namespace), manifest)
        finished = False
        try:
            pod = await self._until(
                (namespace, pod_name),
                lambda p: p is not None and is_finished(p),
                self.config.kube_read_timeout,
            )
            finished = pod is not None and is_finished(pod)
            if not finished or (pod or {}).get("status", {}).get("phase") != "Succeeded":
                raise RuntimeBackendError(
                    f"reading {path} from {namespace}/{claim}: the reader pod did not "
                    f"succeed in {self.config.kube_read_timeout:g}s "
                    f"({workload_status_words(pod)})"
                )
            text = await api.text(_ns_path(namespace, "pods", pod_name) + "/log")
        finally:
            # A finished pod has nothing left to stop: remove it at once.
            await api.delete(_ns_path(namespace, "pods", pod_name), 0 if finished else None)
        return decode_reader_output(text, path, max_bytes)

    # -- profiles ----------------------------------------------------------------------------

    async def ensure_namespace(
        self, namespace: str, owner: str, quota: Mapping[str, str] | None = None
    ) -> None:
        api = await self._kube()
        manifest = namespace_manifest(check_namespace(namespace), owner)
        if not await api.create_or_keep("/api/v1/namespaces", manifest):
            await api.patch(
                f"/api/v1/namespaces/{namespace}",
                {"metadata": {k: manifest["metadata"][k] for k in ("labels", "annotations")}},
            )
        for path, obj in profile_objects(namespace, owner, self.config.kube_platform_namespace):
            await api.create_or_keep(path, obj)
        # The API server enforces the quota. An edited one is one merge patch, with the names
        # no longer limited set to null: never a moment without a quota.
        quotas = f"/api/v1/namespaces/{namespace}/resourcequotas"
        if quota:
            manifest = resource_quota_manifest(namespace, quota)
            if not await api.create_or_keep(quotas, manifest):
                current = await api.get(f"{quotas}/{QUOTA_NAME}")
                hard: dict[str, Any] = dict.fromkeys((current.get("spec") or {}).get("hard") or {})
                hard.update(quota)
                await api.patch(f"{quotas}/{QUOTA_NAME}", {"spec": {"hard": hard}})
        else:
            await api.delete(f"{quotas}/{QUOTA_NAME}")

    async def delete_namespace(self, namespace: str) -> None:
        api = await self._kube()
        await api.delete(f"/api/v1/namespaces/{check_namespace(namespace)}")


def _container_state(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The container's state once it has started (running or terminated), else empty."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("running") or state.get("terminated"):
            return dict(state)
    return {}


def _started_or_over(pod: Mapping[str, Any] | None) -> bool:
    """Gone, finished (held back at apply and stopped before starting included), or started."""
    return pod is None or workload_status(pod).finished or bool(_container_state(pod))


def _split_lines(text: str) -> builtins.list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def workload_status_words(pod: Mapping[str, Any] | None) -> str:
    if pod is None:
        return "the pod is gone"
    status = pod.get("status") or {}
    return f"phase {status.get('phase') or 'Pending'}, {status.get('reason') or 'no reason given'}"


def _quota_refusal(exc: KubeApiError) -> QuotaRefused | None:
    """The API server's 403 for an object over the namespace's quota, as QuotaRefused."""
    refused = api_refusal(exc.message) if exc.status == 403 else None
    return QuotaRefused(exc.message, refused.final) if refused is not None else None
