"""WorkflowController: runs engine passes for Workflows, driven by changes, pod exits and timers.

A pass is triggered by (1) any committed change to the Workflow (API, actions), (2) a step's
workload finishing (the runner's waiter enqueues the workflow at once), (3) a timer the engine
asked for (retry back-off, suspend duration, deadline), and (4) the periodic resync that picks
up everything after a restart. Status is written together with the run/node events in one
transaction (the outbox), so an observer never sees one without the other.

Status writes are coalesced: every write also publishes the whole Workflow as a
ResourceEvent (about 100 KB at 200 nodes), so a pass that only moves steps along keeps its
status in memory (``_Unsaved``, with the events it produced, in order) and the workflow is
written at most once per ``coalesce_seconds``; the first pass, the last one and run-level
events (started, retried, finished) are written at once. The next pass starts from the
unsaved status with the spec and metadata read fresh. Crash safety does not depend on the
unsaved part: workload names are deterministic and ``runtime.apply`` is idempotent, so a step
started but not yet recorded is found again (never started twice) by the next service, and a
finished one is read back from the runtime, never re-run.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import ApiError
from services.common.events.outbox import stage_event
from services.common.resources import ResourceKind
from services.common.runtime import SERVICE_LABEL, Runtime
from services.common.runtime.quota import QUOTA_RETRY_SECONDS, QuotaRefused
from services.pipeline import events
from services.pipeline.artifacts import ArtifactRepository
from services.pipeline.cache import StepCache
from services.pipeline.engine import Engine, PassResult, TemplateBook
from services.pipeline.models import FINALIZER, RETRY_ANNOTATION, WORKFLOW, WORKFLOW_TEMPLATE
from services.pipeline.nodes import FAILED, now_iso
from services.pipeline.runner import RuntimeRunner

log = logging.getLogger(__name__)

FINISHED_PHASES = ("Succeeded", "Failed", "Error")
COALESCE_SECONDS = 0.25


@dataclass
class _Unsaved:
    """A workflow's status newer than the stored one, and the events to stage with it."""

    uid: str
    status: dict[str, Any]
    events: list[tuple[str, Any]] = field(default_factory=list)


