"""The workflow engine: one level-triggered pass over a Workflow's ``status.nodes``.

Every pass starts from the persisted status and the spec, decides what can run now, starts it
through a :class:`PodRunner`, folds in finished pods, and records everything in
``status.nodes``. Nothing lives only in memory, so a service killed mid-run resumes where it
stopped: finished nodes stay finished, running pods are polled again (the runtime re-adopts
them), and nodes not yet started start now. A pass is pure bookkeeping plus the runner's
calls; the controller decides when to run one (pod completion, API change, timer).

The pass is split along its seams: ``engine_scope`` (variables and inputs in scope),
``engine_groups`` (what dag and steps share: items, task arguments, parallelism, a group's
end), ``engine_dag``, ``engine_steps`` and ``engine_retry``; ``engine_types`` holds the
vocabulary. Each is a set of functions of the pass (``eng``), which this class calls.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from services.common.runtime.quota import QUOTA_RETRY_SECONDS
from services.pipeline import engine_dag as _dag
from services.pipeline import engine_groups as _groups
from services.pipeline import engine_retry as _retry
from services.pipeline import engine_scope as _scope
from services.pipeline import engine_steps as _steps
from services.pipeline.engine_types import (
    CACHE_ANNOTATION,
    RESUME_ANNOTATION,
    Cache,
    PassResult,
    PodRunner,
    Scope,
    TemplateBook,
    TemplateError,
    duration_seconds,
    template_type,
)
from services.pipeline.expressions import ExpressionError
from services.pipeline.nodes import (
    FAILED,
    WAITING,
    finish,
    has_workload,
    is_finished,
    new_node,
    node_id,
    now_iso,
    param_list,
    parse_iso,
    show_waiting,
)
from services.pipeline.variables import substitute, substitute_all, unresolved

log = logging.getLogger(__name__)


class Engine:
    """Executes one pass over ``wf`` (a Workflow object dict, mutated in place)."""

    def __init__(
        self,
        wf: dict[str, Any],
        book: TemplateBook,
        runner: PodRunner,
        cache: Cache | None,
        *,
        spec: dict[str, Any] | None = None,
        cache_enabled: bool = True,
    ) -> None:
        self.wf = wf
        self.spec = spec if spec is not None else wf.get("spec", {})
        self.book = book
        self.runner = runner
        self.cache = cache
        meta = wf["metadata"]
        self.name = meta["name"]
        self.namespace = meta.get("namespace", "")
        annotations = meta.get("annotations") or {}
        self.cache_enabled = cache_enabled and annotations.get(CACHE_ANNOTATION) != "false"
        self.resume_generation = int(annotations.get(RESUME_ANNOTATION) or 0)
        self.status = wf.setdefault("status", {})
        self.nodes: dict[str, dict[str, Any]] = self.status.setdefault("nodes", {})
        self.before = {k: v.get("phase") for k, v in self.nodes.items()}
        self.result = PassResult()
        self.running_pods = sum(1 for n in self.nodes.values() if has_workload(n))
        self.now = datetime.now(UTC)
        self._starved = False  # a child could not start for lack of a parallelism place
        self._freed = False  # a child finished in this pass

    # ------------------------------------------------------------------ entry
    async def run(self) -> PassResult:
        status = self.status
        if status.get("phase") in ("Succeeded", "Failed", "Error"):
            return self.result
        if not status.get("phase") or status.get("phase") == "Pending":
            status["phase"] = "Running"
            status["startedAt"] = now_iso()
            self.result.run_event = "started"
        shutdown = self.spec.get("shutdown")
        deadline = self.spec.get("activeDeadlineSeconds")
        root = self.nodes.get(node_id(self.name, self.name))
        if not is_finished(root):
            if shutdown:
                await self._fail_unfinished(f"Stopped with strategy '{shutdown}'")
            elif deadline is not None and self._elapsed(status["startedAt"]) >= float(deadline):
                await self._fail_unfinished("Step exceeded its deadline")
                status["message"] = "Step exceeded its deadline"
            else:
                if deadline is not None:
                    self._requeue(float(deadline) - self._elapsed(status["startedAt"]) + 0.05)
                try:
                    params = _scope.workflow_parameters(self)
                    root = await self.execute(
                        self.name,
                        self.name,
                        "local",
                        self.spec.get("entrypoint", ""),
                        params,
                        {},
                        None,
                        _scope.workflow_scope(self),
                    )
                except TemplateError as exc:
                    root = self._error_root(str(exc))
        root = self.nodes.get(node_id(self.name, self.name))
        if self._starved and self._freed:
            self._requeue(0.0)  # a place freed after a child had to wait for one
        if root is not None and is_finished(root):
            await self._finish_workflow(root, shutdown)
        self._collect_events()
        self._progress()
        return self.result

    def _error_root(self, message: str) -> dict[str, Any]:
        root = self.nodes.get(node_id(self.name, self.name))
        if root is None:
            root = new_node(self.name, self.name, self.name, "Pod", None, None)
            self.nodes[root["id"]] = root
        finish(root, "Error", message)
        return root

    async def _finish_workflow(self, root: dict[str, Any], shutdown: str | None) -> None:
        exit_name = f"{self.name}.onExit"
        for node in list(self.nodes.values()):  # nothing outlives its workflow
            if not is_finished(node) and not node["name"].startswith(exit_name):
                if has_workload(node):
                    await self.runner.kill(self.wf, node)
                finish(node, "Failed", "workflow finished before this node")
        phase = {
            "Succeeded": "Succeeded",
            "Skipped": "Succeeded",
            "Omitted": "Succeeded",
            "Error": "Error",
        }.get(root["phase"], "Failed")
        exit_tmpl = self.spec.get("onExit")
        if exit_tmpl and shutdown != "Terminate":
            scope = _scope.workflow_scope(self)
            scope.values["workflow.status"] = phase
            scope.values["workflow.failures"] = json.dumps(self._failures())
            exit_name = f"{self.name}.onExit"
            try:
                exit_node = await self.execute(
                    exit_name,
                    exit_name,
                    "local",
                    exit_tmpl,
                    _scope.workflow_parameters(self),
                    {},
                    None,
                    scope,
                )
            except TemplateError as exc:
                exit_node = {"phase": "Error", "message": str(exc)}
            if not is_finished(exit_node):
                return
            if exit_node["phase"] in FAILED and phase == "Succeeded":
                phase = "Failed"
                self.status["message"] = exit_node.get("message") or "exit handler failed"
        self.status["phase"] = phase
        self.status["finishedAt"] = now_iso()
        if phase != "Succeeded" and not self.status.get("message"):
            self.status["message"] = self._failure_message(root)
        if root.get("outputs"):
            self.status["outputs"] = root["outputs"]
        self.result.run_event = phase.lower()
        self.result.changed = True

    def _failure_message(self, root: dict[str, Any]) -> str:
        for node in self.nodes.values():
            if node["type"] == "Pod" and node["phase"] in FAILED and node.get("message"):
                return f"{node['displayName']}: {node['message']}"
        return root.get("message") or "workflow failed"

    def _failures(self) -> list[dict[str, Any]]:
        return [
            {
                "displayName": n["displayName"],
                "message": n.get("message", ""),
                "templateName": n.get("templateName", ""),
                "phase": n["phase"],
                "podName": n["id"],
                "finishedAt": n.get("finishedAt", ""),
            }
            for n in self.nodes.values()
            if n["type"] == "Pod" and n["phase"] in FAILED
        ]

    async def _fail_unfinished(self, message: str) -> None:
        for node in list(self.nodes.values()):
            if is_finished(node):
                continue
            if has_workload(node):
                await self.runner.kill(self.wf, node)
            finish(node, "Failed", message)
        if node_id(self.name, self.name) not in self.nodes:
            root = new_node(self.name, self.name, self.name, "DAG", None, None)
            self.nodes[root["id"]] = root
            finish(root, "Failed", message)

    def _elapsed(self, started: str | None) -> float:
        start = parse_iso(started)
        return (self.now - start).total_seconds() if start else 0.0

    def _requeue(self, seconds: float) -> None:
        seconds = max(0.05, seconds)
        if self.result.requeue_after is None or seconds < self.result.requeue_after:
            self.result.requeue_after = seconds

    def _collect_events(self) -> None:
        for nid, node in self.nodes.items():
            old = self.before.get(nid)
            if old != node.get("phase"):
                self.result.node_events.append((node, old or ""))
                self.result.changed = True

    def _progress(self) -> None:
        pods = [n for n in self.nodes.values() if n["type"] == "Pod"]
        done = sum(1 for n in pods if is_finished(n))
        progress = f"{done}/{len(pods)}"
        if self.status.get("progress") != progress:
            self.status["progress"] = progress
            self.result.changed = True

    # --------------------------------------------------------------- execute
    async def execute(
        self,
        name: str,
        display: str,
        tmpl_scope: str,
        template: str | dict[str, Any],
        params: dict[str, str],
        artifacts: dict[str, dict[str, Any]],
        boundary: str | None,
        scope: Scope,
        *,
        retry_attempt: int | None = None,
    ) -> dict[str, Any]:
        """Run (or continue) the node ``name`` for a template; return the node."""
        nid = node_id(self.name, name)
        node = self.nodes.get(nid)
        if is_finished(node):
            return node  # type: ignore[return-value]
        tmpl = self.book.get(tmpl_scope, template) if isinstance(template, str) else template
        if node is None:
            kind = template_type(tmpl)
            if tmpl.get("retryStrategy") and retry_attempt is None:
                kind = "Retry"
            node = new_node(
                self.name, name, display, kind, tmpl["name"], boundary, scope=tmpl_scope
            )
            self.nodes[nid] = node
            try:
                values, arts = _scope.resolve_inputs(self, tmpl, params, artifacts, scope)
            except TemplateError as exc:
                finish(node, "Error", str(exc))
                return node
            if values or arts:
                node["inputs"] = {}
                if values:
                    node["inputs"]["parameters"] = param_list(values)
                if arts:
                    node["inputs"]["artifacts"] = arts
            if kind != "Retry" and await self._try_cache(node, tmpl):
                return node
        local = _scope.template_scope(self, scope, node, tmpl, retry_attempt)
        if node["type"] in ("DAG", "Steps") and await _groups.group_deadline(self, node, tmpl):
            return node
        try:
            if node["type"] == "Retry":
                await _retry.run_retry(self, node, tmpl, tmpl_scope, params, artifacts, scope)
            elif node["type"] == "Pod":
                await self._run_pod(node, tmpl, local)
            elif node["type"] == "DAG":
                await _dag.run_dag(self, node, tmpl, tmpl_scope, local)
            elif node["type"] == "Steps":
                await _steps.run_steps(self, node, tmpl, tmpl_scope, local)
            elif node["type"] == "Suspend":
                self._run_suspend(node, tmpl)
        except TemplateError as exc:
            if not is_finished(node):
                finish(node, "Error", str(exc))
        except ExpressionError as exc:
            if not is_finished(node):
                finish(node, "Error", str(exc))
        if is_finished(node) and node["phase"] == "Succeeded" and node["type"] != "Retry":
            await self._store_cache(node, tmpl)
        return node

    # ------------------------------------------------------------------ cache
    def _cache_key(
        self, node: dict[str, Any], tmpl: dict[str, Any]
    ) -> tuple[str, float | None] | None:
        if not self.cache_enabled or self.cache is None:
            return None
        memo = tmpl.get("memoize")
        inputs = node.get("inputs") or {}
        if memo:
            scope = {
                f"inputs.parameters.{p['name']}": p.get("value", "")
                for p in inputs.get("parameters") or []
            }
            scope.update(_scope.workflow_scope(self).values)
            key = substitute(memo["key"], scope)
            cache_name = ((memo.get("cache") or {}).get("configMap") or {}).get("name", "")
            return f"argo:{cache_name}:{key}", duration_seconds(memo.get("maxAge"))
        plugin = (tmpl.get("plugin") or {}).get("kfp")
        if plugin and plugin.get("enableCache"):
            body = json.dumps(
                {
                    "executor": plugin.get("container") or plugin.get("importer"),
                    "component": plugin.get("component"),
                    "inputs": inputs,
                },
                sort_keys=True,
            )
            return "kfp:" + hashlib.sha256(body.encode()).hexdigest(), None
        return None

    async def _try_cache(self, node: dict[str, Any], tmpl: dict[str, Any]) -> bool:
        found = self._cache_key(node, tmpl)
        if found is None:
            return False
        key, max_age = found
        outputs = await self.cache.get(self.namespace, key, max_age)  # type: ignore[union-attr]
        node["memoizationStatus"] = {
            "hit": outputs is not None,
            "key": key,
            "cacheName": "shipyard",
        }
        if outputs is None:
            return False
        if outputs:
            node["outputs"] = outputs
        finish(node, "Succeeded", "cached")
        return True

    async def _store_cache(self, node: dict[str, Any], tmpl: dict[str, Any]) -> None:
        status = node.get("memoizationStatus")
        if not status or status.get("hit") or status.get("stored"):
            return
        await self.cache.put(  # type: ignore[union-attr]
            self.namespace,
            status["key"],
            node.get("outputs") or {},
            self.name,
            node["id"],
        )
        status["stored"] = True

    # ------------------------------------------------------------------- pods
    async def _run_pod(self, node: dict[str, Any], tmpl: dict[str, Any], scope: Scope) -> None:
        if node["phase"] == "Pending" and WAITING not in node:
            parallelism = self.spec.get("parallelism")
            if self.spec.get("suspend") or (parallelism and self.running_pods >= parallelism):
                return
            resolved = substitute_all(copy.deepcopy(tmpl), scope.values)
            for key in ("container", "script"):
                body = resolved.get(key) or {}
                for part in (
                    (body.get("command") or [])
                    + (body.get("args") or [])
                    + [body.get("source") or ""]
                ):
                    left = [v for v in unresolved(part) if not v.startswith("=")]
                    if left:
                        raise TemplateError(f"unable to resolve: {{{{{left[0]}}}}}")
            node["phase"] = "Running"
            node["startedAt"] = now_iso()
            node.pop("message", None)  # an earlier try's refusal
            self.running_pods += 1
            refused = await self.runner.start(self.wf, node, resolved, self._volumes(tmpl))
            if refused is not None:  # nothing made (over quota): Argo's Pending, tried again
                node["phase"], node["message"] = "Pending", refused
                self.running_pods -= 1
                self._requeue(QUOTA_RETRY_SECONDS)
                return
        result = await self.runner.poll(self.wf, node)
        if result is None or result.phase == "Pending":
            show_waiting(node, result.message if result else None)
            return
        self.running_pods -= 1
        outputs: dict[str, Any] = {}
        if result.parameters:
            outputs["parameters"] = param_list(result.parameters)
        if result.result is not None:
            outputs["result"] = result.result
        if result.artifacts:
            outputs["artifacts"] = result.artifacts
        if result.exit_code is not None:
            outputs["exitCode"] = str(result.exit_code)
        if outputs:
            node["outputs"] = outputs
        finish(node, result.phase, result.message)

    def _volumes(self, tmpl: dict[str, Any]) -> list[dict[str, Any]]:
        vols = list(self.spec.get("volumes") or [])
        for vct in self.spec.get("volumeClaimTemplates") or []:
            claim = f"{self.name}-{vct['metadata']['name']}"
            vols.append(
                {"name": vct["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim}}
            )
        names = {v["name"] for v in tmpl.get("volumes") or []}
        return [*(tmpl.get("volumes") or []), *(v for v in vols if v["name"] not in names)]

    # ---------------------------------------------------------------- suspend
    def _run_suspend(self, node: dict[str, Any], tmpl: dict[str, Any]) -> None:
        if node["phase"] == "Pending":
            node["phase"] = "Running"
            node["resumeGeneration"] = self.resume_generation
        if self.resume_generation > int(node.get("resumeGeneration", 0)):
            finish(node, "Succeeded")
            return
        duration = duration_seconds((tmpl.get("suspend") or {}).get("duration"))
        if duration is not None:
            left = duration - self._elapsed(node.get("startedAt"))
            if left <= 0:
                finish(node, "Succeeded")
            else:
                self._requeue(left)

    # -------------------------------------------- dag/steps (engine_dag, engine_steps)
    def _publish(
        self, prefix: str, task: str, node: dict[str, Any] | list[dict[str, Any]], scope: Scope
    ) -> None:
        """Expose a finished task's outputs as ``tasks.X.…`` / ``steps.X.…``."""
        base = f"{prefix}.{task}"
        if isinstance(node, list):  # loop iterations of a step
            nodes = node
        elif node["type"] == "TaskGroup":
            nodes = _groups.iterations(self, node)
        else:
            nodes = None
        if nodes is not None:
            params: dict[str, list[str]] = {}
            results = []
            for n in nodes:
                outs = n.get("outputs") or {}
                for p in outs.get("parameters") or []:
                    params.setdefault(p["name"], []).append(p.get("value", ""))
                if "result" in outs:
                    results.append(outs["result"])
            for key, values in params.items():
                scope.values[f"{base}.outputs.parameters.{key}"] = json.dumps(values)
            scope.values[f"{base}.outputs.result"] = json.dumps(results)
            phase = (
                node["phase"]
                if isinstance(node, dict)
                else ("Failed" if any(n["phase"] in FAILED for n in nodes) else "Succeeded")
            )
            scope.values[f"{base}.status"] = phase
            return
        assert isinstance(node, dict)
        outs = node.get("outputs") or {}
        scope.values[f"{base}.id"] = node["id"]
        scope.values[f"{base}.status"] = node["phase"]
        if node.get("startedAt"):
            scope.values[f"{base}.startedAt"] = node["startedAt"]
        if node.get("finishedAt"):
            scope.values[f"{base}.finishedAt"] = node["finishedAt"]
        if "exitCode" in outs:
            scope.values[f"{base}.exitCode"] = outs["exitCode"]
        if "result" in outs:
            scope.values[f"{base}.outputs.result"] = outs["result"]
        for p in outs.get("parameters") or []:
            scope.values[f"{base}.outputs.parameters.{p['name']}"] = p.get("value", "")
        for a in outs.get("artifacts") or []:
            scope.artifacts[f"{base}.outputs.artifacts.{a['name']}"] = a
