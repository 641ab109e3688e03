"""The workload runtime contract every service programs against.

A *workload* is one container-like process: a Trial, a pipeline step, a notebook server or a
model server. Services never start processes themselves; they hand a :class:`WorkloadSpec` to a
:class:`Runtime` and read back a :class:`WorkloadStatus`. Two implementations exist (or will):
``local`` (sandboxed host processes) and ``kubernetes`` (Pods, PVCs). Both must pass the same
contract suite in ``tests/common/runtime/``.

Everything a workload needs from the platform is part of this interface: its identity (a
short-lived service-account token in the standard in-cluster layout,
``/var/run/secrets/kubernetes.io/serviceaccount/{token,namespace,ca.crt}``, with
``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` naming an API server that ``ca.crt``
verifies: the local runtime points them at the platform's own API, see ``incluster.py``; a
Kubernetes pod gets its cluster's), small read-only ``files`` in its spec,
the interpreter that runs platform tools in it (:attr:`Runtime.python`), the image of the
platform's own servers (:attr:`Runtime.platform_image`), and the gateway's URL as it reaches
it (``$SHIPYARD_URL``, :meth:`Runtime.workload_gateway_url`). Nothing goes through a
directory of the host that a service and a workload share.

Like JupyterHub's ``Spawner`` (start / poll / stop / get_state / load_state), but keyed by
(namespace, name) instead of held in memory: the runtime's own state store (a directory, or the
Kubernetes API) is the source of truth, so a service that restarts simply builds a new Runtime
and finds every workload where it left it. There is no ``load_state``: nothing to reload.

What a subclass implements, and what each method promises:

``apply(spec) -> WorkloadStatus``
    Create the workload unless one with the same (namespace, name) already exists; in that case
    return its status and start nothing (a workload is immutable like a Pod: delete it to change
    it, or to run it again). Safe to call from a reconcile loop on every resync. Problems the
    user can fix (unknown claim, missing sandbox) do not raise: they give a ``Failed`` status
    whose ``reason``/``message`` say what to do. Malformed specs raise ``ValueError`` (pydantic
    ``ValidationError``) with the field path. Over the namespace's quota (quota.py) a workload
    that fits once others finish either waits, made and ``Pending`` with reason
    ``ExceededQuota`` (the local runtime starts it when there is room), or is not made at all:
    :class:`~.quota.QuotaRefused` (Kubernetes: the API server refuses the pod, and the caller
    tries again later). One that never fits is ``Failed``/``ExceededQuota``, or
    ``QuotaRefused`` with ``final``.
``adopt() -> list[WorkloadStatus]``
    Find the workloads an earlier instance of the service started (after a restart) and take
    them over: their status, logs and endings are followed again. Idempotent.
``status(namespace, name) -> WorkloadStatus``
    ``phase`` Pending -> Running -> Succeeded | Failed; ``exit_code``, ``start_time`` and
    ``finish_time`` once known; ``reason``/``message`` (e.g. ``DeadlineExceeded``, ``Error``,
    ``CrashLoopBackOff``, ``PersistentVolumeClaimNotFound``); for servers ``ready`` and
    ``endpoint`` only after the readiness probe passed: an opaque URL the gateway can reach
    (a sandbox's socket locally, a Service's DNS name on Kubernetes). A server listens on
    ``$PORT`` on all of its own interfaces (``0.0.0.0``): the runtime decides who reaches it.
    Raises :class:`WorkloadNotFound`.
``wait(namespace, name, timeout=None, *, ready=False) -> WorkloadStatus``
    Block (without busy polling) until the workload finished, or with ``ready=True`` until it
    is ready or finished. Raises ``TimeoutError`` after ``timeout`` seconds.
``delete(namespace, name) -> None``
    Stop the workload (SIGTERM, then SIGKILL after ``terminationGracePeriodSeconds``) together
    with every process it started, and forget it and its logs. Idempotent: deleting an unknown
    workload is not an error.
``logs(namespace, name, tail=None, follow=False) -> AsyncIterator[str]``
    stdout and stderr interleaved, one line per item without the newline. ``tail`` limits the
    backlog to the last N lines. With ``follow`` it yields lines as they are written and ends
    when the workload finishes (or is deleted).
``list(label_selector=None, namespace=None) -> list[WorkloadStatus]``
    Selector as a dict (``{"a": "b"}``) or Kubernetes string (``"a=b,c!=d,e in (x,y)"``).
``create_volume / delete_volume / list_volumes / volume_exists``
    Volumes back PersistentVolumeClaims. ``create_volume`` is idempotent, ``delete_volume``
    too. A workload may only mount a claim that exists. Where a volume's data lives is the
    runtime's business: no caller ever sees a host path.
``read_file(namespace, claim, path, max_bytes)``
    The bytes of one file in a volume (a metrics file a trial wrote), read however the runtime
    can (locally from its directory, on Kubernetes through a short reader pod). Links are not
    followed out of the volume. Raises VolumeNotFound, FileNotFoundError, or ValueError for a
    file over ``max_bytes``. Bulk data goes through the object store instead.
``volume_users(namespace, claim)``
    The unfinished workloads that mount a claim; a claim in use is not deleted.
``stop_all(label_selector=None)`` and ``shutdown()``
    Orderly stop (workloads end ``Failed``/``Stopped`` but stay listed). Only a crash of the
    service leaves workloads running, to be re-adopted by the next Runtime. ``close()`` releases
    the runtime's own resources and leaves workloads running (for a rolling restart).
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator, Mapping
from typing import Any

from .labels import LabelSelector
from .models import VolumeInfo, WorkloadSpec, WorkloadStatus


class Runtime(abc.ABC):
    """Abstract workload runtime; see the module docstring for the full contract."""

    #: Name used by :func:`services.common.runtime.get_runtime` (``SHIPYARD_RUNTIME``).
    name: str = "abstract"
    #: The Python that runs the platform's stdlib tools (the step wrapper) inside a workload.
    python: str = "python3"
    #: The image of the platform's own servers (the model server); None where images are
    #: not pulled (the local runtime runs them with the platform's Python environment).
    platform_image: str | None = None

    async def adopt(self) -> builtins.list[WorkloadStatus]:
        """Take over the workloads an earlier instance started; return their statuses."""
        return await self.list()

    @abc.abstractmethod
    async def apply(self, spec: WorkloadSpec | Mapping[str, Any]) -> WorkloadStatus:
        """Create the workload if (namespace, name) is new; return its status either way."""

    @abc.abstractmethod
    async def status(self, namespace: str, name: str) -> WorkloadStatus:
        """Current status; raises WorkloadNotFound."""

    @abc.abstractmethod
    async def wait(
        self,
        namespace: str,
        name: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract asks for it
        *,
        ready: bool = False,
    ) -> WorkloadStatus:
        """Wait until finished (or ready, with ready=True); raises TimeoutError."""

    @abc.abstractmethod
    async def delete(self, namespace: str, name: str) -> None:
        """Kill the workload's whole process tree and forget it; idempotent."""

    @abc.abstractmethod
    def logs(
        self, namespace: str, name: str, tail: int | None = None, follow: bool = False
    ) -> AsyncIterator[str]:
        """Stream the workload's output lines (stdout and stderr interleaved)."""

    @abc.abstractmethod
    async def list(
        self, label_selector: LabelSelector = None, namespace: str | None = None
    ) -> builtins.list[WorkloadStatus]:
        """Statuses of the workloads whose labels match."""

    @abc.abstractmethod
    async def create_volume(
        self,
        namespace: str,
        name: str,
        size: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> VolumeInfo:
        """Create (or return the existing) volume backing a PersistentVolumeClaim."""

    @abc.abstractmethod
    async def delete_volume(self, namespace: str, name: str) -> None:
        """Delete the volume and its data; idempotent."""

    @abc.abstractmethod
    async def list_volumes(
        self, namespace: str | None = None, label_selector: LabelSelector = None
    ) -> builtins.list[VolumeInfo]:
        """Volumes, optionally filtered by namespace and labels."""

    async def ensure_namespace(  # noqa: B027
        self, namespace: str, owner: str, quota: Mapping[str, str] | None = None
    ) -> None:
        """Make the place a profile's workloads run in (on Kubernetes: the Namespace, its
        ServiceAccounts and RoleBindings, as Kubeflow's profile controller does), with
        ``quota`` (a ResourceQuota's ``hard`` map, ``quota.hard_of``) as its ResourceQuota
        ``kf-resource-quota``, or none. Idempotent. Nothing to make by default."""

    async def delete_namespace(self, namespace: str) -> None:  # noqa: B027
        """Remove what :meth:`ensure_namespace` made; idempotent."""

    async def volume_exists(self, namespace: str, name: str) -> bool:
        """True if the claim ``name`` exists in ``namespace``."""
        return any(v.name == name for v in await self.list_volumes(namespace))

    @abc.abstractmethod
    async def read_file(
        self, namespace: str, claim: str, path: str, max_bytes: int = 1024 * 1024
    ) -> bytes:
        """One file of a volume (``path`` relative to its root); see the module docstring."""

    @abc.abstractmethod
    async def volume_users(self, namespace: str, claim: str) -> builtins.list[str]:
        """Names of the unfinished workloads that mount ``claim`` (pvc-protection uses it)."""

    @abc.abstractmethod
    async def stop_all(self, label_selector: LabelSelector = None) -> builtins.list[WorkloadStatus]:
        """Stop every running workload that matches (orderly shutdown); return their statuses."""

    def workload_gateway_url(self, namespace: str) -> str | None:
        """The platform gateway's URL as this runtime's workloads in ``namespace`` reach it
        (the ``$SHIPYARD_URL`` they get); None when the runtime gives them none.

        Only the runtime knows the way out of its workloads (a local sandbox reaches the
        gateway through a relay at an address of its own network; a pod at the gateway's
        Service), so a service that hands a workload the gateway's address in an argument
        (a transformer's ``--predictor_host``) asks here rather than guessing.
        """
        return None

    async def run_is_live(self, binding: str) -> bool:
        """True while the workload run ``<ns>/<name>/<run id>`` (a token's binding) is going.

        The gateway asks this before it honours a workload's service-account token, so a
        token dies with its run, as Kubernetes' bound tokens die with their pod.
        """
        raise NotImplementedError

    async def shutdown(self) -> None:
        """Stop all workloads, then release resources."""
        await self.stop_all()
        await self.close()

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the runtime's own resources; running workloads keep running."""

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
