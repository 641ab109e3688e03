"""Variables and artifacts in scope: the workflow's, a template's inputs, a group's outputs.

One seam of an :class:`~services.pipeline.engine.Engine` pass (its module says how they fit).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from services.pipeline.engine_types import Scope, TemplateError
from services.pipeline.nodes import param_dict
from services.pipeline.variables import substitute, unresolved

if TYPE_CHECKING:
    from services.pipeline.engine import Engine

log = logging.getLogger(__name__)


def workflow_parameters(
    eng: Engine,
) -> dict[str, str]:
    return param_dict((eng.spec.get("arguments") or {}).get("parameters"))


def workflow_scope(
    eng: Engine,
) -> Scope:
    meta = eng.wf["metadata"]
    values = {
        "workflow.name": eng.name,
        "workflow.namespace": eng.namespace,
        "workflow.uid": meta.get("uid", ""),
        "workflow.creationTimestamp": meta.get("creationTimestamp", ""),
        "workflow.serviceAccountName": eng.spec.get("serviceAccountName") or "default",
        "workflow.status": eng.status.get("phase", "Running"),
        "workflow.duration": str(int(eng._elapsed(eng.status.get("startedAt")))),
    }
    for key, value in workflow_parameters(eng).items():
        values[f"workflow.parameters.{key}"] = value
    for key, value in (meta.get("labels") or {}).items():
        values[f"workflow.labels.{key}"] = value
    for key, value in (meta.get("annotations") or {}).items():
        values[f"workflow.annotations.{key}"] = value
    return Scope(values, {})


def resolve_inputs(
    eng: Engine,
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
            got = located_artifact(a, scope.values)
        if got is None and a.get("from"):
            got = scope.artifacts.get(var(a["from"]))
        if got is None:
            if a.get("optional"):
                continue
            raise TemplateError(
                f"inputs.artifacts.{a['name']} was not supplied to template {tmpl['name']!r}"
            )
        art = {k: v for k, v in got.items() if k not in ("name", "path", "from")}
        arts.append({"name": a["name"], "path": a.get("path"), **art})
    return values, arts


def template_scope(
    eng: Engine, scope: Scope, node: dict[str, Any], tmpl: dict[str, Any], retry_attempt: int | None
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


def group_outputs(eng: Engine, tmpl: dict[str, Any], scope: Scope) -> dict[str, Any]:
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
        got = scope.artifacts.get(var(a.get("from") or ""))
        if got:
            arts.append({**got, "name": a["name"]})
    if arts:
        outputs["artifacts"] = arts
    return outputs


def var(expr: str) -> str:
    m = re.fullmatch(r"\s*\{\{\s*([^{}]+?)\s*\}\}\s*", expr)
    return m.group(1) if m else expr


def located_artifact(art: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
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
