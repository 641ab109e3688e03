"""KFP IR (the PipelineSpec YAML ``kfp.compiler`` writes) → a Workflow the engine runs.

Each IR task becomes a DAG task whose template is a ``plugin.kfp`` leaf: the engine schedules
it like any pod (dependencies, retries, caching), and :mod:`services.pipeline.kfp_exec` builds
the ``executor_input`` and reads ``executor_output.json``. Parameters travel through the engine
as strings (JSON for non-strings) and are typed again from the component's definitions.

DAG components (what ``dsl.If``/``Elif``/``Else``, ``dsl.ParallelFor`` and pipelines used as
components compile to) become Argo ``dag`` templates with the component's inputs and outputs:

- ``triggerPolicy.condition`` (a CEL expression over the task's own inputs) becomes the task's
  ``when``, each ``inputs.parameter_values['x']`` replaced by the argument the task passes as
  ``x`` (quoted), so the engine's safe ``when`` grammar decides, never ``eval``;
- ``parameterIterator`` (over a literal list or a parameter) becomes a wrapper ``dag`` template
  holding one ``withItems``/``withParam`` task whose iterations run the loop body, with
  ``iteratorPolicy.parallelismLimit`` as the wrapper's ``parallelism``; a body output is
  collected over the iterations into a list (``dsl.Collected``).

Features the engine cannot run yet (artifact iterators, pipeline input artifacts,
parameter expression selectors) are rejected with the IR field that uses them.
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


_CEL_OPERAND = re.compile(
    r"(?:int|double|string|bool)\(\s*inputs\.parameter_values\[\s*'([^']+)'\s*\]\s*\)"
    r"|inputs\.parameter_values\[\s*'([^']+)'\s*\]"
)
_MAX_DEPTH = 20  # nested DAG components; the compiler never nests this deep in practice


def _name(task: str) -> str:
    return "task-" + re.sub(r"[^a-z0-9-]", "-", task.lower())


def condition_to_when(condition: str, values: dict[str, str]) -> str:
    """A KFP ``triggerPolicy.condition`` (CEL) as an Argo ``when`` over the task's arguments.

    KFP conditions compare the task's inputs with literals: ``inputs.parameter_values['x']``,
    optionally cast (``int(...)``, ``double(...)``), ``== != < <= > >=``, ``&& || !`` and
    parentheses, which is the ``when`` grammar; each operand becomes its argument in single
    quotes (the grammar compares numerically when both sides are numbers). A value holding a
    single quote makes the condition fail to parse: the node errors, it is never misread.
    Raises ValueError for anything else (it would otherwise be read as a bare word).
    """
    from services.pipeline.expressions import tokenize

    def operand(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise ValueError(f"input {name!r} is not passed to this task")
        return f"'{values[name]}'"

    text = _CEL_OPERAND.sub(operand, condition)
    for kind, token in tokenize(_CEL_OPERAND.sub("''", condition)):
        if kind == "word" and token not in ("true", "false"):
            raise ValueError(f"unsupported CEL term {token!r}")
    return text


class _IrCompiler:
    """Walks the IR's DAGs depth first, emitting one template per task or DAG component."""

    def __init__(self, ir: dict[str, Any], causes: list[Cause]) -> None:
        self.components = ir.get("components") or {}
        self.executors = (ir.get("deploymentSpec") or {}).get("executors") or {}
        self.causes = causes
        self.templates: list[dict[str, Any]] = []
        self.names: set[str] = {"root"}
        self.dag_templates: dict[str, str] = {}  # component name -> template name

    def unique(self, base: str) -> str:
        name, i = base[:60].rstrip("-"), 2
        while name in self.names:
            name, i = f"{base[:56].rstrip('-')}-{i}", i + 1
        self.names.add(name)
        return name

    # ------------------------------------------------------------------- DAGs
    def dag_tasks(
        self, dag: dict[str, Any], path: str, scope: str, depth: int
    ) -> list[dict[str, Any]]:
        """The Argo tasks of one IR DAG; ``scope`` is how its inputs are referenced
        (``workflow.parameters`` at the root, ``inputs.parameters`` inside a component)."""
        tasks: list[dict[str, Any]] = []
        element_types = self.collected_types(dag)
        for tname, task in (dag.get("tasks") or {}).items():
            tpath = f"{path}.tasks.{tname}"
            got = self.task(tname, task, tpath, scope, depth, element_types)
            if got is not None:
                tasks.append(got)
        return tasks

    def collected_types(self, dag: dict[str, Any]) -> dict[tuple[str, str], str]:
        """(loop task, output key) -> the element type a loop's output collects."""
        out: dict[tuple[str, str], str] = {}
        for tname, task in (dag.get("tasks") or {}).items():
            if not task.get("parameterIterator"):
                continue
            comp = self.components.get((task.get("componentRef") or {}).get("name", "")) or {}
            outputs = ((comp.get("dag") or {}).get("outputs") or {}).get("parameters") or {}
            for key, spec in outputs.items():
                source = spec.get("valueFromParameter") or {}
                inner = self.output_type(
                    comp, source.get("producerSubtask", ""), source.get("outputParameterKey", "")
                )
                if inner:
                    out[(tname, key)] = inner
        return out

    def output_type(self, comp: dict[str, Any], subtask: str, key: str) -> str | None:
        task = ((comp.get("dag") or {}).get("tasks") or {}).get(subtask) or {}
        producer = self.components.get((task.get("componentRef") or {}).get("name", "")) or {}
        defs = (producer.get("outputDefinitions") or {}).get("parameters") or {}
        return (defs.get(key) or {}).get("parameterType")

    def task(
        self,
        tname: str,
        task: dict[str, Any],
        path: str,
        scope: str,
        depth: int,
        element_types: dict[tuple[str, str], str],
    ) -> dict[str, Any] | None:
        if task.get("artifactIterator"):
            self.causes.append(Cause(f"{path}.artifactIterator", "not supported yet"))
            return None
        strategy = (task.get("triggerPolicy") or {}).get("strategy")
        if strategy not in (None, "", "ALL_UPSTREAM_TASKS_SUCCEEDED"):
            self.causes.append(
                Cause(f"{path}.triggerPolicy.strategy", f"{strategy!r} is not supported yet")
            )
        comp_name = (task.get("componentRef") or {}).get("name", "")
        comp = self.components.get(comp_name)
        if comp is None:
            self.causes.append(
                Cause(f"{path}.componentRef.name", f"component {comp_name!r} not found")
            )
            return None
        collected: dict[str, str] = {}
        args, arts = _task_arguments(task, path, self.causes, scope, element_types, collected)
        template: str | None
        if comp.get("dag"):
            if depth >= _MAX_DEPTH:
                self.causes.append(
                    Cause(f"{path}.componentRef", "DAG components nested too deeply")
                )
                return None
            template = self.dag_template(
                comp_name, comp, f"pipeline_spec.components.{comp_name}.dag", depth + 1
            )
            if task.get("parameterIterator"):
                template = self.loop_template(tname, task, comp, template, path, args)
        else:
            if task.get("parameterIterator"):
                self.causes.append(
                    Cause(f"{path}.parameterIterator", "only DAG components iterate")
                )
                return None
            template = self.leaf_template(tname, task, comp, path, scope, collected)
        if template is None:
            return None
        dag_task: dict[str, Any] = {"name": tname, "template": template}
        deps = list(task.get("dependentTasks") or [])
        if deps:
            dag_task["dependencies"] = deps
        condition = (task.get("triggerPolicy") or {}).get("condition")
        if condition:
            try:
                dag_task["when"] = condition_to_when(
                    condition, {a["name"]: a["value"] for a in args}
                )
            except ValueError as exc:
                self.causes.append(Cause(f"{path}.triggerPolicy.condition", str(exc)))
        if args or arts:
            dag_task["arguments"] = {
                k: v for k, v in (("parameters", args), ("artifacts", arts)) if v
            }
        return dag_task

    def dag_template(self, comp_name: str, comp: dict[str, Any], path: str, depth: int) -> str:
        if comp_name in self.dag_templates:
            return self.dag_templates[comp_name]
        name = self.unique(
            "dag-" + re.sub(r"[^a-z0-9-]", "-", comp_name.lower().removeprefix("comp-"))
        )
        self.dag_templates[comp_name] = name
        dag = comp["dag"]
        in_defs = comp.get("inputDefinitions") or {}
        template: dict[str, Any] = {
            "name": name,
            "inputs": {
                "parameters": [{"name": p} for p in in_defs.get("parameters") or {}],
                "artifacts": [{"name": a} for a in in_defs.get("artifacts") or {}],
            },
            "dag": {"tasks": []},
        }
        self.templates.append(template)
        template["dag"]["tasks"] = self.dag_tasks(dag, path, "inputs.parameters", depth)
        outs = dag.get("outputs") or {}
        params = []
        for key, spec in (outs.get("parameters") or {}).items():
            source = spec.get("valueFromParameter")
            if not source:
                self.causes.append(
                    Cause(
                        f"{path}.outputs.parameters.{key}",
                        f"unsupported output kind {next(iter(spec), '?')!r}",
                    )
                )
                continue
            params.append(
                {
                    "name": key,
                    "valueFrom": {
                        "parameter": (
                            f"{{{{tasks.{source['producerSubtask']}.outputs.parameters."
                            f"{source['outputParameterKey']}}}}}"
                        )
                    },
                }
            )
        arts = []
        for key, spec in (outs.get("artifacts") or {}).items():
            selectors = spec.get("artifactSelectors") or []
            if len(selectors) != 1:
                self.causes.append(
                    Cause(
                        f"{path}.outputs.artifacts.{key}",
                        "exactly one artifact selector is supported",
                    )
                )
                continue
            sel = selectors[0]
            arts.append(
                {
                    "name": key,
                    "from": f"{{{{tasks.{sel['producerSubtask']}.outputs."
                    f"artifacts.{sel['outputArtifactKey']}}}}}",
                }
            )
        template["inputs"] = {k: v for k, v in template["inputs"].items() if v}
        outputs = {k: v for k, v in (("parameters", params), ("artifacts", arts)) if v}
        if outputs:
            template["outputs"] = outputs
        return name

    def loop_template(
        self,
        tname: str,
        task: dict[str, Any],
        comp: dict[str, Any],
        body: str,
        path: str,
        args: list[dict[str, Any]],
    ) -> str | None:
        """``dsl.ParallelFor``: a dag holding one looping task over the body component."""
        iterator = task["parameterIterator"]
        item_input = iterator.get("itemInput", "")
        items = iterator.get("items") or {}
        loop: dict[str, Any] = {"name": "iteration", "template": body}
        if "raw" in items:
            try:
                raw = json.loads(items["raw"]) if isinstance(items["raw"], str) else items["raw"]
            except ValueError:
                raw = None
            if not isinstance(raw, list):
                self.causes.append(
                    Cause(f"{path}.parameterIterator.items.raw", "must be a JSON list")
                )
                return None
            loop["withItems"] = raw
        elif "inputParameter" in items:
            if not any(a["name"] == items["inputParameter"] for a in args):
                self.causes.append(
                    Cause(
                        f"{path}.parameterIterator.items.inputParameter",
                        f"{items['inputParameter']!r} is not an input of the task",
                    )
                )
                return None
            loop["withParam"] = f"{{{{inputs.parameters.{items['inputParameter']}}}}}"
        else:
            self.causes.append(
                Cause(f"{path}.parameterIterator.items", "needs raw or inputParameter")
            )
            return None
        body_inputs = (comp.get("inputDefinitions") or {}).get("parameters") or {}
        loop_params = [
            {"name": p, "value": f"{{{{inputs.parameters.{p}}}}}"}
            for p in body_inputs
            if p != item_input and any(a["name"] == p for a in args)
        ]
        loop_params.append({"name": item_input, "value": "{{item}}"})
        loop["arguments"] = {"parameters": loop_params}
        comp_outs = ((comp.get("dag") or {}).get("outputs") or {}).get("parameters") or {}
        template: dict[str, Any] = {
            "name": self.unique(f"loop-{_name(tname).removeprefix('task-')}"),
            "dag": {"tasks": [loop]},
        }
        if args:
            template["inputs"] = {"parameters": [{"name": a["name"]} for a in args]}
        limit = int((task.get("iteratorPolicy") or {}).get("parallelismLimit") or 0)
        if limit > 0:
            template["parallelism"] = limit
        if comp_outs:
            template["outputs"] = {
                "parameters": [
                    {
                        "name": key,
                        "valueFrom": {
                            "parameter": f"{{{{tasks.iteration.outputs.parameters.{key}}}}}"
                        },
                    }
                    for key in comp_outs
                ]
            }
        self.templates.append(template)
        return template["name"]

    def leaf_template(
        self,
        tname: str,
        task: dict[str, Any],
        comp: dict[str, Any],
        path: str,
        scope: str,
        collected: dict[str, str],
    ) -> str | None:
        executor = self.executors.get(comp.get("executorLabel", ""), {})
        if "container" not in executor and "importer" not in executor:
            kind = next(iter(executor), "missing")
            self.causes.append(
                Cause(
                    f"pipeline_spec.deploymentSpec.executors.{comp.get('executorLabel')}",
                    f"executor kind {kind!r} is not supported (container and importer only)",
                )
            )
            return None
        in_defs = comp.get("inputDefinitions") or {}
        out_defs = comp.get("outputDefinitions") or {}
        base = (
            _name(tname)
            if scope == "workflow.parameters"
            else _name(
                f"{path.split('.components.')[-1].split('.')[0].removeprefix('comp-')}-{tname}"
            )
        )
        template: dict[str, Any] = {
            "name": self.unique(base),
            "inputs": {
                "parameters": [
                    {
                        "name": p,
                        **(
                            {"default": encode(d["defaultValue"])}
                            if "defaultValue" in d
                            else {"default": ""}
                            if d.get("isOptional")
                            else {}
                        ),
                    }
                    for p, d in (in_defs.get("parameters") or {}).items()
                ],
                "artifacts": [
                    {"name": a, **({"optional": True} if d.get("isOptional") else {})}
                    for a, d in (in_defs.get("artifacts") or {}).items()
                ],
            },
            "outputs": {
                "parameters": [{"name": p} for p in out_defs.get("parameters") or {}],
                "artifacts": [{"name": a} for a in out_defs.get("artifacts") or {}],
            },
            "plugin": {
                "kfp": {
                    "taskName": (task.get("taskInfo") or {}).get("name", tname),
                    "component": {"inputDefinitions": in_defs, "outputDefinitions": out_defs},
                    **(
                        {"importer": executor["importer"]}
                        if "importer" in executor
                        else {"container": executor["container"]}
                    ),
                    "enableCache": bool((task.get("cachingOptions") or {}).get("enableCache")),
                    **({"collected": collected} if collected else {}),
                }
            },
        }
        for section in ("inputs", "outputs"):
            template[section] = {k: v for k, v in template[section].items() if v}
        retry = task.get("retryPolicy")
        if retry and int(retry.get("maxRetryCount") or 0) > 0:
            template["retryStrategy"] = {
                "limit": str(int(retry["maxRetryCount"])),
                "retryPolicy": "Always",
                "backoff": {
                    "duration": str(retry.get("backoffDuration") or "0s"),
                    "factor": str(retry.get("backoffFactor") or 2),
                    "maxDuration": str(retry.get("backoffMaxDuration") or "3600s"),
                },
            }
        self.templates.append(template)
        return template["name"]


