"""Leaf templates (container, script, KFP task) as runtime workloads.

Each Pod node becomes one workload named ``wf-<workflow uid>-<hash of node name>`` and labelled
with the workflow, so a restarted service finds it again (``apply`` is idempotent). A waiter
task per running pod blocks in ``runtime.wait`` (a pidfd, no polling) and wakes the controller
the moment the step ends. Steps that need outputs, input artifacts or a script run under
``stepwrap.py``. Nothing passes through a directory of the host, so a step runs the same on
every runtime:
- in: the plan (presigned URLs of the inputs and for the outputs, never the store's keys), a
  script and the wrapper itself are the workload's read-only ``files`` (under ``PLAN_DIR``);
- out: artifacts go to the object store (``artifacts.py``), and the wrapper's *report*
  (parameters, the script's result, what it uploaded, small work files such as KFP's
  executor output) is uploaded last with a presigned PUT to the step's state key; the
  service reads it when the workload has ended;
- the step's scratch space is its own emptyDir (``STEP_VOLUME`` at ``STEP_MOUNT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common.objectstore import ObjectStoreError
from services.common.runtime import (
    SERVICE_LABEL,
    Runtime,
    WorkloadNotFound,
    WorkloadStatus,
    placement,
)
from services.common.runtime.quota import QUOTA_RETRY_SECONDS, QuotaRefused, waiting_for_room
from services.pipeline.artifacts import (
    MAX_URL_TTL,
    ArtifactRepository,
    archive_kind,
)
from services.pipeline.engine_types import PodResult
from services.pipeline.nodes import fnv32a

log = logging.getLogger(__name__)

STEP_VOLUME = "shipyard-step"  # the step's own emptyDir: work files, KFP outputs and /s3
STEP_MOUNT = "/tmp/.shipyard"
PLAN_DIR = "/var/run/shipyard/step"  # read-only files the runtime places: plan, script, wrapper
STEPWRAP = f"{PLAN_DIR}/stepwrap.py"
STEPWRAP_SOURCE = Path(__file__).with_name("stepwrap.py").read_text()
REPORT = "result.json"  # the step's report, uploaded by stepwrap (ArtifactRepository.state_key)
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
UID_LABEL = "pipeline.shipyard.io/workflow-uid"
NODE_LABEL = "pipeline.shipyard.io/node"
WRAPPED_LABEL = "pipeline.shipyard.io/reports"  # "true": the step uploads a report at its end
KFP_LABEL = "pipeline.shipyard.io/kfp"  # "true": a KFP task (kfp_exec collects it)
STORE_RETRY_SECONDS = 5.0  # a report the store could not give is read again after this
WAIT_SLICE = 600.0  # runtime.wait is re-armed every slice, so no wait is unbounded

Extension = Callable[..., Any]


class _ScratchDirs:
    """Writable directories for artifact and output paths outside /tmp and the user's volumes.

    The workload's filesystem is read-only outside its mounts; Argo would use an emptyDir. Each
    distinct parent directory gets a subdirectory of the step's own emptyDir, mounted there.
    """

    def __init__(self, taken: list[str]) -> None:
        self.taken = taken
        self.dirs: dict[str, str] = {}
        self.mounts: list[dict[str, Any]] = []

    def _covered(self, path: str) -> bool:
        return any(path == t or path.startswith(t.rstrip("/") + "/") for t in [*self.taken, "/tmp"])

    def add_parent(self, path: str) -> None:
        parent = os.path.dirname(os.path.normpath(path)) or "/"
        if self._covered(path) or parent == "/" or parent in self.dirs:
            return
        self.dirs[parent] = rel = f"scratch/{len(self.dirs)}"
        self.mounts.append({"name": STEP_VOLUME, "mountPath": parent, "subPath": rel})


def _deadline(tmpl: dict[str, Any]) -> float | None:
    """The step's deadline in seconds (the shorter of activeDeadlineSeconds and timeout)."""
    from services.pipeline.engine_types import duration_seconds

    deadline = None
    for key in ("activeDeadlineSeconds", "timeout"):
        raw = tmpl.get(key)
        if raw not in (None, ""):
            value = duration_seconds(raw)
            deadline = value if deadline is None else min(deadline, value or deadline)
    return deadline