class WorkflowController:
    """Reconciles Workflows; see the module docstring."""

    def __init__(
        self,
        ctx: Any,
        runtime: Runtime,
        artifacts: ArtifactRepository,
        cache: StepCache,
        *,
        workers: int = 4,
        resync_seconds: float = 30.0,
        coalesce_seconds: float = COALESCE_SECONDS,
    ) -> None:
        from services.common.controller import Controller
        from services.pipeline import kfp_exec

        outer = self

        class _Loop(Controller):
            kinds = (WORKFLOW,)

            async def reconcile(self, kind: ResourceKind, namespace: str, name: str) -> None:
                await outer.reconcile(namespace, name)

        _Loop.workers = workers
        _Loop.resync_seconds = resync_seconds
        self.ctx = ctx
        self.store = ctx.store
        self.loop = _Loop(ctx.store)
        self.runtime = runtime
        self.cache = cache
        self.runner = RuntimeRunner(runtime, artifacts, on_done=self.wake, kfp=kfp_exec, db=ctx.db)
        self.listeners: list[Any] = []  # callables(wf) after a workflow finished (KFP runs)
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.coalesce_seconds = coalesce_seconds
        self._unsaved: dict[tuple[str, str], _Unsaved] = {}
        self._written_at: dict[tuple[str, str], float] = {}
        self._flush_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def wake(self, namespace: str, name: str) -> None:
        self.loop.enqueue(WORKFLOW, namespace, name)

    async def start(self) -> None:
        await self.runtime.adopt()
        await self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()
        for handle in [*self._timers.values(), *self._flush_timers.values()]:
            handle.cancel()
        for namespace, name in list(self._unsaved):
            try:
                wf = await self.store.find(WORKFLOW, namespace, name)
                if wf is not None:
                    await self._flush(wf)
            except Exception:
                log.exception("could not save workflow %s/%s on stop", namespace, name)
        await self.runner.close()

    # ------------------------------------------------------------- reconcile
    async def reconcile(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        wf = await self.store.find(WORKFLOW, namespace, name)
        unsaved = self._unsaved.get(key)
        if wf is None or (unsaved is not None and unsaved.uid != wf["metadata"]["uid"]):
            self._drop_unsaved(key)
            unsaved = None
            if wf is None:
                return
        if unsaved is not None:
            wf["status"] = unsaved.status  # ours is newer; spec and metadata are the stored ones
        meta = wf["metadata"]
        if meta.get("deletionTimestamp"):
            self._drop_unsaved(key)
            await self.runner.cleanup(wf)
            await self._release_volumes(wf)
            await self.store.remove_finalizer(WORKFLOW, namespace, name, FINALIZER)
            return
        status = wf.setdefault("status", {})
        before = _fingerprint(status)  # json.dumps is C; a deepcopy of 200 nodes is not
        retried = await self._apply_retry(wf)
        if status.get("phase") in FINISHED_PHASES:
            if retried:
                await self._write(wf, PassResult(changed=True, run_event="retried"))
            else:
                self.runner.forget(wf)
                await self._release_volumes(wf)
            return
        try:
            spec, book = await self._resolve(wf)
        except ApiError as exc:
            status.update(phase="Error", message=exc.message, finishedAt=now_iso())
            status.setdefault("startedAt", status["finishedAt"])
            await self._write(wf, PassResult(changed=True, run_event="error"))
            return
        if await self._waits_for_claims(wf, spec):
            return
        settings = self.ctx.settings
        engine = Engine(
            wf,
            book,
            self.runner,
            self.cache,
            spec=spec,
            cache_enabled=getattr(settings, "cache_enabled", True),
        )
        result = await engine.run()
        if _fingerprint(wf["status"]) != before or result.run_event:
            self._remember(wf, result)
        if key in self._unsaved:
            due = self._written_at.get(key, 0.0) + self.coalesce_seconds - time.monotonic()
            if result.run_event or wf["status"].get("phase") in FINISHED_PHASES or due <= 0:
                await self._flush(wf)
            elif key not in self._flush_timers:
                self._flush_timers[key] = asyncio.get_running_loop().call_later(
                    due, self._flush_due, namespace, name
                )
        if result.requeue_after is not None:
            self._schedule(namespace, name, result.requeue_after)
        if wf["status"].get("phase") in FINISHED_PHASES:
            self.runner.forget(wf)
            await self._release_volumes(wf)
            for listener in self.listeners:
                try:
                    await listener(wf)
                except Exception:
                    log.exception("workflow-finished listener failed")

    def _schedule(self, namespace: str, name: str, delay: float) -> None:
        key = (namespace, name)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self.wake, namespace, name)

    def _remember(self, wf: dict[str, Any], result: PassResult) -> None:
        """Keep a pass's status and events (built now: node phases move on) until a flush."""
        meta = wf["metadata"]
        key = (meta["namespace"], meta["name"])
        unsaved = self._unsaved.setdefault(key, _Unsaved(meta["uid"], wf["status"]))
        unsaved.status = wf["status"]
        unsaved.events.extend(events.for_pass(wf, result))

    def _flush_due(self, namespace: str, name: str) -> None:
        self._flush_timers.pop((namespace, name), None)
        self.wake(namespace, name)  # the pass (one per key at a time) writes what is due

    def _drop_unsaved(self, key: tuple[str, str]) -> None:
        self._unsaved.pop(key, None)
        self._written_at.pop(key, None)
        timer = self._flush_timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def _flush(self, wf: dict[str, Any]) -> None:
        """Write the remembered status and stage its events, in one transaction."""
        meta = wf["metadata"]
        key = (meta["namespace"], meta["name"])
        unsaved = self._unsaved.get(key)
        if unsaved is None:
            return
        await self._write_status(wf, unsaved.status, unsaved.events)
        self._unsaved.pop(key, None)
        timer = self._flush_timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._written_at[key] = time.monotonic()
        if unsaved.status.get("phase") in FINISHED_PHASES:
            self._written_at.pop(key, None)

    async def _write(self, wf: dict[str, Any], result: PassResult) -> None:
        """Write now (with anything remembered before), for passes outside the engine."""
        self._remember(wf, result)
        await self._flush(wf)

    async def _write_status(
        self, wf: dict[str, Any], status: dict[str, Any], staged: list[tuple[str, Any]]
    ) -> None:
        meta = wf["metadata"]
        try:
            async with self.ctx.db.transaction() as session:
                await self.store.update_status(
                    WORKFLOW, meta["namespace"], meta["name"], status, session=session
                )
                outbox = self.ctx.metadata.tables["outbox"]
                for subject, message in staged:
                    await stage_event(
                        session,
                        outbox,
                        subject,
                        message,
                        source="/shipyard/pipeline",
                        ce_type=f"io.shipyard.{subject.removeprefix('shipyard.')}",
                        ce_subject=f"namespaces/{meta['namespace']}/workflows/{meta['name']}",
                    )
        except ApiError as exc:
            if exc.code != 404:
                raise

    # ----------------------------------------------------------------- retry
    async def _apply_retry(self, wf: dict[str, Any]) -> bool:
        """Argo's ``retry``: forget failed nodes (and their workloads) so they run again."""
        wanted = int((wf["metadata"].get("annotations") or {}).get(RETRY_ANNOTATION) or 0)
        status = wf["status"]
        if wanted <= int(status.get("retryGeneration") or 0):
            return False
        status["retryGeneration"] = wanted
        nodes = status.get("nodes") or {}
        drop = {
            nid
            for nid, n in nodes.items()
            if n["phase"] in FAILED
            or n["phase"] == "Omitted"
            or (
                n["type"] in ("DAG", "Steps", "StepGroup", "TaskGroup", "Retry")
                and n["phase"] != "Succeeded"
            )
            or n["name"].endswith(".onExit")
        }
        for nid in drop:
            node = nodes.pop(nid)
            if node["type"] == "Pod":
                await self.runner.delete_node_workload(wf, node)
        for node in nodes.values():
            if node.get("children"):
                node["children"] = [c for c in node["children"] if c not in drop]
        for key in ("finishedAt", "message", "outputs"):
            status.pop(key, None)
        status["phase"] = "Running"
        return True

    # ------------------------------------------------------------- templates
    async def _resolve(self, wf: dict[str, Any]) -> tuple[dict[str, Any], TemplateBook]:
        """The effective spec (with ``workflowTemplateRef``) and every referenced template."""
        ns = wf["metadata"]["namespace"]
        status = wf["status"]
        spec = wf.get("spec") or {}
        ref = spec.get("workflowTemplateRef")
        if ref:
            if "storedWorkflowTemplateSpec" not in status:
                wt = await self._template(ns, ref["name"])
                merged = copy.deepcopy(wt.get("spec") or {})
                for key, value in spec.items():
                    if key not in ("workflowTemplateRef", "arguments") and value is not None:
                        merged[key] = value
                params = {
                    p["name"]: p for p in (merged.get("arguments") or {}).get("parameters") or []
                }
                for p in (spec.get("arguments") or {}).get("parameters") or []:
                    params[p["name"]] = p
                if params:
                    merged.setdefault("arguments", {})["parameters"] = list(params.values())
                status["storedWorkflowTemplateSpec"] = merged
            spec = status["storedWorkflowTemplateSpec"]
        stored: dict[str, Any] = status.setdefault("storedTemplates", {})
        pending = _template_refs(spec.get("templates") or [])
        seen: set[str] = set()
        while pending:
            wt_name = pending.pop()
            if wt_name in seen:
                continue
            seen.add(wt_name)
            prefix = f"namespaced/{wt_name}/"
            if not any(k.startswith(prefix) for k in stored):
                wt = await self._template(ns, wt_name)
                for t in (wt.get("spec") or {}).get("templates") or []:
                    stored[prefix + t["name"]] = t
            pending |= _template_refs([t for k, t in stored.items() if k.startswith(prefix)])
        if not stored:
            status.pop("storedTemplates", None)
        return spec, TemplateBook(spec.get("templates") or [], stored)

    async def _template(self, namespace: str, name: str) -> dict[str, Any]:
        wt = await self.store.find(WORKFLOW_TEMPLATE, namespace, name)
        if wt is None:
            raise ApiError(404, f'WorkflowTemplate "{name}" not found in namespace "{namespace}"')
        return wt

    # --------------------------------------------------------------- volumes
    async def _waits_for_claims(self, wf: dict[str, Any], spec: dict[str, Any]) -> bool:
        """Make the workflow's ``volumeClaimTemplates`` claims; True while it has to wait. Over
        the namespace's quota, as Argo: ``Pending``, "Waiting for a PVC to be created.", and
        tried again; ``Error`` when one can never fit. Stopped while it waits, it goes on to
        the engine, which ends it."""
        status, meta = wf["status"], wf["metadata"]
        try:
            await self._claim_volumes(wf, spec)
        except QuotaRefused as exc:
            if exc.final:
                status.update(phase="Error", message=f"pvc create error: {exc.message}")
                status["finishedAt"] = now_iso()
                status.setdefault("startedAt", status["finishedAt"])
                await self._write(wf, PassResult(changed=True, run_event="error"))
                return True
            if spec.get("shutdown"):
                return False
            waiting = f"Waiting for a PVC to be created. {exc.message}"
            if (status.get("phase"), status.get("message")) != ("Pending", waiting):
                status.update(phase="Pending", message=waiting)
                await self._write(wf, PassResult(changed=True))
            self._schedule(meta["namespace"], meta["name"], QUOTA_RETRY_SECONDS)
            return True
        return False

    async def _claim_volumes(self, wf: dict[str, Any], spec: dict[str, Any]) -> None:
        vcts = spec.get("volumeClaimTemplates") or []
        status = wf["status"]
        if not vcts or status.get("persistentVolumeClaims"):
            return
        claims: list[dict[str, Any]] = []
        for vct in vcts:
            claim = f"{wf['metadata']['name']}-{vct['metadata']['name']}"
            size = (((vct.get("spec") or {}).get("resources") or {}).get("requests") or {}).get(
                "storage"
            )
            try:
                await self.runtime.create_volume(
                    wf["metadata"]["namespace"],
                    claim,
                    size=str(size) if size else None,
                    labels={
                        SERVICE_LABEL: "pipeline",
                        "workflows.argoproj.io/workflow": wf["metadata"]["name"],
                    },
                )
            except QuotaRefused as exc:
                if exc.final:  # none of them will be used
                    status["persistentVolumeClaims"] = claims
                    await self._release_volumes(wf)
                raise
            claims.append(
                {"name": vct["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim}}
            )
        status["persistentVolumeClaims"] = claims
        if str(status.get("message", "")).startswith("Waiting for a PVC"):
            del status["message"]

    async def _release_volumes(self, wf: dict[str, Any]) -> None:
        """volumeClaimTemplates volumes go away when the workflow completes (Argo's default)."""
        status = wf.get("status") or {}
        claims = status.get("persistentVolumeClaims")
        if not claims:
            return
        for claim in claims:
            try:
                await self.runtime.delete_volume(
                    wf["metadata"]["namespace"], claim["persistentVolumeClaim"]["claimName"]
                )
            except Exception:
                log.exception("could not delete volume %s", claim)


def _fingerprint(status: dict[str, Any]) -> str:
    return json.dumps(status, separators=(",", ":"), default=str)


def _template_refs(templates: list[dict[str, Any]]) -> set[str]:
    refs: set[str] = set()
    for t in templates:
        tasks = list((t.get("dag") or {}).get("tasks") or [])
        for group in t.get("steps") or []:
            tasks += group
        for task in tasks:
            if task.get("templateRef"):
                refs.add(task["templateRef"]["name"])
    return refs
