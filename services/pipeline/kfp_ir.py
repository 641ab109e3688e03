"""KFP IR (the PipelineSpec YAML ``kfp.compiler`` writes) → a Workflow the engine runs.

Each IR task becomes a DAG task whose template is a ``plugin.kfp`` leaf: the engine schedules
it like any pod (dependencies, retries, caching), and :mod:`services.pipeline.kfp_exec` builds
the ``executor_input`` and reads ``executor_output.json``. Parameters travel through the engine
as strings (JSON for non-strings) and are typed again from the component's definitions.
Features the engine cannot run yet (conditions, loops, nested DAG components, importers) are
rejected with the IR field that uses them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from services.common.errors import ApiError, Cause

IR_KEYS = ("components", "deploymentSpec", "root", "pipelineInfo")


def is_ir(spec: dict[str, Any]) -> bool:
    return isinstance(spec, dict) and "root" in spec and "pipelineInfo" in spec


def split_package(spec: dict[str, Any]) -> dict[str, Any]:
    """A run's ``pipeline_spec`` may wrap the IR as ``{pipeline_spec, platform_spec}``."""
    if isinstance(spec, dict) and isinstance(spec.get("pipeline_spec"), dict):
        return spec["pipeline_spec"]
    return spec


def encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def decode(value: str, parameter_type: str | None) -> Any:
    """An engine string back to the component's declared type."""
    if parameter_type == "STRING" or parameter_type is None:
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    if parameter_type == "NUMBER_INTEGER" and isinstance(parsed, int | float):
        return int(parsed)
    if parameter_type == "NUMBER_DOUBLE" and isinstance(parsed, int | float):
        return float(parsed)
    return parsed


def _name(task: str) -> str:
    return "task-" + re.sub(r"[^a-z0-9-]", "-", task.lower())