def compile_ir(ir: dict[str, Any], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Workflow spec for an IR pipeline; ApiError 400 names an unsupported IR field."""
    causes: list[Cause] = []
    root = ir.get("root") or {}
    dag = root.get("dag")
    if not isinstance(dag, dict):
        raise ApiError(400, "pipeline_spec.root.dag is required")
    inputs = (root.get("inputDefinitions") or {}).get("parameters") or {}
    if (root.get("inputDefinitions") or {}).get("artifacts"):
        causes.append(
            Cause(
                "pipeline_spec.root.inputDefinitions.artifacts",
                "pipeline input artifacts are not supported",
            )
        )
    params: list[dict[str, Any]] = []
    given = dict(parameters or {})
    for pname, pdef in inputs.items():
        if pname in given:
            params.append({"name": pname, "value": encode(given.pop(pname))})
        elif "defaultValue" in pdef:
            params.append({"name": pname, "value": encode(pdef["defaultValue"])})
        elif not pdef.get("isOptional"):
            causes.append(
                Cause(
                    f"runtime_config.parameters.{pname}",
                    "missing value for a required pipeline parameter",
                )
            )
    for extra in given:
        causes.append(
            Cause(f"runtime_config.parameters.{extra}", "not a parameter of this pipeline")
        )
    compiler = _IrCompiler(ir, causes)
    tasks = compiler.dag_tasks(dag, "pipeline_spec.root.dag", "workflow.parameters", 0)
    if causes:
        raise ApiError(
            400,
            "the pipeline uses features shipyard cannot run: "
            + "; ".join(f"{c.field}: {c.message}" for c in causes),
            causes=causes,
        )
    entry = {"name": "root", "dag": {"tasks": tasks}}
    if params:
        entry["inputs"] = {"parameters": [{"name": p["name"]} for p in params]}
    return {
        "entrypoint": "root",
        "templates": [entry, *compiler.templates],
        **({"arguments": {"parameters": params}} if params else {}),
    }


def _task_arguments(
    task: dict[str, Any],
    path: str,
    causes: list[Cause],
    scope: str,
    element_types: dict[tuple[str, str], str],
    collected: dict[str, str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A task's Argo arguments. ``collected`` receives the inputs fed by a loop's collected
    output, with the element type (the engine aggregates them as a JSON list of strings)."""
    params: list[dict[str, Any]] = []
    arts: list[dict[str, Any]] = []
    inputs = task.get("inputs") or {}
    for pname, spec in (inputs.get("parameters") or {}).items():
        if spec.get("parameterExpressionSelector"):
            causes.append(
                Cause(
                    f"{path}.inputs.parameters.{pname}.parameterExpressionSelector",
                    "not supported yet",
                )
            )
            continue
        if "componentInputParameter" in spec:
            value = f"{{{{{scope}.{spec['componentInputParameter']}}}}}"
        elif "taskOutputParameter" in spec:
            ref = spec["taskOutputParameter"]
            value = (
                f"{{{{tasks.{ref['producerTask']}.outputs.parameters."
                f"{ref['outputParameterKey']}}}}}"
            )
            element = element_types.get((ref["producerTask"], ref["outputParameterKey"]))
            if element:
                collected[pname] = element
        elif "runtimeValue" in spec:
            value = encode((spec["runtimeValue"] or {}).get("constant"))
        else:
            causes.append(
                Cause(
                    f"{path}.inputs.parameters.{pname}",
                    f"unsupported input kind {next(iter(spec), '?')!r}",
                )
            )
            continue
        params.append({"name": pname, "value": value})
    for aname, spec in (inputs.get("artifacts") or {}).items():
        if "taskOutputArtifact" in spec:
            ref = spec["taskOutputArtifact"]
            arts.append(
                {
                    "name": aname,
                    "from": f"{{{{tasks.{ref['producerTask']}.outputs."
                    f"artifacts.{ref['outputArtifactKey']}}}}}",
                }
            )
        elif "componentInputArtifact" in spec and scope == "inputs.parameters":
            arts.append(
                {
                    "name": aname,
                    "from": f"{{{{inputs.artifacts.{spec['componentInputArtifact']}}}}}",
                }
            )
        else:
            causes.append(
                Cause(
                    f"{path}.inputs.artifacts.{aname}",
                    f"unsupported artifact input {next(iter(spec), '?')!r}",
                )
            )
    return params, arts
