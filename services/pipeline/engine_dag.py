"""A ``dag`` template: tasks in dependency order, ``depends`` and ``when``, exit hooks.

One seam of an :class:`~services.pipeline.engine.Engine` pass (its module says how they fit).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from services.pipeline import engine_groups as _groups
from services.pipeline.engine_types import Scope
from services.pipeline.expressions import evaluate_depends
from services.pipeline.nodes import FAILED, add_child, finish, is_finished, new_node, node_id

if TYPE_CHECKING:
    from services.pipeline.engine import Engine

log = logging.getLogger(__name__)


async def run_dag(
    eng: Engine, node: dict[str, Any], tmpl: dict[str, Any], tmpl_scope: str, scope: Scope
) -> None:
    node["phase"] = "Running"
    dag = tmpl["dag"]
    tasks = {t["name"]: t for t in dag["tasks"]}
    order = topological(dag["tasks"])
    fail_fast = dag.get("failFast", tmpl.get("failFast"))
    fail_fast = True if fail_fast is None else fail_fast
    expected_failures = expected_failures_of(dag["tasks"])
    slots = _groups.slots(eng, tmpl, node["id"])
    state: dict[str, dict[str, Any]] = {}
    failed_unexpected = False
    for tname in order:
        task = tasks[tname]
        tnode_name = f"{node['name']}.{tname}"
        tnode = eng.nodes.get(node_id(eng.name, tnode_name))
        if is_finished(tnode) and not exit_pending(eng, task, tnode):
            if record_task(eng, tname, task, tnode, state, expected_failures, scope):  # type: ignore[arg-type]
                failed_unexpected = True
            continue
        if tnode is None:
            ready, run = deps_ready(eng, task, state, tasks)
            if not ready:
                continue
            if failed_unexpected and fail_fast:
                continue
            deps = task_deps(task)
            if not run:
                tnode = new_node(
                    eng.name, tnode_name, tname, "Skipped", task.get("template"), node["id"]
                )
                finish(tnode, "Omitted", "omitted: depends condition not met")
                eng.nodes[tnode["id"]] = tnode
            else:
                got = await _groups.run_task(
                    eng, task, tnode_name, tmpl_scope, node["id"], scope, None, slots
                )
                if got is None:
                    continue
                tnode = got  # type: ignore[assignment]
            link(eng, node, deps, tnode)  # type: ignore[arg-type]
        else:
            tnode = await _groups.run_task(
                eng, task, tnode_name, tmpl_scope, node["id"], scope, None, slots
            )  # type: ignore[assignment]
        if is_finished(tnode):
            if not await run_exit_hook(eng, task, tnode, tmpl_scope, node, scope):  # type: ignore[arg-type]
                continue
            if record_task(eng, tname, task, tnode, state, expected_failures, scope):  # type: ignore[arg-type]
                failed_unexpected = True
    if failed_unexpected and fail_fast:
        active = any(
            not is_finished(eng.nodes.get(node_id(eng.name, f"{node['name']}.{t}")))
            for t in tasks
            if node_id(eng.name, f"{node['name']}.{t}") in eng.nodes
        )
        if not active:
            _groups.finish_group(eng, node, tmpl, scope, failed=True, state=state)
        return
    if all(t in state for t in tasks):
        _groups.finish_group(eng, node, tmpl, scope, failed=failed_unexpected, state=state)


def record_task(
    eng: Engine,
    tname: str,
    task: dict[str, Any],
    tnode: dict[str, Any],
    state: dict[str, dict[str, Any]],
    expected_failures: set[str],
    scope: Scope,
) -> bool:
    """Note a finished DAG task; True if it failed and nothing expected or allows that."""
    state[tname] = tnode
    eng._publish("tasks", tname, tnode, scope)
    return (
        tnode["phase"] in FAILED
        and tname not in expected_failures
        and not (task.get("continueOn") or {}).get("failed")
    )


def exit_pending(eng: Engine, task: dict[str, Any], tnode: dict[str, Any] | None) -> bool:
    if not task.get("onExit") or tnode is None:
        return False
    exit_node = eng.nodes.get(node_id(eng.name, f"{tnode['name']}.onExit"))
    return not is_finished(exit_node)


async def run_exit_hook(
    eng: Engine,
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
    exit_node = await eng.execute(
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


def link(eng: Engine, dag_node: dict[str, Any], deps: list[str], tnode: dict[str, Any]) -> None:
    if not deps:
        add_child(dag_node, tnode["id"])
        return
    for dep in deps:
        dep_node = eng.nodes.get(node_id(eng.name, f"{dag_node['name']}.{dep}"))
        if dep_node is None:
            continue
        if dep_node["type"] == "TaskGroup":
            for kid in _groups.iterations(eng, dep_node):
                add_child(kid, tnode["id"])
        else:
            add_child(dep_node, tnode["id"])


def deps_ready(
    eng: Engine,
    task: dict[str, Any],
    state: dict[str, dict[str, Any]],
    tasks: dict[str, dict[str, Any]],
) -> tuple[bool, bool]:
    """(all dependencies finished, the task should run)."""
    deps = task_deps(task)
    if any(d not in state for d in deps):
        return False, False
    if task.get("depends"):

        def result_of(name: str, result: str | None) -> bool:
            node = state[name]
            phase = node["phase"]
            if result is None:
                return phase in ("Succeeded", "Skipped", "Omitted")
            if result == "AnySucceeded":
                kids = _groups.iterations(eng, node)
                return any(k["phase"] == "Succeeded" for k in kids)
            if result == "AllFailed":
                kids = _groups.iterations(eng, node)
                return bool(kids) and all(k["phase"] in FAILED for k in kids)
            if result == "Errored":
                return phase == "Error"
            return phase == result

        return True, evaluate_depends(task["depends"], result_of)
    ok = all(
        state[d]["phase"] in ("Succeeded", "Skipped", "Omitted")
        or (state[d]["phase"] in FAILED and bool((tasks[d].get("continueOn") or {}).get("failed")))
        for d in deps
    )
    return True, ok


def task_deps(task: dict[str, Any]) -> list[str]:
    if task.get("depends"):
        from services.pipeline.expressions import parse_depends_operands

        return sorted({name for name, _ in parse_depends_operands(task["depends"])})
    return list(task.get("dependencies") or [])


def expected_failures_of(tasks: list[dict[str, Any]]) -> set[str]:
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
    deps = {t["name"]: [d for d in task_deps(t)] for t in tasks}
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
