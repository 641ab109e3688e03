"""``NotebookController``: one Jupyter server workload per Notebook, and Kubeflow's status.

Level-triggered like every controller here: ``reconcile`` reads the Notebook and its
workload and converges.

- Running: the workload ``nb-{name}`` exists, was built from the current ``generation``
  (a spec change deletes it and starts a new one) and has not finished (an orderly stop of
  the service ends it; the next start replaces it). A workload that is still running when the
  service comes back after a crash is simply adopted: same process, same endpoint.
- Stopped: the annotation ``kubeflow-resource-stopped`` (any value) deletes the workload;
  removing the annotation starts a new one.
- Deleted: a delete guard stops the server *before* the object is removed, so when DELETE
  answers the server is gone and its claims are free (what a finalizer would give, without
  keeping a half-deleted object around; Kubeflow itself relies on garbage collection of the
  StatefulSet). A Notebook that was created while an older version used the finalizer
  ``notebooks.kubeflow.org/finalizer`` has it removed after the same teardown. Every
  resync also sweeps orphans: a ``nb-*`` workload whose Notebook no longer exists (the
  service crashed mid-delete) is deleted.

Readiness is not polled by the controller: while a server starts, a background task waits
on ``runtime.wait(..., ready=True)`` and enqueues the Notebook when it is ready (or has
failed). The periodic resync is the backstop. ``status.endpoint`` (the loopback URL) and
``status.url`` appear only while the server is ready, so the gateway's route table, which
reads them, routes exactly to servers that answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from services.common.controller import Controller, Key
from services.common.dataplane import notebook_token
from services.common.resources import ResourceKind, ResourceStore, WatchEvent
from services.common.resources.store import now_rfc3339
from services.common.runtime import SERVICE_LABEL, Phase, Runtime, WorkloadNotFound, WorkloadStatus
from services.notebook.models import NOTEBOOK, PODDEFAULT, PVC
from services.notebook.workload import (
    GENERATION_LABEL,
    NAME_LABEL,
    apply_pod_defaults,
    build_workload,
    claims_of,
    prefix,
    workload_name,
)

log = logging.getLogger(__name__)

FINALIZER = "notebooks.kubeflow.org/finalizer"  # honoured on old objects, never added
STOP_ANNOTATION = "kubeflow-resource-stopped"
LAST_ACTIVITY_ANNOTATION = "notebooks.kubeflow.org/last-activity"


class NotebookController(Controller):
    """Runs each Notebook's first container as a Jupyter server workload; see the module doc."""

    kinds = (NOTEBOOK,)

    def __init__(
        self,
        store: ResourceStore,
        runtime: Runtime,
        *,
        dataplane_key: bytes,
        ready_timeout: float = 300.0,
    ) -> None:
        super().__init__(store)
        self.runtime = runtime
        self.dataplane_key = dataplane_key
        self.ready_timeout = ready_timeout
        self._waiters: dict[tuple[str, str], asyncio.Task[None]] = {}
        # (namespace, claim) -> notebooks whose server could not start for want of it
        self._claim_waiters: dict[tuple[str, str], set[str]] = {}
        self._deleting: set[tuple[str, str]] = set()
        store.add_delete_guard(NOTEBOOK, self.tear_down)

    async def tear_down(self, notebook: dict[str, Any]) -> None:
        """Delete guard: stop the server before its Notebook is removed."""
        ns, name = notebook["metadata"]["namespace"], notebook["metadata"]["name"]
        key = (ns, name)
        self._deleting.add(key)  # no reconcile restarts it in between
        try:
            self._forget(ns, name)
            await self.runtime.delete(ns, workload_name(name))
            log.info("notebook %s/%s: server deleted", ns, name)
        finally:
            # The DELETE that follows wakes a last reconcile, which finds no object.
            asyncio.get_running_loop().call_later(5.0, self._deleting.discard, key)

    async def resync(self) -> None:
        await super().resync()
        await self.sweep_orphans()

    async def sweep_orphans(self) -> None:
        """Delete notebook workloads whose Notebook is gone (a crash between the two)."""
        for wl in await self.runtime.list({SERVICE_LABEL: "notebook"}):
            name = wl.labels.get(NAME_LABEL)
            if name and await self.store.find(NOTEBOOK, wl.namespace, name) is None:
                log.info("deleting orphaned notebook server %s/%s", wl.namespace, wl.name)
                await self.runtime.delete(wl.namespace, wl.name)

    async def stop(self) -> None:
        for task in self._waiters.values():
            task.cancel()
        for task in list(self._waiters.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._waiters.clear()
        await super().stop()

    def keys_for(self, kind: ResourceKind, event: WatchEvent) -> Sequence[Key]:
        """A claim that appears wakes the notebooks that were waiting for it at once."""
        if kind.kind == PVC.kind:
            meta = event.object.get("metadata", {})
            ns = meta.get("namespace", "")
            names = self._claim_waiters.get((ns, meta.get("name", "")), set())
            return [Key(NOTEBOOK.kind, ns, n) for n in sorted(names)]
        return super().keys_for(kind, event)

    # ------------------------------------------------------------------ reconcile
    async def reconcile(self, kind: ResourceKind, namespace: str, name: str) -> None:
        notebook = await self.store.find(NOTEBOOK, namespace, name)
        wl = workload_name(name)
        if notebook is None:
            # Gone without the finalizer (e.g. created before it existed): no orphan server.
            self._forget(namespace, name)
            await self.runtime.delete(namespace, wl)
            return
        meta = notebook["metadata"]
        if meta.get("deletionTimestamp"):
            await self.tear_down(notebook)
            await self.store.remove_finalizer(NOTEBOOK, namespace, name, FINALIZER)
            return
        if (namespace, name) in self._deleting:
            return
        if STOP_ANNOTATION in (meta.get("annotations") or {}):
            self._cancel_waiter(namespace, name)
            await self.runtime.delete(namespace, wl)
            await self._write_status(notebook, stopped_status(notebook))
            return
        current = await self._current(notebook)
        if current is None:
            current = await self._start(notebook)
            if current is None:
                return  # the spec cannot run; its status says why
        if not current.ready and not current.finished:
            self._watch_until_ready(namespace, name)
        status = running_status(notebook, current)
        if (
            status["readyReplicas"] == 1
            and (notebook.get("status") or {}).get("readyReplicas") != 1
        ):
            # The idle clock starts when the server can first be used, not when it was
            # launched: a slow start must not count as idleness.
            await self._mark_activity(namespace, name)
        await self._write_status(notebook, status)

    async def _current(self, notebook: dict[str, Any]) -> WorkloadStatus | None:
        """The workload if it still serves this generation of this Notebook, else None."""
        meta = notebook["metadata"]
        ns, wl = meta["namespace"], workload_name(meta["name"])
        try:
            status = await self.runtime.status(ns, wl)
        except WorkloadNotFound:
            return None
        owner = status.owner if isinstance(status.owner, dict) else {}
        stale = status.labels.get(GENERATION_LABEL) != str(meta.get("generation", 1)) or owner.get(
            "uid"
        ) != meta.get("uid")
        if stale or (status.finished and status.reason != "PersistentVolumeClaimNotFound"):
            # A new spec, a recreated Notebook, or a server an orderly shutdown stopped:
            # replace it. (A missing claim is retried when the claim appears, or on resync.)
            log.info(
                "notebook %s/%s: replacing server (%s)",
                ns,
                meta["name"],
                "spec changed" if stale else f"it ended: {status.reason}",
            )
            self._cancel_waiter(ns, meta["name"])
            await self.runtime.delete(ns, wl)
            return None
        if status.finished:
            missing = [
                c for c in claims_of(notebook) if not await self.runtime.volume_exists(ns, c)
            ]
            if not missing:
                await self.runtime.delete(ns, wl)
                return None
            self._await_claims(ns, meta["name"], missing)
        return status

    async def _start(self, notebook: dict[str, Any]) -> WorkloadStatus | None:
        meta = notebook["metadata"]
        ns, name = meta["namespace"], meta["name"]
        pod_defaults = await self.store.list_all(PODDEFAULT, ns)
        try:
            token = notebook_token(self.dataplane_key, ns, name)
            spec = build_workload(notebook, token, pod_defaults)
        except ValueError as exc:
            await self._write_status(notebook, invalid_status(str(exc)))
            return None
        status = await self.runtime.apply(spec)
        log.info(
            "notebook %s/%s: started server %s (image %s recorded, not pulled)",
            ns,
            name,
            spec.name,
            spec.image,
        )
        if status.finished and status.reason == "PersistentVolumeClaimNotFound":
            # The claims of its PodDefaults too: the server starts when any of them appears.
            merged, _, _ = apply_pod_defaults(notebook, pod_defaults)
            self._await_claims(ns, name, claims_of(merged))
        # A fresh server starts a fresh idle clock: a stale last-activity annotation would
        # cull it again right away (kubeflow#6648).
        await self._mark_activity(ns, name)
        return status

    async def _mark_activity(self, namespace: str, name: str) -> None:
        await self.store.patch(
            NOTEBOOK,
            namespace,
            name,
            {"metadata": {"annotations": {LAST_ACTIVITY_ANNOTATION: now_rfc3339()}}},
        )

    # ------------------------------------------------------------------ helpers
    async def _write_status(self, notebook: dict[str, Any], status: dict[str, Any]) -> None:
        old = notebook.get("status") or {}
        keep_transition_times(old, status)
        if old != status:
            meta = notebook["metadata"]
            await self.store.update_status(NOTEBOOK, meta["namespace"], meta["name"], status)

    def _watch_until_ready(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        task = self._waiters.get(key)
        if task is not None and not task.done():
            return
        self._waiters[key] = asyncio.create_task(
            self._wait_ready(namespace, name), name=f"notebook-ready-{namespace}-{name}"
        )

    async def _wait_ready(self, namespace: str, name: str) -> None:
        try:
            await self.runtime.wait(
                namespace, workload_name(name), timeout=self.ready_timeout, ready=True
            )
        except (TimeoutError, WorkloadNotFound):
            pass  # the resync looks again
        except Exception:
            log.exception("waiting for notebook %s/%s failed", namespace, name)
        finally:
            if self._waiters.get((namespace, name)) is asyncio.current_task():
                del self._waiters[(namespace, name)]
        self.enqueue(NOTEBOOK, namespace, name)

    def _cancel_waiter(self, namespace: str, name: str) -> None:
        task = self._waiters.pop((namespace, name), None)
        if task is not None:
            task.cancel()

    def _await_claims(self, namespace: str, name: str, claims: Sequence[str]) -> None:
        for claim in claims:
            self._claim_waiters.setdefault((namespace, claim), set()).add(name)

    def _forget(self, namespace: str, name: str) -> None:
        self._cancel_waiter(namespace, name)
        for names in self._claim_waiters.values():
            names.discard(name)


# ---------------------------------------------------------------------- status shapes
def _condition(ready: bool, reason: str, message: str = "") -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": reason,
        "lastTransitionTime": now_rfc3339(),
    }
    if message:
        cond["message"] = message
    return cond


def keep_transition_times(old: dict[str, Any], new: dict[str, Any]) -> None:
    """A condition whose status did not change keeps its ``lastTransitionTime``."""
    before = {c.get("type"): c for c in old.get("conditions") or []}
    for cond in new.get("conditions") or []:
        prev = before.get(cond.get("type"))
        if prev and prev.get("status") == cond.get("status") and prev.get("lastTransitionTime"):
            cond["lastTransitionTime"] = prev["lastTransitionTime"]


def _rfc3339(value: Any) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def running_status(notebook: dict[str, Any], wl: WorkloadStatus) -> dict[str, Any]:
    """Kubeflow's Notebook status from the workload: readyReplicas, containerState, conditions."""
    meta = notebook["metadata"]
    status: dict[str, Any] = {"readyReplicas": 1 if wl.ready else 0}
    if wl.phase == Phase.PENDING and wl.reason:  # not started yet: ExceededQuota, waiting
        status["containerState"] = {"waiting": {"reason": wl.reason, "message": wl.message or ""}}
        status["conditions"] = [_condition(False, wl.reason, wl.message or "")]
    elif wl.phase == Phase.PENDING:
        status["containerState"] = {"waiting": {"reason": "ContainerCreating"}}
        status["conditions"] = [_condition(False, "ContainerCreating")]
    elif wl.phase == Phase.RUNNING and wl.reason == "CrashLoopBackOff":
        status["containerState"] = {
            "waiting": {"reason": "CrashLoopBackOff", "message": wl.message or ""}
        }
        status["conditions"] = [_condition(False, "CrashLoopBackOff", wl.message or "")]
    elif wl.phase == Phase.RUNNING:
        status["containerState"] = {"running": {"startedAt": _rfc3339(wl.start_time)}}
        status["conditions"] = [
            _condition(True, "Ready")
            if wl.ready
            else _condition(False, "ContainersNotReady", "the Jupyter server is starting")
        ]
    elif wl.exit_code is None:  # never ran: a missing claim, no sandbox, ...
        status["containerState"] = {
            "waiting": {"reason": wl.reason or "Error", "message": wl.message or ""}
        }
        status["conditions"] = [_condition(False, wl.reason or "Error", wl.message or "")]
    else:
        status["containerState"] = {
            "terminated": {
                "exitCode": wl.exit_code,
                "reason": wl.reason or "Error",
                "message": wl.message or "",
                "finishedAt": _rfc3339(wl.finish_time),
            }
        }
        status["conditions"] = [_condition(False, wl.reason or "Error", wl.message or "")]
    if wl.restart_count:
        status["restartCount"] = wl.restart_count
    if wl.ready and wl.endpoint:
        status["endpoint"] = wl.endpoint
        status["url"] = prefix(meta["namespace"], meta["name"]) + "/"
    return status


def stopped_status(notebook: dict[str, Any]) -> dict[str, Any]:
    return {
        "readyReplicas": 0,
        "containerState": {},
        "conditions": [
            _condition(
                False, "Stopped", f"the notebook server is stopped (annotation {STOP_ANNOTATION})"
            )
        ],
    }


def invalid_status(message: str) -> dict[str, Any]:
    return {
        "readyReplicas": 0,
        "containerState": {"waiting": {"reason": "InvalidSpec", "message": message}},
        "conditions": [_condition(False, "InvalidSpec", message)],
    }
