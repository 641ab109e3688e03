"""Semantic checks of a Workflow spec at submission, with field paths in every message.

The pydantic models already rejected unknown (unsupported) fields; here come the checks that
need the whole spec: the entrypoint and every referenced template exist, DAGs have no cycles,
dependencies name real tasks, required parameters are supplied, expressions parse.
"""

from __future__ import annotations

import re
from typing import Any

from services.common.errors import Cause
from services.pipeline.engine_dag import topological
from services.pipeline.engine_types import duration_seconds
from services.pipeline.expressions import (
    ExpressionError,
    check_when_syntax,
    parse_depends_operands,
)

_EXPR_TAG = re.compile(r"\{\{=")


def validate_workflow_object(obj: dict[str, Any]) -> list[Cause]:
    return validate_spec(obj.get("spec") or {}, "spec")


def validate_template_object(obj: dict[str, Any]) -> list[Cause]:
    return validate_spec(obj.get("spec") or {}, "spec", require_entrypoint=False)


def validate_spec(
    spec: dict[str, Any], path: str, *, require_entrypoint: bool = True
) -> list[Cause]:
    causes: list[Cause] = []
    templates = spec.get("templates") or []
    names: dict[str, int] = {}
    for i, t in enumerate(templates):
        if t["name"] in names:
            causes.append(
                Cause(f"{path}.templates[{i}].name", f"duplicate template name {t['name']!r}")
            )
        names[t["name"]] = i
    has_ref = bool(spec.get("workflowTemplateRef"))
    entry = spec.get("entrypoint")
    if not has_ref:
        if not entry and require_entrypoint:
            causes.append(Cause(f"{path}.entrypoint", "Required value", "FieldValueRequired"))
        elif entry and entry not in names:
            causes.append(Cause(f"{path}.entrypoint", f"template {entry!r} not found"))
    if spec.get("onExit") and spec["onExit"] not in names:
        causes.append(Cause(f"{path}.onExit", f"template {spec['onExit']!r} not found"))
    volume_names = {v["name"] for v in spec.get("volumes") or []}
    volume_names |= {v["metadata"].get("name", "") for v in spec.get("volumeClaimTemplates") or []}
    for i, vct in enumerate(spec.get("volumeClaimTemplates") or []):
        if not vct["metadata"].get("name"):
            causes.append(
                Cause(
                    f"{path}.volumeClaimTemplates[{i}].metadata.name",
                    "Required value",
                    "FieldValueRequired",
                )
            )
    for i, t in enumerate(templates):
        causes += _check_template(t, f"{path}.templates[{i}]", templates, names, volume_names)
    if entry in names and not has_ref:
        supplied = {p["name"] for p in (spec.get("arguments") or {}).get("parameters") or []}
        for p in (templates[names[entry]].get("inputs") or {}).get("parameters") or []:
            if p["name"] not in supplied and p.get("value") is None and p.get("default") is None:
                causes.append(
                    Cause(
                        f"{path}.arguments.parameters",
                        f"missing parameter {p['name']!r} required by the entrypoint "
                        f"template {entry!r}",
                        "FieldValueRequired",
                    )
                )
    for j, p in enumerate((spec.get("arguments") or {}).get("parameters") or []):
        if p.get("value") is None and p.get("valueFrom") is None and p.get("default") is None:
            causes.append(
                Cause(
                    f"{path}.arguments.parameters[{j}].value",
                    f"parameter {p['name']!r} has no value",
                    "FieldValueRequired",
                )
            )
        elif p.get("enum") and p.get("value") is not None and p["value"] not in p["enum"]:
            causes.append(
                Cause(
                    f"{path}.arguments.parameters[{j}].value",
                    f"{p['value']!r} is not one of {p['enum']}",
                )
            )
    causes += _check_expression_tags(spec, path)
    return causes


