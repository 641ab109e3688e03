"""The local runtime's namespace quotas: each profile's ``kf-resource-quota`` as a file, the
lock that makes admitting a workload against it atomic across the platform's services, and
the workloads waiting for room.

Every service that starts workloads has its own ``LocalRuntime`` over one state directory, so
the namespace's usage is what all of them have recorded: the lock is a file lock
(``flock``), held while the usage is read and the new workload's spec is written, so the next
admission, in whichever process, counts it. Without a quota file nothing is locked or read.

A workload that fits once others finish waits (``Pending``, ``ExceededQuota``, ``queuedAt`` in
its state) and the runtime that applied or adopted it starts it when there is room
(:class:`QuotaAdmission`, the part of ``LocalRuntime`` that admits).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import VolumeNotFound
from .local_files import SPEC, STATE, read_json, write_json_atomic
from .models import Phase, VolumeInfo, WorkloadSpec
from .quota import (
    EXCEEDED,
    QUOTA_RETRY_SECONDS,
    QuotaRefused,
    Refusal,
    refusal,
    volume_refusal,
)
from .volumes import VolumeStore

log = logging.getLogger(__name__)

#: In a waiting workload's state: when it was first refused for want of room in the quota.
QUEUED = "queuedAt"


class QuotaFiles:
    """``<runtime>/quotas/<namespace>.json`` (the hard map) and ``.lock`` beside it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def set(self, namespace: str, hard: Mapping[str, str] | None) -> None:
        """Record the namespace's quota, or remove it (None or empty)."""
        path = self.root / f"{namespace}.json"
        if hard:
            self.root.mkdir(mode=0o700, exist_ok=True)
            write_json_atomic(path, {"hard": dict(hard)})
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def hard(self, namespace: str) -> dict[str, str]:
        state = read_json(self.root / f"{namespace}.json") or {}
        hard = state.get("hard") or {}
        return {str(k): str(v) for k, v in hard.items()}

    @contextlib.contextmanager
    def admitting(self, namespace: str) -> Iterator[dict[str, str]]:
        """The namespace's quota, under its lock while the caller admits a workload; {} (and
        no lock) when it has none."""
        if not (self.root / f"{namespace}.json").exists():
            yield {}
            return
        fd = os.open(self.root / f"{namespace}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for one directory scan: milliseconds
            yield self.hard(namespace)
        finally:
            os.close(fd)


def _unfinished(state: Mapping[str, Any] | None) -> bool:
    """A workload counted against its namespace's quota: started or starting, not over, and
    not waiting for room."""
    if state is None:
        return True
    return state.get("phase") not in (Phase.SUCCEEDED, Phase.FAILED) and QUEUED not in state


class QuotaAdmission:
    """``LocalRuntime``'s admission of a new workload against its namespace's quota, and the
    queue of those waiting for room. The runtime provides the lock per workload, the specs of a
    namespace and the launch."""

    quotas: QuotaFiles
    volumes: VolumeStore
    _queued: dict[Path, None]
    _queue_task: asyncio.Task[None] | None

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        raise NotImplementedError

    def _workload_specs(self, namespace: str | None) -> Iterator[tuple[Path, WorkloadSpec]]:
        raise NotImplementedError

    def _read_spec(self, wdir: Path) -> WorkloadSpec:
        raise NotImplementedError

    async def _launch(self, wdir: Path, spec: WorkloadSpec) -> None:
        raise NotImplementedError

    def _create_volume(
        self, namespace: str, name: str, size: str | None, labels: Mapping[str, str] | None
    ) -> VolumeInfo:
        """A new claim, admitted against its namespace's quota (``persistentvolumeclaims``,
        ``requests.storage``) under the namespace's lock; QuotaRefused, in the API server's
        words, when it does not fit. An existing claim is returned as it is."""
        with contextlib.suppress(VolumeNotFound):
            self.volumes.resolve(namespace, name)
            return self.volumes.create(namespace, name, size, labels)  # it exists: as it is
        with self.quotas.admitting(namespace) as hard:
            sizes = (v.size for v in self.volumes.list(namespace, None))
            refused = volume_refusal(hard, size, sizes) if hard else None
            if refused is not None:
                message = f'persistentvolumeclaims "{name}" is forbidden: {refused.message}'
                raise QuotaRefused(message, refused.final)
            return self.volumes.create(namespace, name, size, labels)

    def _admit(self, wdir: Path, spec: WorkloadSpec) -> bool:
        """Record ``spec``, and whether the namespace's quota admits it now. A workload that
        fits once others finish waits, ``Pending`` with reason ``ExceededQuota``, and starts
        when there is room (``_retry_queued``), as a Job's pod on Kubernetes; one that can
        never fit is ``Failed``, ``ExceededQuota``. Neither has started."""
        with self.quotas.admitting(spec.namespace) as hard:
            refused = self._refusal(wdir, spec, hard)
            write_json_atomic(wdir / SPEC, spec.model_dump(mode="json", by_alias=True))
            if refused is not None:
                self._refuse(wdir, spec, refused, time.time())
        return refused is None

    def _refusal(self, wdir: Path, spec: WorkloadSpec, hard: Mapping[str, str]) -> Refusal | None:
        if not hard:
            return None
        live = (
            other
            for odir, other in self._workload_specs(spec.namespace)
            if odir != wdir and _unfinished(read_json(odir / STATE))
        )
        return refusal(hard, spec, live)

    def _refuse(self, wdir: Path, spec: WorkloadSpec, refused: Refusal, since: float) -> None:
        state: dict[str, Any] = {"reason": EXCEEDED, "message": refused.message, "restartCount": 0}
        if refused.final:
            state.update(phase=Phase.FAILED.value, finishTime=time.time())
        else:
            state.update(phase=Phase.PENDING.value, **{QUEUED: since})
            self._queue(wdir)
        log.info(
            "workload %s/%s %s: %s",
            spec.namespace,
            spec.name,
            "refused" if refused.final else "waits for room",
            refused.message,
        )
        write_json_atomic(wdir / STATE, state)

    def _queue(self, wdir: Path) -> None:
        self._queued[wdir] = None
        if self._queue_task is None or self._queue_task.done():
            self._queue_task = asyncio.get_running_loop().create_task(self._retry_queued())

    async def _retry_queued(self) -> None:
        """Start each waiting workload once its namespace's quota has room, in the order they
        came; one deleted, or started by another service's runtime, is dropped."""
        while self._queued:
            await asyncio.sleep(QUOTA_RETRY_SECONDS)
            for wdir in list(self._queued):
                async with self._lock(wdir.parent.name, wdir.name):
                    try:
                        admitted = self._admit_queued(wdir)
                    except Exception:  # noqa: BLE001 - one bad record must not stop the rest
                        log.exception("workload %s: retrying its quota admission failed", wdir)
                        continue
                    if admitted is not False:
                        self._queued.pop(wdir, None)
                    if isinstance(admitted, WorkloadSpec):
                        log.info(
                            "workload %s/%s: room in the quota now", wdir.parent.name, wdir.name
                        )
                        await self._launch(wdir, admitted)

    def _unqueue(self, wdir: Path) -> bool:
        """Stop ``wdir`` if it is waiting for room (under its namespace's lock, so no runtime
        starts it meanwhile); False when it is not waiting."""
        self._queued.pop(wdir, None)
        if QUEUED not in (read_json(wdir / STATE) or {}):
            return False
        with self.quotas.admitting(wdir.parent.name):
            state = read_json(wdir / STATE) or {}
            if QUEUED not in state:
                return False
            del state[QUEUED]
            state.update(
                phase=Phase.FAILED.value,
                reason="Stopped",
                message="stopped by the runtime while waiting for room in the namespace's quota",
                finishTime=time.time(),
            )
            write_json_atomic(wdir / STATE, state)
        return True

    def _admit_queued(self, wdir: Path) -> WorkloadSpec | bool:
        """A waiting workload's spec when admitted now; False: still waiting; True: not
        waiting any more (gone, started elsewhere, or refused for good)."""
        try:
            spec = self._read_spec(wdir)
        except (FileNotFoundError, ValueError):
            return True
        with self.quotas.admitting(spec.namespace) as hard:
            state = read_json(wdir / STATE) or {}
            if QUEUED not in state:
                return True
            refused = self._refusal(wdir, spec, hard)
            if refused is None:
                (wdir / STATE).unlink()  # applied, not started: counted, and the supervisor's
                return spec
            if refused.final or refused.message != state.get("message"):
                self._refuse(wdir, spec, refused, float(state[QUEUED]))
            return bool(refused.final)