def compile_ir(ir: dict[str, Any], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Workflow spec for an IR pipeline; ApiError 400 names an unsupported IR field."""
    causes: list[Cause] = []
    components = ir.get("components") or {}
    executors = (ir.get("deploymentSpec") or {}).get("executors") or {}
    root = ir.get("root") or {}
    dag = root.get("dag")
    if not isinstance(dag, dict):
        raise ApiError(400, "pipeline_spec.root.dag is required")
    inputs = (root.get("inputDefinitions") or {}).get("parameters") or {}
    if (root.get("inputDefinitions") or {}).get("artifacts"):
        causes.append(Cause("pipeline_spec.root.inputDefinitions.artifacts",
                            "pipeline input artifacts are not supported"))
    params: list[dict[str, Any]] = []
    given = dict(parameters or {})
    for pname, pdef in inputs.items():
        if pname in given:
            params.append({"name": pname, "value": encode(given.pop(pname))})
        elif "defaultValue" in pdef:
            params.append({"name": pname, "value": encode(pdef["defaultValue"])})
        elif not pdef.get("isOptional"):
            causes.append(Cause(f"runtime_config.parameters.{pname}",
                                "missing value for a required pipeline parameter"))
    for extra in given:
        causes.append(Cause(f"runtime_config.parameters.{extra}",
                            "not a parameter of this pipeline"))
    tasks: list[dict[str, Any]] = []
    templates: list[dict[str, Any]] = []
    for tname, task in (dag.get("tasks") or {}).items():
        path = f"pipeline_spec.root.dag.tasks.{tname}"
        for unsupported in ("triggerPolicy", "iteratorPolicy", "parameterIterator",
                            "artifactIterator"):
            if task.get(unsupported):
                causes.append(Cause(f"{path}.{unsupported}", "not supported yet"))
        comp_name = (task.get("componentRef") or {}).get("name", "")
        comp = components.get(comp_name)
        if comp is None:
            causes.append(Cause(f"{path}.componentRef.name", f"component {comp_name!r} not found"))
            continue
        if comp.get("dag"):
            causes.append(Cause(f"{path}.componentRef", "nested pipelines (DAG components) are "
                                                        "not supported yet"))
            continue
        executor = executors.get(comp.get("executorLabel", ""), {})
        if "container" not in executor:
            kind = next(iter(executor), "missing")
            causes.append(Cause(f"pipeline_spec.deploymentSpec.executors."
                                f"{comp.get('executorLabel')}",
                                f"executor kind {kind!r} is not supported (container only)"))
            continue
        args, arts = _task_arguments(task, path, causes)
        in_defs = comp.get("inputDefinitions") or {}
        out_defs = comp.get("outputDefinitions") or {}
        template: dict[str, Any] = {
            "name": _name(tname),
            "inputs": {
                "parameters": [
                    {"name": p, **({"default": encode(d["defaultValue"])}
                                   if "defaultValue" in d else
                                   {"default": ""} if d.get("isOptional") else {})}
                    for p, d in (in_defs.get("parameters") or {}).items()],
                "artifacts": [{"name": a, **({"optional": True} if d.get("isOptional") else {})}
                              for a, d in (in_defs.get("artifacts") or {}).items()],
            },
            "outputs": {
                "parameters": [{"name": p} for p in out_defs.get("parameters") or {}],
                "artifacts": [{"name": a} for a in out_defs.get("artifacts") or {}],
            },
            "plugin": {"kfp": {
                "taskName": (task.get("taskInfo") or {}).get("name", tname),
                "component": {"inputDefinitions": in_defs, "outputDefinitions": out_defs},
                "container": executor["container"],
                "enableCache": bool((task.get("cachingOptions") or {}).get("enableCache")),
            }},
        }
        for section in ("inputs", "outputs"):
            template[section] = {k: v for k, v in template[section].items() if v}
        retry = task.get("retryPolicy")
        if retry and int(retry.get("maxRetryCount") or 0) > 0:
            template["retryStrategy"] = {
                "limit": str(int(retry["maxRetryCount"])), "retryPolicy": "Always",
                "backoff": {"duration": str(retry.get("backoffDuration") or "0s"),
                            "factor": str(retry.get("backoffFactor") or 2),
                            "maxDuration": str(retry.get("backoffMaxDuration") or "3600s")}}
        templates.append(template)
        dag_task: dict[str, Any] = {"name": tname, "template": template["name"]}
        deps = list(task.get("dependentTasks") or [])
        if deps:
            dag_task["dependencies"] = deps
        if args or arts:
            dag_task["arguments"] = {k: v for k, v in
                                     (("parameters", args), ("artifacts", arts)) if v}
        tasks.append(dag_task)
    if causes:
        raise ApiError(400, "the pipeline uses features shipyard cannot run: " + "; ".join(
            f"{c.field}: {c.message}" for c in causes), causes=causes)
    entry = {"name": "root", "dag": {"tasks": tasks}}
    if params:
        entry["inputs"] = {"parameters": [{"name": p["name"]} for p in params]}
    return {"entrypoint": "root", "templates": [entry, *templates],
            **({"arguments": {"parameters": params}} if params else {})}


def _task_arguments(task: dict[str, Any], path: str,
                    causes: list[Cause]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    params: list[dict[str, Any]] = []
    arts: list[dict[str, Any]] = []
    inputs = task.get("inputs") or {}
    for pname, spec in (inputs.get("parameters") or {}).items():
        if "componentInputParameter" in spec:
            value = f"{{{{workflow.parameters.{spec['componentInputParameter']}}}}}"
        elif "taskOutputParameter" in spec:
            ref = spec["taskOutputParameter"]
            value = (f"{{{{tasks.{ref['producerTask']}.outputs.parameters."
                     f"{ref['outputParameterKey']}}}}}")
        elif "runtimeValue" in spec:
            value = encode((spec["runtimeValue"] or {}).get("constant"))
        else:
            causes.append(Cause(f"{path}.inputs.parameters.{pname}",
                                f"unsupported input kind {next(iter(spec), '?')!r}"))
            continue
        params.append({"name": pname, "value": value})
    for aname, spec in (inputs.get("artifacts") or {}).items():
        if "taskOutputArtifact" in spec:
            ref = spec["taskOutputArtifact"]
            arts.append({"name": aname, "from": f"{{{{tasks.{ref['producerTask']}.outputs."
                                                f"artifacts.{ref['outputArtifactKey']}}}}}"})
        else:
            causes.append(Cause(f"{path}.inputs.artifacts.{aname}",
                                f"unsupported artifact input {next(iter(spec), '?')!r}"))
    return params, arts