def _check_expression_tags(value: Any, path: str) -> list[Cause]:
    if isinstance(value, str):
        if _EXPR_TAG.search(value):
            return [
                Cause(
                    path,
                    "expression tags {{=...}} are not supported; use plain {{...}} variables",
                    "FieldValueNotSupported",
                )
            ]
        return []
    if isinstance(value, list):
        return [c for i, v in enumerate(value) for c in _check_expression_tags(v, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [c for k, v in value.items() for c in _check_expression_tags(v, f"{path}.{k}")]
    return []


def _check_template(
    t: dict[str, Any],
    path: str,
    templates: list[dict[str, Any]],
    names: dict[str, int],
    volume_names: set[str],
) -> list[Cause]:
    causes: list[Cause] = []
    kinds = [
        k
        for k in ("container", "script", "dag", "steps", "suspend", "plugin")
        if t.get(k) is not None
    ]
    if len(kinds) != 1:
        causes.append(
            Cause(
                path,
                "a template needs exactly one of container, script, dag, "
                f"steps, suspend (found {', '.join(kinds) or 'none'})",
            )
        )
    for key in ("activeDeadlineSeconds", "timeout"):
        if t.get(key) not in (None, "") and "{{" not in str(t[key]):
            try:
                duration_seconds(t[key])
            except ValueError as exc:
                causes.append(Cause(f"{path}.{key}", str(exc)))
    body = t.get("container") or t.get("script")
    if body is not None:
        if t.get("container") is not None and not (body.get("command") or body.get("args")):
            causes.append(
                Cause(
                    f"{path}.container.command",
                    "command or args is required (images are not pulled, so the "
                    "image's entrypoint is unknown)",
                    "FieldValueRequired",
                )
            )
        local = volume_names | {v["name"] for v in t.get("volumes") or []}
        where = "container" if t.get("container") is not None else "script"
        for j, m in enumerate(body.get("volumeMounts") or []):
            if m["name"] not in local:
                causes.append(
                    Cause(
                        f"{path}.{where}.volumeMounts[{j}].name", f"volume {m['name']!r} not found"
                    )
                )
    if t.get("dag") is not None:
        causes += _check_dag(t["dag"], f"{path}.dag", templates, names)
    if t.get("steps") is not None:
        for g, group in enumerate(t["steps"]):
            for s, step in enumerate(group):
                causes += _check_task(step, f"{path}.steps[{g}][{s}]", templates, names)
    rs = t.get("retryStrategy") or {}
    if rs.get("limit") is not None and "{{" not in str(rs["limit"]):
        try:
            if int(rs["limit"]) < 0:
                raise ValueError
        except ValueError:
            causes.append(Cause(f"{path}.retryStrategy.limit", "must be a non-negative integer"))
    if rs.get("expression"):
        causes.append(
            Cause(f"{path}.retryStrategy.expression", "not supported", "FieldValueNotSupported")
        )
    return causes


def _check_dag(
    dag: dict[str, Any], path: str, templates: list[dict[str, Any]], names: dict[str, int]
) -> list[Cause]:
    causes: list[Cause] = []
    tasks = dag["tasks"]
    task_names: dict[str, int] = {}
    for i, task in enumerate(tasks):
        if task["name"] in task_names:
            causes.append(Cause(f"{path}.tasks[{i}].name", f"duplicate task {task['name']!r}"))
        task_names[task["name"]] = i
    for i, task in enumerate(tasks):
        tpath = f"{path}.tasks[{i}]"
        causes += _check_task(task, tpath, templates, names)
        if task.get("dependencies") and task.get("depends"):
            causes.append(
                Cause(
                    f"{tpath}.depends",
                    "cannot use both 'depends' and 'dependencies' in the same task",
                )
            )
        if task.get("depends"):
            try:
                deps = [n for n, _ in parse_depends_operands(task["depends"])]
            except ExpressionError as exc:
                causes.append(Cause(f"{tpath}.depends", str(exc)))
                deps = []
            for dep in deps:
                if dep not in task_names:
                    causes.append(Cause(f"{tpath}.depends", f"task {dep!r} not found"))
        for j, dep in enumerate(task.get("dependencies") or []):
            if dep not in task_names:
                causes.append(Cause(f"{tpath}.dependencies[{j}]", f"task {dep!r} not found"))
    if dag.get("target"):
        for target in dag["target"].split():
            if target not in task_names:
                causes.append(Cause(f"{path}.target", f"task {target!r} not found"))
    if not causes:
        try:
            topological(tasks)
        except ValueError as exc:
            causes.append(Cause(f"{path}.tasks", str(exc)))
    return causes


def _check_task(
    task: dict[str, Any], path: str, templates: list[dict[str, Any]], names: dict[str, int]
) -> list[Cause]:
    causes: list[Cause] = []
    if not task.get("template") and not task.get("templateRef"):
        causes.append(
            Cause(f"{path}.template", "template or templateRef is required", "FieldValueRequired")
        )
    elif task.get("template") and task["template"] not in names:
        causes.append(Cause(f"{path}.template", f"template {task['template']!r} not found"))
    elif task.get("template"):
        target = templates[names[task["template"]]]
        supplied = {p["name"] for p in (task.get("arguments") or {}).get("parameters") or []}
        for p in (target.get("inputs") or {}).get("parameters") or []:
            if p["name"] not in supplied and p.get("value") is None and p.get("default") is None:
                causes.append(
                    Cause(
                        f"{path}.arguments.parameters",
                        f"missing parameter {p['name']!r} required by template "
                        f"{task['template']!r}",
                        "FieldValueRequired",
                    )
                )
        supplied_arts = {a["name"] for a in (task.get("arguments") or {}).get("artifacts") or []}
        for a in (target.get("inputs") or {}).get("artifacts") or []:
            if (
                a["name"] not in supplied_arts
                and not a.get("optional")
                and not a.get("raw")
                and not a.get("from")
            ):
                causes.append(
                    Cause(
                        f"{path}.arguments.artifacts",
                        f"missing artifact {a['name']!r} required by template {task['template']!r}",
                        "FieldValueRequired",
                    )
                )
    if task.get("onExit") and task["onExit"] not in names:
        causes.append(Cause(f"{path}.onExit", f"template {task['onExit']!r} not found"))
    loops = [k for k in ("withItems", "withParam", "withSequence") if task.get(k) is not None]
    if len(loops) > 1:
        causes.append(Cause(f"{path}.{loops[1]}", f"only one of {', '.join(loops)} may be set"))
    if task.get("when"):
        try:
            check_when_syntax(task["when"])
        except ExpressionError as exc:
            causes.append(Cause(f"{path}.when", str(exc)))
    return causes


def validate_cron_object(obj: dict[str, Any]) -> list[Cause]:
    from services.pipeline.cron import check_schedule

    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    schedules = ([spec["schedule"]] if spec.get("schedule") else []) + list(
        spec.get("schedules") or []
    )
    if not schedules:
        causes.append(Cause("spec.schedule", "Required value", "FieldValueRequired"))
    for s in schedules:
        problem = check_schedule(s, spec.get("timezone"))
        if problem:
            causes.append(Cause("spec.schedule", problem))
    causes += validate_spec(spec.get("workflowSpec") or {}, "spec.workflowSpec")
    return causes
