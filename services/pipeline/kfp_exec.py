"""Running one KFP IR task: the ``executor_input``, the ``{{$...}}`` placeholders, and reading
``executor_output.json`` back, the way KFP's launcher does (``kfp.local`` does the same).

Inside the sandbox the step's own directory is ``/tmp/.shipyard``: input artifacts are copied
to ``inputs/<name>``, outputs are written to ``outputs/<name>`` and parameters to
``params/<name>``; artifact URIs are these local paths, which the KFP executor uses as is.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from services.pipeline.engine import PodResult
from services.pipeline.kfp_ir import decode, encode
from services.pipeline.nodes import param_dict

_PLACEHOLDER = re.compile(r"\{\{\$(?:\.([^}]*))?\}\}")
_PIP_PREAMBLE = re.compile(r"pip install .*'kfp==([0-9][^']*)'")


def _kfp_version() -> str | None:
    try:
        return importlib_metadata.version("kfp")
    except importlib_metadata.PackageNotFoundError:
        return None


def skip_pip_preamble(argv: list[str]) -> list[str]:
    """Drop the lightweight component's ``pip install kfp==X`` wrapper when X is installed.

    The wrapper is ``sh -c '<install> && "$0" "$@"' <real argv...>``; with kfp already present
    at that version the install is a no-op that costs a second of pip start-up per step, so run
    ``"$0" "$@"`` directly. Any other version keeps the wrapper (pip then runs with
    PIP_NO_INDEX, so it never reaches the network).
    """
    if len(argv) > 3 and argv[0] == "sh" and argv[1] == "-c" and '"$0" "$@"' in argv[2]:
        m = _PIP_PREAMBLE.search(argv[2])
        if m and m.group(1) == _kfp_version():
            return argv[3:]
    return argv


def executor_input(
    node: dict[str, Any], kfp: dict[str, Any], mount: str, artifacts: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    comp = kfp["component"]
    in_defs = comp.get("inputDefinitions") or {}
    out_defs = comp.get("outputDefinitions") or {}
    values = param_dict((node.get("inputs") or {}).get("parameters"))
    collected = kfp.get("collected") or {}
    params: dict[str, Any] = {}
    for name, definition in (in_defs.get("parameters") or {}).items():
        if name not in values:
            continue
        if (
            values[name] == ""
            and definition.get("isOptional")
            and "defaultValue" not in definition
            and definition.get("parameterType") != "STRING"
        ):
            continue
        params[name] = decode(values[name], definition.get("parameterType"))
        if name in collected and isinstance(params[name], list):
            # A loop's outputs, aggregated by the engine as strings: type each element.
            params[name] = [
                decode(v, collected[name]) if isinstance(v, str) else v for v in params[name]
            ]
    in_arts = {}
    for name, definition in (in_defs.get("artifacts") or {}).items():
        art = artifacts.get(name)
        if art is None:
            continue
        in_arts[name] = {
            "artifacts": [
                {
                    "name": art.get("kfp", {}).get("name", name),
                    "type": definition.get("artifactType") or {},
                    "uri": f"{mount}/inputs/{name}",
                    "metadata": art.get("kfp", {}).get("metadata") or {},
                }
            ]
        }
    return {
        "inputs": {"parameterValues": params, "artifacts": in_arts},
        "outputs": {
            "parameters": {
                name: {"outputFile": f"{mount}/params/{name}"}
                for name in out_defs.get("parameters") or {}
            },
            "artifacts": {
                name: {
                    "artifacts": [
                        {
                            "name": name,
                            "type": d.get("artifactType") or {},
                            "uri": f"{mount}/outputs/{name}",
                            "metadata": {},
                        }
                    ]
                }
                for name, d in (out_defs.get("artifacts") or {}).items()
            },
            "outputFile": f"{mount}/executor_output.json",
        },
    }


def substitute_placeholders(
    text: str, ex: dict[str, Any], wf_name: str, task: str, node_id: str
) -> str:
    def repl(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr is None:
            return json.dumps(ex)
        found = re.fullmatch(
            r"(inputs|outputs)\.(parameters|artifacts)\['([^']+)'\]"
            r"(?:\.(\w+))?",
            expr,
        )
        if found:
            side, kind, name, attr = found.groups()
            if kind == "parameters" and side == "inputs":
                value = ex["inputs"]["parameterValues"].get(name)
                return "" if value is None else encode(value)
            if kind == "parameters":
                return ex["outputs"]["parameters"].get(name, {}).get("outputFile", "")
            arts = ex[side]["artifacts"].get(name, {}).get("artifacts") or [{}]
            art = arts[0]
            if attr in ("path", "uri", None):
                return str(art.get("uri", ""))
            return str(art.get(attr, ""))
        simple = {
            "pipeline_job_name": wf_name,
            "pipeline_task_name": task,
            "pipeline_job_uuid": wf_name,
            "pipeline_task_uuid": node_id,
            "pipeline_root": "",
        }
        return simple.get(expr, m.group(0))

    return _PLACEHOLDER.sub(repl, text)


async def prepare(
    runner: Any,
    wf: dict[str, Any],
    node: dict[str, Any],
    tmpl: dict[str, Any],
    host_dir: Path,
    mount: str,
) -> tuple[list[str], list[dict[str, str]], str | None]:
    """Stage inputs in the step directory; return (argv, env, image) for the workload."""
    kfp = tmpl["plugin"]["kfp"]
    artifacts = {a["name"]: a for a in (node.get("inputs") or {}).get("artifacts") or []}
    for sub in ("inputs", "outputs", "params"):
        (host_dir / sub).mkdir(parents=True, exist_ok=True)
    for name, art in artifacts.items():
        key = (art.get("shipyard") or {}).get("key")
        if key:
            await asyncio.to_thread(runner.artifacts.get, key, host_dir / "inputs" / name)
    ex = executor_input(node, kfp, mount, artifacts)
    (host_dir / "kfp.json").write_text(json.dumps(ex))
    container = kfp["container"]
    argv = [
        substitute_placeholders(str(a), ex, wf["metadata"]["name"], kfp["taskName"], node["id"])
        for a in [*(container.get("command") or []), *(container.get("args") or [])]
    ]
    env = [
        {"name": e["name"], "value": str(e.get("value", ""))}
        for e in container.get("env") or []
        if "name" in e
    ]
    env += [
        {"name": "PIP_NO_INDEX", "value": "1"},
        {"name": "PIP_DISABLE_PIP_VERSION_CHECK", "value": "1"},
    ]
    return skip_pip_preamble(argv), env, container.get("image")


async def collect(
    runner: Any, wf: dict[str, Any], node: dict[str, Any], host_dir: Path, result: PodResult
) -> None:
    """Fold executor_output.json (and plain output files) into the step's result."""
    ex = json.loads((host_dir / "kfp.json").read_text())
    out_file = host_dir / "executor_output.json"
    output: dict[str, Any] = {}
    if out_file.exists():
        try:
            output = json.loads(out_file.read_text())
        except ValueError:
            output = {}
    values = dict(output.get("parameterValues") or {})
    for name in ex["outputs"]["parameters"]:
        if name not in values and (host_dir / "params" / name).exists():
            values[name] = (host_dir / "params" / name).read_text()
    result.parameters = {k: encode(v) for k, v in values.items()}
    ns, uid = wf["metadata"]["namespace"], wf["metadata"]["uid"]
    produced = output.get("artifacts") or {}
    for name, spec in ex["outputs"]["artifacts"].items():
        source = host_dir / "outputs" / name
        if not source.exists():
            continue
        key = f"{ns}/{uid}/{node['id']}/{name}"
        await asyncio.to_thread(runner.artifacts.put, key, source)
        meta = ((produced.get(name) or {}).get("artifacts") or [{}])[0].get("metadata") or {}
        result.artifacts.append(
            {
                "name": name,
                "shipyard": {"key": key},
                "kfp": {"name": name, "type": spec["artifacts"][0]["type"], "metadata": meta},
            }
        )
    missing = [n for n in ex["outputs"]["parameters"] if n not in values]
    if result.phase == "Succeeded" and missing:
        result.phase = "Error"
        result.message = f"the step did not produce output parameter(s) {', '.join(missing)}"


def cleanup_outputs(host_dir: Path) -> None:
    shutil.rmtree(host_dir / "outputs", ignore_errors=True)
