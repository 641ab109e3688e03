"""The PyTorchJob controller: replicas as runtime job workloads, status as the operator's.

Level-triggered like every controller here (services/common/controller.py): ``reconcile``
reads the job and its replicas' workloads and acts.

- a job being deleted: delete its replica workloads, then drop the finalizer;
- otherwise apply every replica's workload (idempotent by name), restart a replica that
  failed with a retryable exit code under the ``ExitCode`` policy (128-255, as the operator
  does: a new workload, counted against ``backoffLimit``), and write the status
  (status.py) when it changed;
- once the job has ended: stop replicas still running when it failed (their ranks would wait
  for the failed one forever; their logs stay), apply ``cleanPodPolicy`` (All: delete every
  replica workload, Running: those still running, None: keep them), and delete the job
  ``ttlSecondsAfterFinished`` after its completion.

A watcher task per running job waits on its replicas (``runtime.wait``, no polling of its
own) and enqueues the job when one ends, and every couple of seconds meanwhile so Running
and Restarting show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from services.automl.template import TemplateError
from services.automl.training import replicas as rep
from services.automl.training import status as job_status
from services.automl.training.models import FINALIZER, PYTORCHJOB
from services.common.controller import Controller
from services.common.errors import ApiError
from services.common.resources import ResourceKind, ResourceStore
from services.common.runtime import Phase, Runtime, WorkloadNotFound, WorkloadStatus

log = logging.getLogger(__name__)

WATCH_INTERVAL = 2.0
#: ExitCode policy: exit codes at or above this are retryable (signals, as the operator says).
RETRYABLE_EXIT = 128


class TrainingJobController(Controller):
    kinds = (PYTORCHJOB,)

    def __init__(
        self, store: ResourceStore, runtime: Runtime, resync_seconds: float = 30.0
    ) -> None:
        self.resync_seconds = resync_seconds
        super().__init__(store)
        self.runtime = runtime
        self.watchers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._ttl: dict[tuple[str, str], asyncio.TimerHandle] = {}

    async def stop(self) -> None:
        for handle in self._ttl.values():
            handle.cancel()
        await super().stop()
        for task in list(self.watchers.values()):
            task.cancel()

    async def reconcile(self, kind: ResourceKind, namespace: str, name: str) -> None:
        job = await self.store.find(PYTORCHJOB, namespace, name)
        if job is None:
            return
        if job["metadata"].get("deletionTimestamp"):
            await self._delete_replicas(namespace, name)
            await self.store.remove_finalizer(PYTORCHJOB, namespace, name, FINALIZER)
            return
        status = job.get("status") or {}
        if job_status.finished(status):
            observed = await self._observe(job)
            await self._write(job, job_status.advance(job, observed))
            await self._after_end(job, observed)
            return
        if (job["spec"].get("runPolicy") or {}).get("suspend"):
            return
        started = await self._start_replicas(job)
        if started is None:
            return
        new = job_status.advance(job, started)
        job = await self._write(job, new)
        if job_status.finished(new):
            await self._after_end(job, started)
        else:
            self._watch(job, started)

    # -- replicas ----------------------------------------------------------------------------

    async def _observe(self, job: dict[str, Any]) -> job_status.Observed:
        meta = job["metadata"]
        observed: job_status.Observed = {}
        for rtype, index in rep.replica_list(job):
            try:
                observed[(rtype, index)] = await self.runtime.status(
                    meta["namespace"], rep.workload_name(meta["name"], rtype, index)
                )
            except WorkloadNotFound:
                observed[(rtype, index)] = None
        return observed

    async def _start_replicas(self, job: dict[str, Any]) -> job_status.Observed | None:
        """Apply every replica (restarting ExitCode ones); None once the job was failed here."""
        observed = await self._observe(job)
        specs = job["spec"]["pytorchReplicaSpecs"]
        for (rtype, index), current in observed.items():
            restarts = int((current.labels if current else {}).get(rep.RESTARTS_LABEL) or 0)
            if current is not None and self._retry_exit_code(job, specs[rtype], current, restarts):
                await self.runtime.delete(current.namespace, current.name)
                restarts += 1
                current = None
                await self._mark_restarting(job, rtype)
            if current is None:
                try:
                    workload = rep.replica_workload(job, rtype, index, restarts)
                    current = await self.runtime.apply(workload)
                except (TemplateError, ValueError) as exc:
                    await self._fail(job, "PyTorchJobFailed", f"{rtype} replica {index}: {exc}")
                    return None
            observed[(rtype, index)] = current
        return observed

    def _retry_exit_code(
        self, job: dict[str, Any], replica: dict[str, Any], current: WorkloadStatus, restarts: int
    ) -> bool:
        if replica.get("restartPolicy") != "ExitCode" or current.phase != Phase.FAILED:
            return False
        if current.reason in job_status.RUN_POLICY_REASONS or current.exit_code is None:
            return False
        limit = (job["spec"].get("runPolicy") or {}).get("backoffLimit")
        return current.exit_code >= RETRYABLE_EXIT and (limit is None or restarts < int(limit))

    async def _mark_restarting(self, job: dict[str, Any], rtype: str) -> None:
        meta = job["metadata"]
        status = dict(job.get("status") or {})
        job_status.set_condition(
            status,
            "Restarting",
            "PyTorchJobRestarting",
            f"PyTorchJob {meta['namespace']}/{meta['name']} is restarting because 1 {rtype} "
            "replica(s) failed with a retryable exit code.",
        )
        job.update(await self._write(job, status))

    async def _fail(self, job: dict[str, Any], reason: str, message: str) -> None:
        status = dict(job.get("status") or {})
        job_status.set_condition(status, "Failed", reason, message[:2000])
        status["completionTime"] = job_status.now()
        job = await self._write(job, status)
        await self._after_end(job, await self._observe(job))

    async def _delete_replicas(self, namespace: str, name: str) -> None:
        for workload in await self.runtime.list(rep.selector(name), namespace=namespace):
            await self.runtime.delete(namespace, workload.name)

    async def _write(self, job: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        if status == (job.get("status") or {}):
            return job
        meta = job["metadata"]
        try:
            return await self.store.update_status(
                PYTORCHJOB, meta["namespace"], meta["name"], status
            )
        except ApiError:
            return job  # deleted meanwhile: the next reconcile sees it

    # -- the end -----------------------------------------------------------------------------

    async def _after_end(self, job: dict[str, Any], observed: job_status.Observed) -> None:
        meta, run = job["metadata"], job["spec"].get("runPolicy") or {}
        namespace, name = meta["namespace"], meta["name"]
        running = [w for w in observed.values() if w is not None and not w.finished]
        policy = run.get("cleanPodPolicy", "None")
        if policy == "All":
            await self._delete_replicas(namespace, name)
        elif policy == "Running":
            for workload in running:
                await self.runtime.delete(namespace, workload.name)
        elif running and job_status.is_true(job.get("status") or {}, "Failed"):
            await self.runtime.stop_all({**rep.selector(name)})
        if running and policy == "None":
            self._watch(job, observed)  # replicaStatuses follow the replicas still running
        ttl = run.get("ttlSecondsAfterFinished")
        completed = (job.get("status") or {}).get("completionTime")
        if ttl is not None and completed and (namespace, name) not in self._ttl:
            ended = datetime.fromisoformat(completed.replace("Z", "+00:00"))
            delay = max(0.0, ended.timestamp() + float(ttl) - datetime.now(UTC).timestamp())
            loop = asyncio.get_running_loop()
            self._ttl[(namespace, name)] = loop.call_later(
                delay, lambda: asyncio.ensure_future(self._expire(namespace, name))
            )

    async def _expire(self, namespace: str, name: str) -> None:
        self._ttl.pop((namespace, name), None)
        with contextlib.suppress(ApiError):
            await self.store.delete(PYTORCHJOB, namespace, name)
        log.info("pytorchjob %s/%s deleted: ttlSecondsAfterFinished passed", namespace, name)

    # -- the watcher -------------------------------------------------------------------------

    def _watch(self, job: dict[str, Any], observed: job_status.Observed) -> None:
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        running = self.watchers.get(key)
        if running is not None and not running.done():
            return
        names = [w.name for w in observed.values() if w is not None and not w.finished]
        if names:
            self.watchers[key] = asyncio.create_task(self._follow(key, names), name=f"ptj-{key[1]}")

    async def _follow(self, key: tuple[str, str], names: list[str]) -> None:
        namespace, name = key
        try:
            pending = set(names)
            while pending:
                waits = {
                    asyncio.ensure_future(self.runtime.wait(namespace, w, timeout=None)): w
                    for w in pending
                }
                done, rest = await asyncio.wait(
                    waits, timeout=WATCH_INTERVAL, return_when="FIRST_COMPLETED"
                )
                for task in rest:
                    task.cancel()
                for task in done:
                    pending.discard(waits[task])
                    with contextlib.suppress(Exception):
                        task.result()
                if await self.store.find(PYTORCHJOB, namespace, name) is None:
                    return
                self.enqueue(PYTORCHJOB, namespace, name)
        finally:
            if self.watchers.get(key) is asyncio.current_task():
                self.watchers.pop(key, None)
            self.enqueue(PYTORCHJOB, namespace, name)
