"""Running one KFP IR task: the ``executor_input``, the ``{{$...}}`` placeholders, and reading
``executor_output.json`` back, the way KFP's launcher does (``kfp.local`` does the same).

Artifacts live in the object store under the run's ``pipeline_root`` (default
``s3://<bucket>/v2/artifacts``, plus the namespace): an artifact's ``uri`` is
``s3://<bucket>/<root>/<run>/<task>/<execution>/<name>`` and its local path, as KFP's SDK maps
it, ``/s3/<bucket>/<key>``. As KFP's launcher does, the step's wrapper (``stepwrap.py``)
downloads input artifacts to those paths before the command and uploads outputs from them
after it, with URLs the service presigned for exactly those keys. Output parameters and
``executor_output.json`` are written in the step's work directory (``/tmp/.shipyard``, its own
emptyDir) and come back in the wrapper's report; the executor input the service made is kept in
the store beside it (``ArtifactRepository.state_key``), so a restarted service collects it too.
"""

from __future__ import annotations

import json
import re
from importlib import metadata as importlib_metadata
from typing import Any

from services.common.objectstore import (
    TENANT_ROOTS,
    in_namespace_area,
    namespace_prefixes,
    parse_s3_uri,
)
from services.pipeline.artifact_records import record_artifact
from services.pipeline.artifacts import MAX_URL_TTL
from services.pipeline.engine_types import PodResult
from services.pipeline.events import KFP_RUN_LABEL
from services.pipeline.kfp_ir import decode, encode
from services.pipeline.nodes import fnv32a, param_dict

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


EXECUTOR_OUTPUT = "executor_output.json"  # in the step's work directory; carried by its report
KFP_ROOT = "v2/artifacts"  # Kubeflow's default pipeline_root, in the platform's bucket
S3_MOUNT = "/s3"  # KFP's SDK reads s3://<bucket>/<key> at /s3/<bucket>/<key>
ROOT_ANNOTATION = "pipelines.kubeflow.org/pipeline_root"


def local_path(uri: str) -> str:
    """Where KFP's SDK expects the artifact at ``uri`` inside the step."""
    return S3_MOUNT + "/" + uri.split("://", 1)[1]


def executor_input(
    node: dict[str, Any],
    kfp: dict[str, Any],
    mount: str,
    artifacts: dict[str, dict[str, Any]],
    output_uris: dict[str, str],
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
                    "uri": art["kfp"]["uri"],
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
                            "uri": output_uris[name],
                            "metadata": {},
                        }
                    ]
                }
                for name, d in (out_defs.get("artifacts") or {}).items()
            },
            "outputFile": f"{mount}/{EXECUTOR_OUTPUT}",
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
            if attr in ("path", None):
                return local_path(art["uri"]) if art.get("uri") else ""
            if attr == "uri":
                return str(art.get("uri", ""))
            return str(art.get(attr, ""))
        simple = {
            "pipeline_job_name": wf_name,
            "pipeline_task_name": task,
            "pipeline_job_uuid": wf_name,
            "pipeline_task_uuid": node_id,
            "pipeline_root": ex.get("pipelineRoot", ""),
        }
        return simple.get(expr, m.group(0))

    return _PLACEHOLDER.sub(repl, text)


def pipeline_prefix(namespace: str, root: str | None, bucket: str) -> str:
    """The key prefix of a run's artifacts for its ``pipeline_root`` (a ValueError says why not).

    The platform's bucket only: the default root (``v2/artifacts``) or any tenant root gets
    the namespace appended; a root inside the namespace's own area is used as it is.
    """
    root = root or f"s3://{bucket}/{KFP_ROOT}"
    try:
        root_bucket, key = parse_s3_uri(root)
    except ValueError as exc:
        raise ValueError(f"pipeline_root: {exc}") from None
    if root_bucket != bucket:
        raise ValueError(
            f"pipeline_root {root!r}: only the platform's bucket {bucket!r} is reachable"
        )
    key = key.strip("/")
    if key in TENANT_ROOTS:
        return f"{key}/{namespace}"
    if in_namespace_area(namespace, key + "/"):
        return key
    raise ValueError(
        f"pipeline_root {root!r} is outside namespace {namespace!r}'s areas "
        f"({', '.join(namespace_prefixes(namespace))}); use s3://{bucket}/{KFP_ROOT}"
    )


def _root(wf: dict[str, Any]) -> str | None:
    return (wf["metadata"].get("annotations") or {}).get(ROOT_ANNOTATION)


def _execution_prefix(
    wf: dict[str, Any], node: dict[str, Any], kfp: dict[str, Any], prefix: str
) -> str:
    """``<root prefix>/<run id>/<task>/<execution>``: where one task run's outputs go."""
    run = (wf["metadata"].get("labels") or {}).get(KFP_RUN_LABEL) or wf["metadata"]["name"]
    return f"{prefix}/{run}/{kfp['taskName']}/{fnv32a(node['name']):08x}"


