"""The workflow engine: one level-triggered pass over a Workflow's ``status.nodes``.

Every pass starts from the persisted status and the spec, decides what can run now, starts it
through a :class:`PodRunner`, folds in finished pods, and records everything in
``status.nodes``. Nothing lives only in memory, so a service killed mid-run resumes where it
stopped: finished nodes stay finished, running pods are polled again (the runtime re-adopts
them), and nodes not yet started start now. A pass is pure bookkeeping plus the runner's
calls; the controller decides when to run one (pod completion, API change, timer).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from services.pipeline.expressions import ExpressionError, evaluate_depends, evaluate_when
from services.pipeline.nodes import (
    FAILED,
    add_child,
    finish,
    is_finished,
    new_node,
    node_id,
    now_iso,
    param_dict,
    param_list,
    parse_iso,
)
from services.pipeline.variables import item_scope, substitute, substitute_all, to_text, unresolved

log = logging.getLogger(__name__)

RESUME_ANNOTATION = "pipeline.shipyard.io/resume-generation"
CACHE_ANNOTATION = "pipeline.shipyard.io/cache"
MAX_ITEMS = 10_000
MAX_RETRIES = 100  # "no limit" still stops somewhere


@dataclass
class PodResult:
    phase: str  # Succeeded | Failed | Error
    message: str | None = None
    exit_code: int | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    result: str | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)


class PodRunner(Protocol):
    """Runs leaf templates (container, script, plugin) as workloads."""

    async def start(
        self,
        wf: dict[str, Any],
        node: dict[str, Any],
        template: dict[str, Any],
        volumes: list[dict[str, Any]],
    ) -> None: ...

    async def poll(self, wf: dict[str, Any], node: dict[str, Any]) -> PodResult | None: ...

    async def kill(self, wf: dict[str, Any], node: dict[str, Any]) -> None: ...


class Cache(Protocol):
    async def get(
        self, namespace: str, key: str, max_age: float | None
    ) -> dict[str, Any] | None: ...

    async def put(
        self, namespace: str, key: str, outputs: dict[str, Any], workflow: str, node: str
    ) -> None: ...


class TemplateError(Exception):
    """A template problem found while running (becomes an Error node)."""


class TemplateBook:
    """Templates by scope: ``local`` (the workflow's own) and ``namespaced/<WorkflowTemplate>``."""

    def __init__(self, local: list[dict[str, Any]], stored: Mapping[str, dict[str, Any]]) -> None:
        self.local = {t["name"]: t for t in local}
        self.stored = stored

    def get(self, scope: str, name: str) -> dict[str, Any]:
        tmpl = self.local.get(name) if scope == "local" else self.stored.get(f"{scope}/{name}")
        if tmpl is None:
            where = "the workflow" if scope == "local" else scope.replace("namespaced/", "")
            raise TemplateError(f"template {name!r} not found in {where}")
        return tmpl

    def for_task(self, scope: str, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ref = task.get("templateRef")
        if ref:
            ref_scope = f"namespaced/{ref['name']}"
            return ref_scope, self.get(ref_scope, ref["template"])
        return scope, self.get(scope, task["template"])


def duration_seconds(text: str | int | float | None) -> float | None:
    """Argo durations: plain seconds ("30") or Go style ("1m30s", "2h", "500ms")."""
    if text is None or text == "":
        return None
    if isinstance(text, int | float):
        return float(text)
    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    for amount, unit in parts:
        total += float(amount) * units[unit]
    return total


def template_type(tmpl: dict[str, Any]) -> str:
    for key, kind in (
        ("container", "Pod"),
        ("script", "Pod"),
        ("plugin", "Pod"),
        ("dag", "DAG"),
        ("steps", "Steps"),
        ("suspend", "Suspend"),
    ):
        if tmpl.get(key) is not None:
            return kind
    raise TemplateError(
        f"template {tmpl.get('name')!r} has no container, script, dag, steps or suspend"
    )


@dataclass
class Scope:
    """Variables and artifacts visible while expanding one template's tasks or steps."""

    values: dict[str, str]
    artifacts: dict[str, dict[str, Any]]

    def child(self) -> Scope:
        return Scope(dict(self.values), dict(self.artifacts))


@dataclass
class PassResult:
    changed: bool = False
    requeue_after: float | None = None
    node_events: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # node, old
    run_event: str | None = None  # "started" | "succeeded" | "failed" | ...


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
        self.running_pods = sum(
            1 for n in self.nodes.values() if n["type"] == "Pod" and n["phase"] == "Running"
        )
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
                    params = self._workflow_parameters()
                    root = await self.execute(
                        self.name,
                        self.name,
                        "local",
                        self.spec.get("entrypoint", ""),
                        params,
                        {},
                        None,
                        self._workflow_scope(),
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
                if node["type"] == "Pod" and node["phase"] == "Running":
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
            scope = self._workflow_scope()
            scope.values["workflow.status"] = phase
            scope.values["workflow.failures"] = json.dumps(self._failures())
            exit_name = f"{self.name}.onExit"
            try:
                exit_node = await self.execute(
                    exit_name,
                    exit_name,
                    "local",
                    exit_tmpl,
                    self._workflow_parameters(),
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
            if node["type"] == "Pod" and node["phase"] == "Running":
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

    # -------------------------------------------------------------- variables
    def _workflow_parameters(self) -> dict[str, str]:
        return param_dict((self.spec.get("arguments") or {}).get("parameters"))

    def _workflow_scope(self) -> Scope:
        meta = self.wf["metadata"]
        values = {
            "workflow.name": self.name,
            "workflow.namespace": self.namespace,
            "workflow.uid": meta.get("uid", ""),
            "workflow.creationTimestamp": meta.get("creationTimestamp", ""),
            "workflow.serviceAccountName": self.spec.get("serviceAccountName") or "default",
            "workflow.status": self.status.get("phase", "Running"),
            "workflow.duration": str(int(self._elapsed(self.status.get("startedAt")))),
        }
        for key, value in self._workflow_parameters().items():
            values[f"workflow.parameters.{key}"] = value
        for key, value in (meta.get("labels") or {}).items():
            values[f"workflow.labels.{key}"] = value
        for key, value in (meta.get("annotations") or {}).items():
            values[f"workflow.annotations.{key}"] = value
        return Scope(values, {})

    def _resolve_inputs(
        self,
        tmpl: dict[str, Any],
        params: dict[str, str],
        artifacts: dict[str, dict[str, Any]],
        scope: Scope,
    ) -> tuple[dict[str, str], list[dict[str, Any]]]:
        inputs = tmpl.get("inputs") or {}
        values: dict[str, str] = {}
        for p in inputs.get("parameters") or []:
            name = p["name"]
            if name in params:
                value = params[name]
            elif p.get("value") is not None:
                value = substitute(p["value"], scope.values)
            elif p.get("default") is not None:
                value = substitute(p["default"], scope.values)
            else:
                raise TemplateError(
                    f"inputs.parameters.{name} was not supplied to template {tmpl['name']!r}"
                )
            if p.get("enum") and value not in p["enum"]:
                raise TemplateError(
                    f"inputs.parameters.{name}: value {value!r} is not one of {p['enum']}"
                )
            values[name] = value
        arts: list[dict[str, Any]] = []
        for a in inputs.get("artifacts") or []:
            got = artifacts.get(a["name"])
            if got is None and a.get("raw"):
                got = {"raw": {"data": substitute(a["raw"].get("data", ""), scope.values)}}
            if got is None and (a.get("s3") or a.get("http")):
                got = _located_artifact(a, scope.values)
            if got is None and a.get("from"):
                got = scope.artifacts.get(_var(a["from"]))
            if got is None:
                if a.get("optional"):
                    continue
                raise TemplateError(
                    f"inputs.artifacts.{a['name']} was not supplied to template {tmpl['name']!r}"
                )
            art = {k: v for k, v in got.items() if k not in ("name", "path", "from")}
            arts.append({"name": a["name"], "path": a.get("path"), **art})
        return values, arts

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
                values, arts = self._resolve_inputs(tmpl, params, artifacts, scope)
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
        local = self._template_scope(scope, node, tmpl, retry_attempt)
        if node["type"] in ("DAG", "Steps") and await self._group_deadline(node, tmpl):
            return node
        try:
            if node["type"] == "Retry":
                await self._run_retry(node, tmpl, tmpl_scope, params, artifacts, scope)
            elif node["type"] == "Pod":
                await self._run_pod(node, tmpl, local)
            elif node["type"] == "DAG":
                await self._run_dag(node, tmpl, tmpl_scope, local)
            elif node["type"] == "Steps":
                await self._run_steps(node, tmpl, tmpl_scope, local)
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

    async def _group_deadline(self, node: dict[str, Any], tmpl: dict[str, Any]) -> bool:
        """``activeDeadlineSeconds``/``timeout`` of a dag or steps template: past it, stop
        everything below the node (descendants' names extend the node's name)."""
        limits: list[float] = []
        for key in ("activeDeadlineSeconds", "timeout"):
            raw = tmpl.get(key)
            if raw not in (None, "") and "{{" not in str(raw):
                value = duration_seconds(raw)
                if value is not None:
                    limits.append(value)
        if not limits:
            return False
        left = min(limits) - self._elapsed(node.get("startedAt"))
        if left > 0:
            self._requeue(left + 0.05)
            return False
        prefix = node["name"]
        for other in list(self.nodes.values()):
            if other is node or is_finished(other):
                continue
            if other["name"][len(prefix) : len(prefix) + 1] in (".", "[", "(") and other[
                "name"
            ].startswith(prefix):
                if other["type"] == "Pod" and other["phase"] == "Running":
                    await self.runner.kill(self.wf, other)
                finish(other, "Failed", "Step exceeded its deadline")
        finish(node, "Failed", "Step exceeded its deadline")
        return True

    def _template_scope(
        self, scope: Scope, node: dict[str, Any], tmpl: dict[str, Any], retry_attempt: int | None
    ) -> Scope:
        local = Scope({k: v for k, v in scope.values.items() if k.startswith("workflow.")}, {})
        inputs = node.get("inputs") or {}
        for p in inputs.get("parameters") or []:
            local.values[f"inputs.parameters.{p['name']}"] = p.get("value", "")
        for a in inputs.get("artifacts") or []:
            if a.get("path"):
                local.values[f"inputs.artifacts.{a['name']}.path"] = a["path"]
            local.artifacts[f"inputs.artifacts.{a['name']}"] = a
        for p in (tmpl.get("outputs") or {}).get("parameters") or []:
            path = (p.get("valueFrom") or {}).get("path")
            if path:
                local.values[f"outputs.parameters.{p['name']}.path"] = path
        for a in (tmpl.get("outputs") or {}).get("artifacts") or []:
            if a.get("path"):
                local.values[f"outputs.artifacts.{a['name']}.path"] = a["path"]
        local.values["node.name"] = node["name"]
        local.values["pod.name"] = node["id"]
        local.values["retries"] = str(retry_attempt or 0)
        return local

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
            scope.update(self._workflow_scope().values)
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
        if node["phase"] == "Pending":
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
            self.running_pods += 1
            await self.runner.start(self.wf, node, resolved, self._volumes(tmpl))
        result = await self.runner.poll(self.wf, node)
        if result is None:
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

    # ------------------------------------------------------------------ retry
    async def _run_retry(
        self,
        node: dict[str, Any],
        tmpl: dict[str, Any],
        tmpl_scope: str,
        params: dict[str, str],
        artifacts: dict[str, dict[str, Any]],
        scope: Scope,
    ) -> None:
        strategy = tmpl["retryStrategy"]
        raw_limit = strategy.get("limit")
        limit = int(substitute(raw_limit, scope.values)) if raw_limit not in (None, "") else None
        policy = strategy.get("retryPolicy") or "OnFailure"
        attempt_tmpl = {k: v for k, v in tmpl.items() if k != "retryStrategy"}
        boundary = node.get("boundaryID")
        node["phase"] = "Running"

        def attempt_name(i: int) -> str:
            return f"{node['name']}({i})"

        attempts = 0
        while node_id(self.name, attempt_name(attempts)) in self.nodes:
            attempts += 1
        if attempts:
            last = self.nodes[node_id(self.name, attempt_name(attempts - 1))]
            if not is_finished(last):
                last = await self.execute(
                    attempt_name(attempts - 1),
                    attempt_name(attempts - 1).rsplit(".", 1)[-1],
                    tmpl_scope,
                    attempt_tmpl,
                    params,
                    artifacts,
                    boundary,
                    scope,
                    retry_attempt=attempts - 1,
                )
                if not is_finished(last):
                    return
            if last.get("outputs"):
                node["outputs"] = last["outputs"]
            if last["phase"] in ("Succeeded", "Skipped", "Omitted"):
                finish(node, last["phase"])
                return
            retryable = (
                policy == "Always"
                or (policy == "OnFailure" and last["phase"] == "Failed")
                or (policy in ("OnError", "OnTransientError") and last["phase"] == "Error")
            )
            cap = MAX_RETRIES if limit is None else limit
            if not retryable or attempts > cap:
                message = last.get("message") or ""
                if retryable:
                    message = (
                        f"No more retries left ({message})" if message else "No more retries left"
                    )
                finish(node, last["phase"], message)
                return
            wait = self._backoff(strategy, attempts, scope)
            finished_at = parse_iso(last.get("finishedAt")) or self.now
            ready_at = finished_at + timedelta(seconds=wait)
            if wait > 0 and ready_at > self.now:
                node["message"] = f"Backoff for {wait:g}s"
                self._requeue((ready_at - self.now).total_seconds())
                return
        node.pop("message", None)
        child = await self.execute(
            attempt_name(attempts),
            attempt_name(attempts).rsplit(".", 1)[-1],
            tmpl_scope,
            attempt_tmpl,
            params,
            artifacts,
            boundary,
            scope,
            retry_attempt=attempts,
        )
        add_child(node, child["id"])
        if is_finished(child):
            self._requeue(0.05)  # fold the outcome in (and maybe retry) on the next pass

    def _backoff(self, strategy: dict[str, Any], attempt: int, scope: Scope) -> float:
        backoff = strategy.get("backoff") or {}
        base = duration_seconds(substitute(backoff.get("duration") or "0", scope.values)) or 0.0
        factor = float(backoff.get("factor") or 1)
        wait = base * factor ** max(0, attempt - 1)
        cap = duration_seconds(backoff.get("maxDuration"))
        if cap is not None:
            wait = min(wait, cap)
        return wait

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

    # -------------------------------------------------------------- dag/steps
    def _expand_items(self, task: dict[str, Any], scope: Scope) -> list[tuple[str, Any]] | None:
        """Loop items of a task as (label, item), or None when it does not loop."""
        items: list[Any]
        if task.get("withItems") is not None:
            items = [substitute_all(i, scope.values) for i in task["withItems"]]
        elif task.get("withParam") is not None:
            raw = substitute(task["withParam"], scope.values)
            try:
                items = json.loads(raw)
            except ValueError:
                raise TemplateError(
                    f"withParam value could not be parsed as a JSON list: {raw[:200]}"
                ) from None
            if not isinstance(items, list):
                raise TemplateError(f"withParam value is not a JSON list: {raw[:200]}")
        elif task.get("withSequence") is not None:
            items = _sequence(substitute_all(task["withSequence"], scope.values))
        else:
            return None
        if len(items) > MAX_ITEMS:
            raise TemplateError(f"loop of {len(items)} items exceeds the limit of {MAX_ITEMS}")
        out = []
        for i, item in enumerate(items):
            label = to_text(item)
            if isinstance(item, dict):
                label = ",".join(f"{k}:{to_text(v)}" for k, v in sorted(item.items()))
            out.append((f"{i}:{label[:60]}", item))
        return out

    def _task_args(
        self, task: dict[str, Any], scope: Scope
    ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        args = task.get("arguments") or {}
        params: dict[str, str] = {}
        for p in args.get("parameters") or []:
            value = p.get("value")
            if value is None and (p.get("valueFrom") or {}).get("supplied") is None:
                value = p.get("default")
            params[p["name"]] = substitute(value or "", scope.values)
            left = unresolved(params[p["name"]])
            if left:
                raise TemplateError(
                    f"arguments.parameters.{p['name']}: unable to resolve {{{{{left[0]}}}}}"
                )
        arts: dict[str, dict[str, Any]] = {}
        for a in args.get("artifacts") or []:
            if a.get("from"):
                got = scope.artifacts.get(_var(a["from"]))
                if got is None:
                    if a.get("optional"):
                        continue
                    raise TemplateError(
                        f"arguments.artifacts.{a['name']}: unable to resolve {a['from']}"
                    )
                arts[a["name"]] = got
            elif a.get("raw"):
                arts[a["name"]] = {
                    "raw": {"data": substitute(a["raw"].get("data", ""), scope.values)}
                }
            elif a.get("s3") or a.get("http"):
                arts[a["name"]] = _located_artifact(a, scope.values)
        return params, arts

    async def _run_task(
        self,
        task: dict[str, Any],
        name: str,
        tmpl_scope: str,
        boundary: str,
        scope: Scope,
        group_parent: dict[str, Any] | None,
        slots: list[int],
    ) -> dict[str, Any] | list[dict[str, Any]] | None:
        """Start or continue one DAG task / step. Returns its node (or iteration nodes)."""
        display = name.rsplit(".", 1)[-1]
        nid = node_id(self.name, name)
        existing = self.nodes.get(nid)
        if existing is None and task.get("when"):
            condition = substitute(task["when"], scope.values)
            try:
                run = evaluate_when(condition)
            except ExpressionError as exc:
                node = new_node(self.name, name, display, "Skipped", task.get("template"), boundary)
                finish(node, "Error", f"when '{condition}': {exc}")
                self.nodes[nid] = node
                return node
            if not run:
                node = new_node(self.name, name, display, "Skipped", task.get("template"), boundary)
                finish(node, "Skipped", f"when '{condition}' evaluated false")
                self.nodes[nid] = node
                return node
        child_scope, tmpl = self.book.for_task(tmpl_scope, task)
        loop_existing = existing is not None and existing["type"] == "TaskGroup"
        items = None
        if existing is None or loop_existing:
            items = self._expand_items(task, scope)
        if items is not None:
            if group_parent is None:  # DAG: a TaskGroup node holds the iterations
                group = existing or new_node(
                    self.name, name, display, "TaskGroup", tmpl["name"], boundary, phase="Running"
                )
                self.nodes[nid] = group
                if not items:
                    finish(group, "Skipped", "Skipped, empty params")
                    return group
                children = await self._run_items(
                    task, name, child_scope, tmpl, items, boundary, scope, group, slots
                )
                if all(is_finished(c) for c in children):
                    failed = [c for c in children if c["phase"] in FAILED]
                    continue_failed = (task.get("continueOn") or {}).get("failed")
                    finish(
                        group,
                        "Failed" if failed and not continue_failed else "Succeeded",
                        failed[0].get("message") if failed else None,
                    )
                return group
            return await self._run_items(
                task, name, child_scope, tmpl, items, boundary, scope, group_parent, slots
            )
        if existing is None:
            if slots[0] <= 0:
                self._starved = True
                return None
            slots[0] -= 1
        params, arts = self._task_args(task, scope)
        was_finished = is_finished(existing)
        node = await self.execute(name, display, child_scope, tmpl, params, arts, boundary, scope)
        self._release_slot(was_finished, node, slots)
        return node

    async def _run_items(
        self,
        task: dict[str, Any],
        name: str,
        tmpl_scope: str,
        tmpl: dict[str, Any],
        items: list[tuple[str, Any]],
        boundary: str,
        scope: Scope,
        parent: dict[str, Any],
        slots: list[int],
    ) -> list[dict[str, Any]]:
        nodes = []
        for label, item in items:
            iter_name = f"{name}({label})"
            existing = self.nodes.get(node_id(self.name, iter_name))
            if existing is None:
                if slots[0] <= 0:
                    self._starved = True
                    nodes.append({"id": "", "phase": "Pending", "type": "Pod", "name": iter_name})
                    continue
                slots[0] -= 1
            iscope = scope.child()
            iscope.values.update(item_scope(item))
            params, arts = self._task_args(task, iscope)
            was_finished = is_finished(existing)
            node = await self.execute(
                iter_name,
                iter_name.rsplit(".", 1)[-1],
                tmpl_scope,
                tmpl,
                params,
                arts,
                boundary,
                iscope,
            )
            self._release_slot(was_finished, node, slots)
            add_child(parent, node["id"])
            nodes.append(node)
        return nodes

    def _release_slot(self, was_finished: bool, node: dict[str, Any], slots: list[int]) -> None:
        """A child that finished during this pass gives its parallelism place back."""
        if not was_finished and is_finished(node):
            slots[0] += 1
            self._freed = True

    def _slots(self, tmpl: dict[str, Any], boundary: str) -> list[int]:
        """Free places under a template's ``parallelism``, as a counter the pass updates:
        a child finishing in this pass frees its place at once (see ``_release_slot``), and a
        child left waiting for a place that frees later in the pass gets a prompt next pass
        (``_starved``), because nothing else would wake the workflow."""
        limit = tmpl.get("parallelism")
        if not limit:
            return [1 << 30]
        active = sum(
            1
            for n in self.nodes.values()
            if n.get("boundaryID") == boundary
            and n["type"] not in ("TaskGroup", "StepGroup")
            and not is_finished(n)
        )
        return [max(0, int(limit) - active)]

    def _publish(
        self, prefix: str, task: str, node: dict[str, Any] | list[dict[str, Any]], scope: Scope
    ) -> None:
        """Expose a finished task's outputs as ``tasks.X.…`` / ``steps.X.…``."""
        base = f"{prefix}.{task}"
        if isinstance(node, list):  # loop iterations of a step
            nodes = node
        elif node["type"] == "TaskGroup":
            nodes = self._iterations(node)
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

    async def _run_dag(
        self, node: dict[str, Any], tmpl: dict[str, Any], tmpl_scope: str, scope: Scope
    ) -> None:
        node["phase"] = "Running"
        dag = tmpl["dag"]
        tasks = {t["name"]: t for t in dag["tasks"]}
        order = topological(dag["tasks"])
        fail_fast = dag.get("failFast", tmpl.get("failFast"))
        fail_fast = True if fail_fast is None else fail_fast
        expected_failures = _expected_failures(dag["tasks"])
        slots = self._slots(tmpl, node["id"])
        state: dict[str, dict[str, Any]] = {}
        failed_unexpected = False
        for tname in order:
            task = tasks[tname]
            tnode_name = f"{node['name']}.{tname}"
            tnode = self.nodes.get(node_id(self.name, tnode_name))
            if is_finished(tnode) and not self._exit_pending(task, tnode):
                if self._record_task(tname, task, tnode, state, expected_failures, scope):  # type: ignore[arg-type]
                    failed_unexpected = True
                continue
            if tnode is None:
                ready, run = self._deps_ready(task, state, tasks)
                if not ready:
                    continue
                if failed_unexpected and fail_fast:
                    continue
                deps = _task_deps(task)
                if not run:
                    tnode = new_node(
                        self.name, tnode_name, tname, "Skipped", task.get("template"), node["id"]
                    )
                    finish(tnode, "Omitted", "omitted: depends condition not met")
                    self.nodes[tnode["id"]] = tnode
                else:
                    got = await self._run_task(
                        task, tnode_name, tmpl_scope, node["id"], scope, None, slots
                    )
                    if got is None:
                        continue
                    tnode = got  # type: ignore[assignment]
                self._link(node, deps, tnode)  # type: ignore[arg-type]
            else:
                tnode = await self._run_task(
                    task, tnode_name, tmpl_scope, node["id"], scope, None, slots
                )  # type: ignore[assignment]
            if is_finished(tnode):
                if not await self._run_exit_hook(task, tnode, tmpl_scope, node, scope):  # type: ignore[arg-type]
                    continue
                if self._record_task(tname, task, tnode, state, expected_failures, scope):  # type: ignore[arg-type]
                    failed_unexpected = True
        if failed_unexpected and fail_fast:
            active = any(
                not is_finished(self.nodes.get(node_id(self.name, f"{node['name']}.{t}")))
                for t in tasks
                if node_id(self.name, f"{node['name']}.{t}") in self.nodes
            )
            if not active:
                self._finish_group(node, tmpl, scope, failed=True, state=state)
            return
        if all(t in state for t in tasks):
            self._finish_group(node, tmpl, scope, failed=failed_unexpected, state=state)

    def _record_task(
        self,
        tname: str,
        task: dict[str, Any],
        tnode: dict[str, Any],
        state: dict[str, dict[str, Any]],
        expected_failures: set[str],
        scope: Scope,
    ) -> bool:
        """Note a finished DAG task; True if it failed and nothing expected or allows that."""
        state[tname] = tnode
        self._publish("tasks", tname, tnode, scope)
        return (
            tnode["phase"] in FAILED
            and tname not in expected_failures
            and not (task.get("continueOn") or {}).get("failed")
        )

    def _exit_pending(self, task: dict[str, Any], tnode: dict[str, Any] | None) -> bool:
        if not task.get("onExit") or tnode is None:
            return False
        exit_node = self.nodes.get(node_id(self.name, f"{tnode['name']}.onExit"))
        return not is_finished(exit_node)

    async def _run_exit_hook(
        self,
        task: dict[str, Any],
        tnode: dict[str, Any],
        tmpl_scope: str,
        parent: dict[str, Any],
        scope: Scope,
    ) -> bool:
        """A task's own ``onExit``: run after the task; True once it (if any) finished."""
        if not task.get("onExit"):
            return True
        name = f"{tnode['name']}.onExit"
        hook_scope = scope.child()
        hook_scope.values["workflow.status"] = tnode["phase"]
        exit_node = await self.execute(
            name,
            name.rsplit(".", 1)[-1],
            tmpl_scope,
            task["onExit"],
            {},
            {},
            parent["id"],
            hook_scope,
        )
        add_child(tnode, exit_node["id"])
        return is_finished(exit_node)

    def _link(self, dag_node: dict[str, Any], deps: list[str], tnode: dict[str, Any]) -> None:
        if not deps:
            add_child(dag_node, tnode["id"])
            return
        for dep in deps:
            dep_node = self.nodes.get(node_id(self.name, f"{dag_node['name']}.{dep}"))
            if dep_node is None:
                continue
            if dep_node["type"] == "TaskGroup":
                for kid in self._iterations(dep_node):
                    add_child(kid, tnode["id"])
            else:
                add_child(dep_node, tnode["id"])

    def _iterations(self, group: dict[str, Any]) -> list[dict[str, Any]]:
        prefix = group["name"] + "("
        return [
            self.nodes[c]
            for c in group.get("children", [])
            if c in self.nodes and self.nodes[c]["name"].startswith(prefix)
        ]

    def _deps_ready(
        self,
        task: dict[str, Any],
        state: dict[str, dict[str, Any]],
        tasks: dict[str, dict[str, Any]],
    ) -> tuple[bool, bool]:
        """(all dependencies finished, the task should run)."""
        deps = _task_deps(task)
        if any(d not in state for d in deps):
            return False, False
        if task.get("depends"):

            def result_of(name: str, result: str | None) -> bool:
                node = state[name]
                phase = node["phase"]
                if result is None:
                    return phase in ("Succeeded", "Skipped", "Omitted")
                if result == "AnySucceeded":
                    kids = self._iterations(node)
                    return any(k["phase"] == "Succeeded" for k in kids)
                if result == "AllFailed":
                    kids = self._iterations(node)
                    return bool(kids) and all(k["phase"] in FAILED for k in kids)
                if result == "Errored":
                    return phase == "Error"
                return phase == result

            return True, evaluate_depends(task["depends"], result_of)
        ok = all(
            state[d]["phase"] in ("Succeeded", "Skipped", "Omitted")
            or (
                state[d]["phase"] in FAILED
                and bool((tasks[d].get("continueOn") or {}).get("failed"))
            )
            for d in deps
        )
        return True, ok

    def _finish_group(
        self,
        node: dict[str, Any],
        tmpl: dict[str, Any],
        scope: Scope,
        *,
        failed: bool,
        state: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        outputs = self._group_outputs(tmpl, scope)
        if outputs:
            node["outputs"] = outputs
        if failed:
            message = None
            for n in (state or {}).values():
                if n["phase"] in FAILED:
                    message = n.get("message") or f"child '{n['id']}' failed"
                    break
            finish(node, "Failed", message)
        else:
            finish(node, "Succeeded")

    def _group_outputs(self, tmpl: dict[str, Any], scope: Scope) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        spec = tmpl.get("outputs") or {}
        params = []
        for p in spec.get("parameters") or []:
            expr = (p.get("valueFrom") or {}).get("parameter")
            value = substitute(expr, scope.values) if expr else p.get("value")
            if value is None or unresolved(value):
                value = (p.get("valueFrom") or {}).get("default") or ""
            params.append({"name": p["name"], "value": value})
        if params:
            outputs["parameters"] = params
        arts = []
        for a in spec.get("artifacts") or []:
            got = scope.artifacts.get(_var(a.get("from") or ""))
            if got:
                arts.append({**got, "name": a["name"]})
        if arts:
            outputs["artifacts"] = arts
        return outputs

    async def _run_steps(
        self, node: dict[str, Any], tmpl: dict[str, Any], tmpl_scope: str, scope: Scope
    ) -> None:
        node["phase"] = "Running"
        previous: list[dict[str, Any]] = [node]
        for i, group in enumerate(tmpl["steps"]):
            gname = f"{node['name']}[{i}]"
            gid = node_id(self.name, gname)
            gnode = self.nodes.get(gid)
            if gnode is None:
                gnode = new_node(
                    self.name, gname, f"[{i}]", "StepGroup", None, node["id"], phase="Running"
                )
                self.nodes[gid] = gnode
                for p in previous:
                    add_child(p, gid)
            if not is_finished(gnode):
                slots = self._slots(tmpl, node["id"])
                group_scope = scope.child()
                members: list[dict[str, Any]] = []
                done = True
                failed = False
                for step in group:
                    sname = f"{gname}.{step['name']}"
                    got = await self._run_task(
                        step, sname, tmpl_scope, node["id"], group_scope, gnode, slots
                    )
                    if got is None:
                        done = False
                        continue
                    nodes = got if isinstance(got, list) else [got]
                    if isinstance(got, dict):
                        add_child(gnode, got["id"])
                    for n in nodes:
                        if not is_finished(n):
                            done = False
                        elif n["phase"] in FAILED and not (step.get("continueOn") or {}).get(
                            "failed"
                        ):
                            failed = True
                    members.extend(nodes)
                if not done:
                    return
                finish(gnode, "Failed" if failed else "Succeeded")
            for step in group:
                sname = f"{gname}.{step['name']}"
                snode = self.nodes.get(node_id(self.name, sname))
                if snode is not None:
                    self._publish("steps", step["name"], snode, scope)
                else:
                    iters = [
                        self.nodes[c]
                        for c in gnode.get("children", [])
                        if c in self.nodes and self.nodes[c]["name"].startswith(sname + "(")
                    ]
                    self._publish("steps", step["name"], iters, scope)
            previous = [self.nodes[c] for c in gnode.get("children", []) if c in self.nodes] or [
                gnode
            ]
            if gnode["phase"] in FAILED:
                failed_child = next(
                    (
                        self.nodes[c]
                        for c in gnode.get("children", [])
                        if c in self.nodes and self.nodes[c]["phase"] in FAILED
                    ),
                    None,
                )
                self._finish_group(
                    node,
                    tmpl,
                    scope,
                    failed=True,
                    state={"x": failed_child} if failed_child else None,
                )
                return
        self._finish_group(node, tmpl, scope, failed=False)


def _var(expr: str) -> str:
    m = re.fullmatch(r"\s*\{\{\s*([^{}]+?)\s*\}\}\s*", expr)
    return m.group(1) if m else expr


def _task_deps(task: dict[str, Any]) -> list[str]:
    if task.get("depends"):
        from services.pipeline.expressions import parse_depends_operands

        return sorted({name for name, _ in parse_depends_operands(task["depends"])})
    return list(task.get("dependencies") or [])


def _expected_failures(tasks: list[dict[str, Any]]) -> set[str]:
    """Tasks whose failure another task's ``depends`` handles (so the DAG may still succeed)."""
    from services.pipeline.expressions import parse_depends_operands

    out: set[str] = set()
    for task in tasks:
        if task.get("depends"):
            for name, result in parse_depends_operands(task["depends"]):
                if result in ("Failed", "Errored", "AnySucceeded", "AllFailed"):
                    out.add(name)
    return out


def topological(tasks: list[dict[str, Any]]) -> list[str]:
    """Task names in dependency order; raises ValueError naming a cycle."""
    deps = {t["name"]: [d for d in _task_deps(t)] for t in tasks}
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name) :] + [name]
            raise ValueError("dependency cycle: " + " -> ".join(cycle))
        state[name] = 1
        for d in deps.get(name, []):
            if d in deps:
                visit(d, [*path, name])
        state[name] = 2
        order.append(name)

    for t in tasks:
        visit(t["name"], [])
    return order


def _sequence(seq: dict[str, Any]) -> list[str]:
    fmt = seq.get("format")
    if seq.get("count") is not None:
        start = int(seq.get("start") or 0)
        values = list(range(start, start + int(seq["count"])))
    else:
        start, end = int(seq.get("start") or 0), int(seq.get("end") or 0)
        values = list(range(start, end + 1)) if end >= start else list(range(start, end - 1, -1))
    if len(values) > MAX_ITEMS:
        raise TemplateError(f"withSequence of {len(values)} items exceeds {MAX_ITEMS}")
    if fmt:
        try:
            return [fmt % v for v in values]
        except (TypeError, ValueError):
            raise TemplateError(f"withSequence.format {fmt!r} is not a printf format") from None
    return [str(v) for v in values]


def _located_artifact(art: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """An ``s3`` or ``http`` artifact location with its key's or URL's variables substituted."""
    out: dict[str, Any] = {}
    for kind, attr in (("s3", "key"), ("http", "url")):
        if art.get(kind):
            location = dict(art[kind])
            if location.get(attr):
                location[attr] = substitute(location[attr], values)
            out[kind] = location
    if art.get("archive"):
        out["archive"] = art["archive"]
    return out
