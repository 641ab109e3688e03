"""A ``steps`` template: groups of parallel steps, one group after another.

One seam of an :class:`~services.pipeline.engine.Engine` pass (its module says how they fit).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from services.pipeline import engine_groups as _groups
from services.pipeline.engine_types import Scope
from services.pipeline.nodes import FAILED, add_child, finish, is_finished, new_node, node_id

if TYPE_CHECKING:
    from services.pipeline.engine import Engine

log = logging.getLogger(__name__)


async def run_steps(
    eng: Engine, node: dict[str, Any], tmpl: dict[str, Any], tmpl_scope: str, scope: Scope
) -> None:
    node["phase"] = "Running"
    previous: list[dict[str, Any]] = [node]
    for i, group in enumerate(tmpl["steps"]):
        gname = f"{node['name']}[{i}]"
        gid = node_id(eng.name, gname)
        gnode = eng.nodes.get(gid)
        if gnode is None:
            gnode = new_node(
                eng.name, gname, f"[{i}]", "StepGroup", None, node["id"], phase="Running"
            )
            eng.nodes[gid] = gnode
            for p in previous:
                add_child(p, gid)
        if not is_finished(gnode):
            slots = _groups.slots(eng, tmpl, node["id"])
            group_scope = scope.child()
            members: list[dict[str, Any]] = []
            done = True
            failed = False
            for step in group:
                sname = f"{gname}.{step['name']}"
                got = await _groups.run_task(
                    eng, step, sname, tmpl_scope, node["id"], group_scope, gnode, slots
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
                    elif n["phase"] in FAILED and not (step.get("continueOn") or {}).get("failed"):
                        failed = True
                members.extend(nodes)
            if not done:
                return
            finish(gnode, "Failed" if failed else "Succeeded")
        for step in group:
            sname = f"{gname}.{step['name']}"
            snode = eng.nodes.get(node_id(eng.name, sname))
            if snode is not None:
                eng._publish("steps", step["name"], snode, scope)
            else:
                iters = [
                    eng.nodes[c]
                    for c in gnode.get("children", [])
                    if c in eng.nodes and eng.nodes[c]["name"].startswith(sname + "(")
                ]
                eng._publish("steps", step["name"], iters, scope)
        previous = [eng.nodes[c] for c in gnode.get("children", []) if c in eng.nodes] or [gnode]
        if gnode["phase"] in FAILED:
            failed_child = next(
                (
                    eng.nodes[c]
                    for c in gnode.get("children", [])
                    if c in eng.nodes and eng.nodes[c]["phase"] in FAILED
                ),
                None,
            )
            _groups.finish_group(
                eng,
                node,
                tmpl,
                scope,
                failed=True,
                state={"x": failed_child} if failed_child else None,
            )
            return
    _groups.finish_group(eng, node, tmpl, scope, failed=False)
