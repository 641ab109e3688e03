"""What dag and steps share: items and sequences, a task's arguments, running a task or its
items, parallelism slots, iterations and the end of a group.

One seam of an :class:`~services.pipeline.engine.Engine` pass (its module says how they fit).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from services.pipeline import engine_scope as _scope
from services.pipeline.engine_types import MAX_ITEMS, Scope, TemplateError, duration_seconds
from services.pipeline.expressions import ExpressionError, evaluate_when
from services.pipeline.nodes import (
    FAILED,
    add_child,
    finish,
    has_workload,
    is_finished,
    new_node,
    node_id,
)
from services.pipeline.variables import item_scope, substitute, substitute_all, to_text, unresolved

if TYPE_CHECKING:
    from services.pipeline.engine import Engine

log = logging.getLogger(__name__)


async def group_deadline(eng: Engine, node: dict[str, Any], tmpl: dict[str, Any]) -> bool:
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
    left = min(limits) - eng._elapsed(node.get("startedAt"))
    if left > 0:
        eng._requeue(left + 0.05)
        return False
    prefix = node["name"]
    for other in list(eng.nodes.values()):
        if other is node or is_finished(other):
            continue
        if other["name"][len(prefix) : len(prefix) + 1] in (".", "[", "(") and other[
            "name"
        ].startswith(prefix):
            if has_workload(other):
                await eng.runner.kill(eng.wf, other)
            finish(other, "Failed", "Step exceeded its deadline")
    finish(node, "Failed", "Step exceeded its deadline")
    return True


def expand_items(eng: Engine, task: dict[str, Any], scope: Scope) -> list[tuple[str, Any]] | None:
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
        items = sequence(substitute_all(task["withSequence"], scope.values))
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


def task_args(
    eng: Engine, task: dict[str, Any], scope: Scope
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
            got = scope.artifacts.get(_scope.var(a["from"]))
            if got is None:
                if a.get("optional"):
                    continue
                raise TemplateError(
                    f"arguments.artifacts.{a['name']}: unable to resolve {a['from']}"
                )
            arts[a["name"]] = got
        elif a.get("raw"):
            arts[a["name"]] = {"raw": {"data": substitute(a["raw"].get("data", ""), scope.values)}}
        elif a.get("s3") or a.get("http"):
            arts[a["name"]] = _scope.located_artifact(a, scope.values)
    return params, arts


async def run_task(
    eng: Engine,
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
    nid = node_id(eng.name, name)
    existing = eng.nodes.get(nid)
    if existing is None and task.get("when"):
        condition = substitute(task["when"], scope.values)
        try:
            run = evaluate_when(condition)
        except ExpressionError as exc:
            node = new_node(eng.name, name, display, "Skipped", task.get("template"), boundary)
            finish(node, "Error", f"when '{condition}': {exc}")
            eng.nodes[nid] = node
            return node
        if not run:
            node = new_node(eng.name, name, display, "Skipped", task.get("template"), boundary)
            finish(node, "Skipped", f"when '{condition}' evaluated false")
            eng.nodes[nid] = node
            return node
    child_scope, tmpl = eng.book.for_task(tmpl_scope, task)
    loop_existing = existing is not None and existing["type"] == "TaskGroup"
    items = None
    if existing is None or loop_existing:
        items = expand_items(eng, task, scope)
    if items is not None:
        if group_parent is None:  # DAG: a TaskGroup node holds the iterations
            group = existing or new_node(
                eng.name, name, display, "TaskGroup", tmpl["name"], boundary, phase="Running"
            )
            eng.nodes[nid] = group
            if not items:
                finish(group, "Skipped", "Skipped, empty params")
                return group
            children = await run_items(
                eng, task, name, child_scope, tmpl, items, boundary, scope, group, slots
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
        return await run_items(
            eng, task, name, child_scope, tmpl, items, boundary, scope, group_parent, slots
        )
    if existing is None:
        if slots[0] <= 0:
            eng._starved = True
            return None
        slots[0] -= 1
    params, arts = task_args(eng, task, scope)
    was_finished = is_finished(existing)
    node = await eng.execute(name, display, child_scope, tmpl, params, arts, boundary, scope)
    release_slot(eng, was_finished, node, slots)
    return node


async def run_items(
    eng: Engine,
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
        existing = eng.nodes.get(node_id(eng.name, iter_name))
        if existing is None:
            if slots[0] <= 0:
                eng._starved = True
                nodes.append({"id": "", "phase": "Pending", "type": "Pod", "name": iter_name})
                continue
            slots[0] -= 1
        iscope = scope.child()
        iscope.values.update(item_scope(item))
        params, arts = task_args(eng, task, iscope)
        was_finished = is_finished(existing)
        node = await eng.execute(
            iter_name,
            iter_name.rsplit(".", 1)[-1],
            tmpl_scope,
            tmpl,
            params,
            arts,
            boundary,
            iscope,
        )
        release_slot(eng, was_finished, node, slots)
        add_child(parent, node["id"])
        nodes.append(node)
    return nodes


def release_slot(eng: Engine, was_finished: bool, node: dict[str, Any], slots: list[int]) -> None:
    """A child that finished during this pass gives its parallelism place back."""
    if not was_finished and is_finished(node):
        slots[0] += 1
        eng._freed = True


def slots(eng: Engine, tmpl: dict[str, Any], boundary: str) -> list[int]:
    """Free places under a template's ``parallelism``, as a counter the pass updates:
    a child finishing in this pass frees its place at once (see ``_release_slot``), and a
    child left waiting for a place that frees later in the pass gets a prompt next pass
    (``_starved``), because nothing else would wake the workflow."""
    limit = tmpl.get("parallelism")
    if not limit:
        return [1 << 30]
    active = sum(
        1
        for n in eng.nodes.values()
        if n.get("boundaryID") == boundary
        and n["type"] not in ("TaskGroup", "StepGroup")
        and not is_finished(n)
    )
    return [max(0, int(limit) - active)]


def iterations(eng: Engine, group: dict[str, Any]) -> list[dict[str, Any]]:
    prefix = group["name"] + "("
    return [
        eng.nodes[c]
        for c in group.get("children", [])
        if c in eng.nodes and eng.nodes[c]["name"].startswith(prefix)
    ]


def finish_group(
    eng: Engine,
    node: dict[str, Any],
    tmpl: dict[str, Any],
    scope: Scope,
    *,
    failed: bool,
    state: dict[str, dict[str, Any]] | None = None,
) -> None:
    outputs = _scope.group_outputs(eng, tmpl, scope)
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


def sequence(seq: dict[str, Any]) -> list[str]:
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