async def _prepare_importer(
    runner: Any, wf: dict[str, Any], node: dict[str, Any], kfp: dict[str, Any]
) -> tuple[list[str], list[dict[str, str]], str | None]:
    """``dsl.importer``: check that the URI is the namespace's and exists; no command runs.

    An ``s3://`` URI is imported as it is (no copy); it must lie in the namespace's areas of
    the platform's bucket, like every other artifact a step reads. An ``http(s)://`` URI is
    copied by the service (SSRF-checked, as an ``http`` input artifact) to the task's output
    prefix, since a sandboxed step has no network to fetch it; the artifact's ``uri`` is then
    the copy's, and ``metadata.source_uri`` the original.
    """
    ns = wf["metadata"]["namespace"]
    importer = kfp["importer"]
    source = importer.get("artifactUri") or {}
    if "runtimeParameter" in source:
        values = param_dict((node.get("inputs") or {}).get("parameters"))
        uri = str(decode(values.get(source["runtimeParameter"], ""), "STRING"))
    else:
        constant = source.get("constant")
        uri = str(constant.get("stringValue", "") if isinstance(constant, dict) else constant)
    metadata = dict(importer.get("metadata") or {})
    store = await runner.artifacts.store()
    if uri.startswith(("http://", "https://")):
        key = _execution_prefix(wf, node, kfp, pipeline_prefix(ns, _root(wf), store.bucket))
        key += "/artifact"
        await runner.artifacts.import_url(uri, key, [])
        bucket, metadata["source_uri"] = store.bucket, uri
    else:
        try:
            bucket, key = parse_s3_uri(uri)
        except ValueError:
            raise ValueError(
                f"importer: artifact_uri {uri!r}: only s3:// (or minio://) URIs in the "
                "platform's bucket and http(s):// URLs can be imported"
            ) from None
    art = {"name": "artifact", "s3": {"key": key, "bucket": bucket}}
    objects = await runner.artifacts.input_objects(ns, art)  # checks the area and existence
    size = sum(o.size for o in objects)
    record = {
        "uri": store.uri(key),
        "key": key,
        "kind": "dir" if objects[0].rel else "file",
        "size": size,
        "type": importer.get("typeSchema") or {},
        "metadata": metadata,
        "taskName": kfp["taskName"],
    }
    await runner.artifacts.put_json(_state_key(runner, wf, node), {"importer": record})
    return ["true"], [], None


async def prepare(
    runner: Any,
    wf: dict[str, Any],
    node: dict[str, Any],
    tmpl: dict[str, Any],
    files: dict[str, str],
    mount: str,
) -> tuple[list[str], list[dict[str, str]], str | None]:
    """Presign the task's artifacts, remember its executor input (in the store) and plan it in
    ``files``; (argv, env, image) for the workload. ``mount`` is its work directory."""
    kfp = tmpl["plugin"]["kfp"]
    ns = wf["metadata"]["namespace"]
    if kfp.get("importer"):
        return await _prepare_importer(runner, wf, node, kfp)
    artifacts = {a["name"]: a for a in (node.get("inputs") or {}).get("artifacts") or []}
    store = await runner.artifacts.store()
    root = _root(wf)
    prefix = pipeline_prefix(ns, root, store.bucket)
    base = _execution_prefix(wf, node, kfp, prefix)
    out_defs = (kfp["component"].get("outputDefinitions") or {}).get("artifacts") or {}
    output_uris = {name: store.uri(f"{base}/{name}") for name in out_defs}
    plan: dict[str, Any] = {"inputs": [], "outputParameters": [], "outputArtifacts": []}
    for art in artifacts.values():
        objects = await runner.artifacts.input_objects(ns, art)
        plan["inputs"].append(
            {
                "path": local_path(art["kfp"]["uri"]),
                "objects": [{"url": o.url, "rel": o.rel} for o in objects],
                "unpack": False,
            }
        )
    ttl = MAX_URL_TTL
    for name, uri in output_uris.items():
        key = parse_s3_uri(uri)[1]
        plan["outputArtifacts"].append(
            {
                "name": name,
                "path": local_path(uri),
                "optional": True,  # a missing output is reported by collect, by name
                "key": key,
                "archive": "none",
                "upload": await runner.artifacts.upload_form(key, ttl),
            }
        )
    ex = executor_input(node, kfp, mount, artifacts, output_uris)
    ex["pipelineRoot"] = store.uri(prefix)
    ex["taskName"] = kfp["taskName"]
    await runner.artifacts.put_json(_state_key(runner, wf, node), ex)
    reported = [EXECUTOR_OUTPUT, *(f"params/{name}" for name in ex["outputs"]["parameters"])]
    plan["report"] = await runner.report_upload(wf, node, ttl, reported)
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
    argv = runner.wrap(files, plan, skip_pip_preamble(argv))
    return argv, env, container.get("image")