def workload_name(wf: dict[str, Any], node: dict[str, Any]) -> str:
    return f"wf-{wf['metadata']['uid'][:8]}-{fnv32a(node['name']):08x}"


class RuntimeRunner:
    """The engine's PodRunner on a :class:`Runtime`."""

    def __init__(
        self,
        runtime: Runtime,
        artifacts: ArtifactRepository,
        on_done: Callable[[str, str], None],
        *,
        kfp: Any = None,
        db: Any = None,
    ) -> None:
        self.runtime = runtime
        self.artifacts = artifacts
        self.on_done = on_done
        self.kfp = kfp  # services.pipeline.kfp_exec module-like hook for plugin templates
        self.db = db  # where KFP artifacts are recorded (services.pipeline.artifact_records)
        self._waiters: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._done: dict[tuple[str, str], WorkloadStatus | None] = {}
        self._results: dict[tuple[str, str], PodResult] = {}
        self._waiting: dict[tuple[str, str], str] = {}  # made, waiting for quota room

    # ------------------------------------------------------------- the wrapper
    def wrap(self, files: dict[str, str], plan: dict[str, Any], argv: list[str]) -> list[str]:
        """``argv`` run under the step wrapper, with ``plan`` and the wrapper in ``files``."""
        files[f"{PLAN_DIR}/plan.json"] = json.dumps({**plan, "workDir": STEP_MOUNT})
        files[STEPWRAP] = STEPWRAP_SOURCE
        return [self.runtime.python, "-I", "-S", STEPWRAP, f"{PLAN_DIR}/plan.json", "--", *argv]

    async def report_upload(
        self, wf: dict[str, Any], node: dict[str, Any], ttl: int, files: list[str] | None = None
    ) -> dict[str, Any]:
        """Where the wrapper uploads its report (a presigned PUT), and which of its work
        files (relative to the step's work directory) the report carries."""
        key = self.artifacts.state_key(wf, node["id"], REPORT)
        await self.artifacts.forget_key(key)  # a report of an earlier run of this node
        store = await self.artifacts.store()
        url = await store.presigned_put_url(key, min(ttl, MAX_URL_TTL))
        return {"put": url, "files": files or []}

    async def read_report(self, wf: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
        """The step's report ({} if it never arrived); ObjectStoreError: try again later."""
        report = await self.artifacts.read_json(self.artifacts.state_key(wf, node["id"], REPORT))
        return report if isinstance(report, dict) else {}

    # ---------------------------------------------------------------- start
    async def start(
        self,
        wf: dict[str, Any],
        node: dict[str, Any],
        template: dict[str, Any],
        volumes: list[dict[str, Any]],
    ) -> str | None:
        """Make the step's workload; the quota's message if the runtime refused it for now."""
        ns = wf["metadata"]["namespace"]
        name = workload_name(wf, node)
        key = (ns, name)
        self._done.pop(key, None)
        self._results.pop(key, None)
        if await self._exists(ns, name):
            # Started by a service that died before it recorded the start (status writes are
            # coalesced): adopt it; preparing again would take back the report URL it uses.
            self._watch(ns, name, wf["metadata"]["name"])
            return None
        try:
            spec = await self._workload_spec(wf, node, template, volumes, name)
        except (OSError, ValueError, ObjectStoreError) as exc:
            self._results[key] = PodResult("Error", f"cannot prepare the step: {exc}")
            self.on_done(ns, wf["metadata"]["name"])
            return None
        try:
            made = await self.runtime.apply(spec)
        except ValueError as exc:
            self._results[key] = PodResult("Error", f"invalid step: {exc}")
            self.on_done(ns, wf["metadata"]["name"])
            return None
        except QuotaRefused as exc:
            if not exc.final:
                return exc.message
            self._results[key] = PodResult("Error", exc.message)
            self.on_done(ns, wf["metadata"]["name"])
            return None
        if (waiting := waiting_for_room(made)) is not None:
            self._waiting[key] = waiting
        self._watch(ns, name, wf["metadata"]["name"])
        return None

    async def _exists(self, ns: str, name: str) -> bool:
        try:
            await self.runtime.status(ns, name)
        except WorkloadNotFound:
            return False
        return True

    async def _workload_spec(
        self,
        wf: dict[str, Any],
        node: dict[str, Any],
        tmpl: dict[str, Any],
        volumes: list[dict[str, Any]],
        name: str,
    ) -> dict[str, Any]:
        ns = wf["metadata"]["namespace"]
        container = tmpl.get("container") or tmpl.get("script") or {}
        env = [
            {"name": e["name"], "value": e.get("value") or ""} for e in container.get("env") or []
        ]
        mounts = [dict(m) for m in container.get("volumeMounts") or []]
        files: dict[str, str] = {}
        labels = {
            SERVICE_LABEL: "pipeline",
            WORKFLOW_LABEL: wf["metadata"]["name"],
            UID_LABEL: wf["metadata"]["uid"],
            NODE_LABEL: f"{fnv32a(node['name']):08x}",
        }
        if tmpl.get("plugin"):
            argv, extra_env, image = await self.kfp.prepare(self, wf, node, tmpl, files, STEP_MOUNT)
            env += extra_env
            mounts.append({"name": STEP_VOLUME, "mountPath": STEP_MOUNT, "subPath": "work"})
            mounts.append({"name": STEP_VOLUME, "mountPath": self.kfp.S3_MOUNT, "subPath": "s3"})
            labels[KFP_LABEL] = "true"
        else:
            image = container.get("image")
            argv = await self._argo_argv(wf, node, tmpl, container, mounts, files)
        if files:
            labels[WRAPPED_LABEL] = "true"
        used = {m["name"] for m in mounts}
        vols = [
            {k: v[k] for k in ("name", "persistentVolumeClaim", "emptyDir") if k in v}
            for v in volumes
            if v["name"] in used
        ]
        if STEP_VOLUME in used:
            vols.append({"name": STEP_VOLUME, "emptyDir": {}})
        resources = container.get("resources") or {}
        return {
            "kind": "job",
            "namespace": ns,
            "name": name,
            "command": argv,
            "env": env,
            "workingDir": container.get("workingDir"),
            "image": image,
            "resources": {
                key: {k: str(v) for k, v in (resources.get(key) or {}).items()}
                for key in ("requests", "limits")
            },
            "volumeMounts": [
                {
                    k: m[k]
                    for k in ("name", "mountPath", "readOnly", "subPath")
                    if m.get(k) is not None
                }
                for m in mounts
            ],
            "volumes": vols,
            "files": files,
            **placement(tmpl, container, defaults=wf.get("spec") or {}),
            "activeDeadlineSeconds": _deadline(tmpl),
            "terminationGracePeriodSeconds": 2,
            "labels": labels,
            "owner": {
                "kind": "Workflow",
                "name": wf["metadata"]["name"],
                "uid": wf["metadata"]["uid"],
                "node": node["id"],
            },
        }

    async def _argo_argv(
        self,
        wf: dict[str, Any],
        node: dict[str, Any],
        tmpl: dict[str, Any],
        container: dict[str, Any],
        mounts: list[dict[str, Any]],
        files: dict[str, str],
    ) -> list[str]:
        """A container or script step's argv; wrapped (``files`` filled in, ``mounts``
        extended) when it has a script, outputs or input artifacts."""
        argv = [*(container.get("command") or [])]
        args = list(container.get("args") or [])
        script = tmpl.get("script")
        outputs = tmpl.get("outputs") or {}
        in_arts = (node.get("inputs") or {}).get("artifacts") or []
        if not (script or outputs.get("parameters") or outputs.get("artifacts") or in_arts):
            return [*argv, *args]
        if script:
            files[f"{PLAN_DIR}/script"] = script["source"]
            argv = [*(argv or ["python"]), f"{PLAN_DIR}/script"]
        scratch = _ScratchDirs([m["mountPath"] for m in mounts])
        ttl = int(_deadline(tmpl) or MAX_URL_TTL) + 3600
        prefix = await self.artifacts.output_prefix(wf, node["id"])
        plan: dict[str, Any] = {
            "captureResult": bool(script),
            "inputs": await self._plan_inputs(wf, prefix, in_arts, scratch),
            "outputParameters": [],
            "outputArtifacts": await self._plan_outputs(wf, prefix, outputs, ttl),
            "report": await self.report_upload(wf, node, ttl),
        }
        for p in outputs.get("parameters") or []:
            vf = p.get("valueFrom") or {}
            if vf.get("path"):
                plan["outputParameters"].append(
                    {"name": p["name"], "path": vf["path"], "default": vf.get("default")}
                )
        for entry in plan["outputParameters"] + plan["outputArtifacts"]:
            scratch.add_parent(entry["path"])
        mounts.append({"name": STEP_VOLUME, "mountPath": STEP_MOUNT, "subPath": "work"})
        mounts += scratch.mounts
        return self.wrap(files, plan, [*argv, *args])

    async def _plan_inputs(
        self, wf: dict[str, Any], prefix: str, in_arts: list[dict[str, Any]], scratch: _ScratchDirs
    ) -> list[dict[str, Any]]:
        ns = wf["metadata"]["namespace"]
        items = []
        for art in in_arts:
            if not art.get("path"):
                continue
            item: dict[str, Any] = {"path": art["path"], "mode": art.get("mode")}
            scratch.add_parent(art["path"])
            if art.get("raw"):
                item["data"] = art["raw"].get("data", "")
            else:
                if art.get("http"):  # fetched by the service into the step's prefix
                    key = f"{prefix}/inputs/{art['name']}"
                    await self.artifacts.import_url(
                        art["http"]["url"], key, art["http"].get("headers") or []
                    )
                    art = {**art, "s3": {"key": key}}
                objects = await self.artifacts.input_objects(ns, art)
                item["objects"] = [{"url": o.url, "rel": o.rel} for o in objects]
                item["unpack"] = archive_kind(art) != "none"
            items.append(item)
        return items

    async def _plan_outputs(
        self, wf: dict[str, Any], prefix: str, outputs: dict[str, Any], ttl: int
    ) -> list[dict[str, Any]]:
        ns = wf["metadata"]["namespace"]
        planned = []
        for a in outputs.get("artifacts") or []:
            if not a.get("path"):
                continue
            kind = archive_kind(a)
            key = (a.get("s3") or {}).get("key") or (
                f"{prefix}/{a['name']}" + (".tgz" if kind == "tgz" else "")
            )
            await self.artifacts.check_location(ns, a, key)
            planned.append(
                {
                    "name": a["name"],
                    "path": a["path"],
                    "optional": a.get("optional"),
                    "key": key,
                    "archive": kind,
                    "upload": await self.artifacts.upload_form(key, ttl),
                }
            )
        return planned

    # ----------------------------------------------------------------- wait
    def _watch(self, ns: str, name: str, workflow: str) -> None:
        key = (ns, name)
        task = self._waiters.get(key)
        if task is not None and not task.done():
            return

        async def wait() -> None:
            status: WorkloadStatus | None = None
            try:
                await self._until_started(ns, name, workflow)
                while True:
                    try:
                        status = await self.runtime.wait(ns, name, timeout=WAIT_SLICE)
                        break
                    except TimeoutError:
                        continue
            except WorkloadNotFound:
                status = None
            except Exception:  # a broken state file: report the step as errored
                log.exception("waiting for workload %s/%s failed", ns, name)
                status = None
            self._done[key] = status
            self.on_done(ns, workflow)

        self._waiters[key] = asyncio.create_task(wait(), name=f"wait-{name}")

    async def _until_started(self, ns: str, name: str, workflow: str) -> None:
        """While the workload waits for room under its namespace's quota, its message is in
        ``_waiting`` (``poll`` says ``Pending``); the workflow is woken when it starts."""
        key = (ns, name)
        while (waiting := waiting_for_room(await self.runtime.status(ns, name))) is not None:
            if self._waiting.get(key) != waiting:
                self._waiting[key] = waiting
                self.on_done(ns, workflow)
            await asyncio.sleep(QUOTA_RETRY_SECONDS)
        if self._waiting.pop(key, None) is not None:
            self.on_done(ns, workflow)

    async def poll(self, wf: dict[str, Any], node: dict[str, Any]) -> PodResult | None:
        ns = wf["metadata"]["namespace"]
        name = workload_name(wf, node)
        key = (ns, name)
        if key in self._results:
            return self._results[key]
        if key not in self._done:
            self._watch(ns, name, wf["metadata"]["name"])  # after a restart: re-adopt
            waiting = self._waiting.get(key)
            return PodResult("Pending", waiting) if waiting else None
        status = self._done[key]
        try:
            result = await self._result(wf, node, status)
        except ObjectStoreError as exc:
            log.warning("the report of %s/%s cannot be read yet: %s", ns, name, exc)
            loop = asyncio.get_running_loop()
            loop.call_later(STORE_RETRY_SECONDS, self.on_done, ns, wf["metadata"]["name"])
            return None
        self._results[key] = result
        return result

    async def _result(
        self, wf: dict[str, Any], node: dict[str, Any], status: WorkloadStatus | None
    ) -> PodResult:
        if status is None:
            return PodResult("Error", "the step's workload disappeared")
        if status.exit_code is None:
            return PodResult("Error", status.message or status.reason or "step did not run")
        result = PodResult(
            "Succeeded" if status.exit_code == 0 else "Failed", exit_code=status.exit_code
        )
        if status.reason == "DeadlineExceeded":
            result.message = "Pod was active on the node longer than the specified deadline"
            result.phase = "Failed"
        elif status.reason == "Evicted":  # a full volume: the runtime says which and why
            result.message = status.message or "the step's pod was evicted"
            result.phase = "Failed"
        elif status.exit_code != 0:
            result.message = f"Error (exit code {status.exit_code})"
        if self.kfp is not None and status.labels.get(KFP_LABEL) == "true":
            await self.kfp.collect(self, wf, node, result)
            return result
        if status.labels.get(WRAPPED_LABEL) != "true":
            return result
        outputs = await self.read_report(wf, node)
        if not outputs:
            if result.phase == "Succeeded":
                result.phase = "Error"
                result.message = "the step's report of its outputs never reached the store"
            return result
        result.parameters = dict(outputs.get("parameters") or {})
        if outputs.get("result") is not None:
            result.result = outputs["result"]
        errors = list(outputs.get("errors") or [])
        for art_name, stored in (outputs.get("artifacts") or {}).items():
            key = stored.get("key") if isinstance(stored, dict) else None
            kind = stored.get("stored") if isinstance(stored, dict) else None
            if not key or not await self.artifacts.uploaded(key, kind or "file"):
                errors.append(f"output artifact {art_name!r}: the store has no finished upload")
                continue
            art: dict[str, Any] = {"name": art_name, "path": stored.get("path"), "s3": {"key": key}}
            if kind != "tgz":
                art["archive"] = {"none": {}}
            result.artifacts.append(art)
        if errors and result.phase == "Succeeded":
            result.phase = "Error"
            result.message = "; ".join(errors)
        return result

    # ------------------------------------------------------------- lifecycle
    async def kill(self, wf: dict[str, Any], node: dict[str, Any]) -> None:
        ns = wf["metadata"]["namespace"]
        name = workload_name(wf, node)
        with contextlib.suppress(Exception):
            await self.runtime.stop_all(
                {NODE_LABEL: f"{fnv32a(node['name']):08x}", UID_LABEL: wf["metadata"]["uid"]}
            )
        self._results[(ns, name)] = PodResult("Failed", "terminated")

    async def delete_node_workload(self, wf: dict[str, Any], node: dict[str, Any]) -> None:
        ns = wf["metadata"]["namespace"]
        name = workload_name(wf, node)
        await self.runtime.delete(ns, name)
        for store in (self._done, self._results, self._waiting):
            store.pop((ns, name), None)
        task = self._waiters.pop((ns, name), None)
        if task is not None:
            task.cancel()

    async def cleanup(self, wf: dict[str, Any]) -> None:
        """Delete every workload, report and artifact of a deleted workflow."""
        ns, uid = wf["metadata"]["namespace"], wf["metadata"]["uid"]
        for status in await self.runtime.list({UID_LABEL: uid}, namespace=ns):
            await self.runtime.delete(ns, status.name)
        self.forget(wf)
        await self.artifacts.delete_prefix(
            self.artifacts.step_prefix(ns, wf["metadata"]["name"], "").rstrip("/")
        )

    def forget(self, wf: dict[str, Any]) -> None:
        """Drop in-memory results of a finished workflow (its status holds them now)."""
        self.artifacts.forget(wf)
        prefix = f"wf-{wf['metadata']['uid'][:8]}-"
        ns = wf["metadata"]["namespace"]
        for store in (self._done, self._results, self._waiters):
            for key in [k for k in store if k[0] == ns and k[1].startswith(prefix)]:
                store.pop(key, None)

    async def close(self) -> None:
        for task in self._waiters.values():
            task.cancel()
        for task in self._waiters.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._waiters.clear()