#: Artifact types whose content is their metadata (what ``log_metric`` and friends write).
METRICS_TYPES = (
    "system.Metrics",
    "system.ClassificationMetrics",
    "system.SlicedClassificationMetrics",
)


def _state_key(runner: Any, wf: dict[str, Any], node: dict[str, Any]) -> str:
    return str(runner.artifacts.state_key(wf, node["id"], "kfp.json"))


async def collect(runner: Any, wf: dict[str, Any], node: dict[str, Any], result: PodResult) -> None:
    """Fold the executor output and output parameter files (from the step's report) into the
    step's result. ObjectStoreError: the store cannot be read now; the caller retries."""
    ex = await runner.artifacts.read_json(_state_key(runner, wf, node))
    if not isinstance(ex, dict):
        result.phase, result.message = "Error", "the task's executor input is gone from the store"
        return
    if "importer" in ex:
        await _collect_import(runner, wf, node, ex["importer"], result)
        return
    report = await runner.read_report(wf, node)
    files = report.get("files") or {}
    try:
        output = json.loads(files.get(EXECUTOR_OUTPUT) or "{}")
    except ValueError:
        output = {}
    if not isinstance(output, dict):
        output = {}
    values = dict(output.get("parameterValues") or {})
    for name in ex["outputs"]["parameters"]:
        if name not in values and f"params/{name}" in files:
            values[name] = files[f"params/{name}"]
    result.parameters = {k: encode(v) for k, v in values.items()}
    produced = output.get("artifacts") or {}
    uploaded = report.get("artifacts") or {}
    errors: list[str] = []
    for name, spec in ex["outputs"]["artifacts"].items():
        art = spec["artifacts"][0]
        done = uploaded.get(name) or {}
        meta = ((produced.get(name) or {}).get("artifacts") or [{}])[0].get("metadata") or {}
        kfp = {"name": name, "type": art["type"], "metadata": meta, "uri": art["uri"]}
        if not done and (art["type"] or {}).get("schemaTitle") in METRICS_TYPES:
            # The SDK logs metrics into the artifact's metadata and writes no file; KFP's
            # launcher records such an artifact anyway, with no object behind it.
            result.artifacts.append({"name": name, "kfp": kfp})
            await _record(runner, wf, node, ex.get("taskName", ""), name, art, meta, None)
            continue
        if not done or not await runner.artifacts.uploaded(done["key"], done["stored"]):
            errors.append(name)
            continue
        result.artifacts.append(
            {"name": name, "s3": {"key": done["key"]}, "archive": {"none": {}}, "kfp": kfp}
        )
        await _record(runner, wf, node, ex.get("taskName", ""), name, art, meta, done.get("size"))
    if result.phase == "Succeeded" and errors:
        result.phase = "Error"
        result.message = f"the step did not produce output artifact(s) {', '.join(errors)}"
        return
    missing = [n for n in ex["outputs"]["parameters"] if n not in values]
    if result.phase == "Succeeded" and missing:
        result.phase = "Error"
        result.message = f"the step did not produce output parameter(s) {', '.join(missing)}"


async def _record(
    runner: Any,
    wf: dict[str, Any],
    node: dict[str, Any],
    task: str,
    name: str,
    art: dict[str, Any],
    meta: dict[str, Any],
    size: int | None,
) -> None:
    """Record an output artifact for the KFP artifact API (after its upload is confirmed)."""
    if runner.db is None:
        return
    labels = wf["metadata"].get("labels") or {}
    await record_artifact(
        runner.db,
        namespace=wf["metadata"]["namespace"],
        run_id=labels.get(KFP_RUN_LABEL) or wf["metadata"]["name"],
        workflow=wf["metadata"]["name"],
        node_id=node["id"],
        task_name=task,
        name=name,
        uri=art["uri"],
        artifact_type=(art["type"] or {}).get("schemaTitle", "system.Artifact"),
        metadata=meta,
        size=size,
    )


async def _collect_import(
    runner: Any, wf: dict[str, Any], node: dict[str, Any], record: dict[str, Any], result: Any
) -> None:
    if result.phase != "Succeeded":
        return
    art = {"uri": record["uri"], "type": record["type"]}
    result.artifacts.append(
        {
            "name": "artifact",
            "s3": {"key": record["key"]},
            "archive": {"none": {}},
            "kfp": {
                "name": "artifact",
                "type": record["type"],
                "metadata": record["metadata"],
                "uri": record["uri"],
            },
        }
    )
    await _record(
        runner, wf, node, record["taskName"], "artifact", art, record["metadata"], record["size"]
    )
