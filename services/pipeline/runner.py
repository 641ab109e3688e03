"""Leaf templates (container, script, KFP task) as runtime workloads.

Each Pod node becomes one workload named ``wf-<workflow uid>-<hash of node name>`` and labelled
with the workflow, so a restarted service finds it again (``apply`` is idempotent). A waiter
task per running pod blocks in ``runtime.wait`` (a pidfd, no polling) and wakes the controller
the moment the step ends. Steps that need outputs, input artifacts or a script run under
``stepwrap.py``. Artifacts pass between steps only through the object store
(``artifacts.py``: presigned URLs, never the store's keys); the step's own directory (a subPath
of a per-namespace runtime volume, at ``/tmp/.shipyard``, never shared with another step) holds
only its plan and its outputs.json (parameters, and what it uploaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common.objectstore import ObjectStoreError
from services.common.runtime import Runtime, WorkloadNotFound, WorkloadStatus
from services.pipeline.artifacts import (
    MAX_URL_TTL,
    ArtifactRepository,
    archive_kind,
)
from services.pipeline.engine import PodResult
from services.pipeline.nodes import fnv32a

log = logging.getLogger(__name__)

STEP_VOLUME = "pipeline-steps"
STEP_MOUNT = "/tmp/.shipyard"
STEPWRAP = str(Path(__file__).with_name("stepwrap.py"))
SERVICE_LABEL = "shipyard.io/service"
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
UID_LABEL = "pipeline.shipyard.io/workflow-uid"
NODE_LABEL = "pipeline.shipyard.io/node"
WAIT_SLICE = 600.0  # runtime.wait is re-armed every slice, so no wait is unbounded

Extension = Callable[..., Any]


class _ScratchDirs:
    """Writable directories for artifact and output paths outside /tmp and the user's volumes.

    The sandbox shows the host read-only; Argo would use an emptyDir. Each distinct parent
    directory gets a subdirectory of the step's own directory, mounted there.
    """

    def __init__(self, host_dir: Path, sub: str, taken: list[str]) -> None:
        self.host_dir, self.sub, self.taken = host_dir, sub, taken
        self.dirs: dict[str, str] = {}
        self.mounts: list[dict[str, Any]] = []

    def _covered(self, path: str) -> bool:
        return any(path == t or path.startswith(t.rstrip("/") + "/") for t in [*self.taken, "/tmp"])

    def parent_of(self, path: str) -> Path | None:
        parent = os.path.dirname(os.path.normpath(path)) or "/"
        if self._covered(path) or parent == "/":
            return None
        if parent not in self.dirs:
            rel = f"scratch/{len(self.dirs)}"
            (self.host_dir / rel).mkdir(parents=True, exist_ok=True)
            self.dirs[parent] = rel
            self.mounts.append(
                {"name": "shipyard-step", "mountPath": parent, "subPath": f"{self.sub}/{rel}"}
            )
        return self.host_dir / self.dirs[parent]


def _deadline(tmpl: dict[str, Any]) -> float | None:
    """The step's deadline in seconds (the shorter of activeDeadlineSeconds and timeout)."""
    from services.pipeline.engine import duration_seconds

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
        python: str | None = None,
        kfp: Any = None,
        db: Any = None,
    ) -> None:
        self.runtime = runtime
        self.artifacts = artifacts
        self.on_done = on_done
        self.python = python or sys.executable
        self.kfp = kfp  # services.pipeline.kfp_exec module-like hook for plugin templates
        self.db = db  # where KFP artifacts are recorded (services.pipeline.artifact_records)
        self._waiters: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._done: dict[tuple[str, str], WorkloadStatus | None] = {}
        self._results: dict[tuple[str, str], PodResult] = {}
        self._step_volume_ready: set[str] = set()

    # ---------------------------------------------------------------- paths
    async def step_root(self, namespace: str) -> Path:
        if namespace not in self._step_volume_ready:
            await self.runtime.create_volume(
                namespace, STEP_VOLUME, labels={SERVICE_LABEL: "pipeline"}
            )
            self._step_volume_ready.add(namespace)
        return await self.runtime.resolve_volume(namespace, STEP_VOLUME)

    async def step_dir(self, wf: dict[str, Any], node: dict[str, Any]) -> tuple[Path, str]:
        sub = f"{wf['metadata']['uid']}/{fnv32a(node['name']):08x}"
        return (await self.step_root(wf["metadata"]["namespace"])) / sub, sub

    def wrap(self, plan: str, argv: list[str]) -> list[str]:
        """``argv`` run under the step wrapper with the plan at ``plan`` (a path inside)."""
        return [self.python, "-I", "-S", STEPWRAP, plan, "--", *argv]

    # ---------------------------------------------------------------- start
    async def start(
        self,
        wf: dict[str, Any],
        node: dict[str, Any],
        template: dict[str, Any],
        volumes: list[dict[str, Any]],
    ) -> None:
        ns = wf["metadata"]["namespace"]
        name = workload_name(wf, node)
        key = (ns, name)
        self._done.pop(key, None)
        self._results.pop(key, None)
        if await self._exists(ns, name):
            # Started by a service that died before it recorded the start (status writes are
            # coalesced): adopt it; preparing again would wipe the step directory it uses.
            self._watch(ns, name, wf["metadata"]["name"])
            return
        try:
            spec = await self._workload_spec(wf, node, template, volumes, name)
        except (OSError, ValueError, ObjectStoreError) as exc:
            self._results[key] = PodResult("Error", f"cannot prepare the step: {exc}")
            self.on_done(ns, wf["metadata"]["name"])
            return
        try:
            await self.runtime.apply(spec)
        except ValueError as exc:
            self._results[key] = PodResult("Error", f"invalid step: {exc}")
            self.on_done(ns, wf["metadata"]["name"])
            return
        self._watch(ns, name, wf["metadata"]["name"])

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
        plan: dict[str, Any] | None = None
        if tmpl.get("plugin"):
            host_dir, sub = await self.step_dir(wf, node)
            host_dir.mkdir(parents=True, exist_ok=True)
            argv, extra_env, image = await self.kfp.prepare(
                self, wf, node, tmpl, host_dir, STEP_MOUNT
            )
            env += extra_env
            mounts.append({"name": "shipyard-step", "mountPath": STEP_MOUNT, "subPath": sub})
            mounts.append(
                {"name": "shipyard-step", "mountPath": self.kfp.S3_MOUNT, "subPath": f"{sub}/s3"}
            )
        else:
            image = container.get("image")
            argv = [*(container.get("command") or [])]
            script = tmpl.get("script")
            outputs = tmpl.get("outputs") or {}
            in_arts = (node.get("inputs") or {}).get("artifacts") or []
            needs_wrap = bool(
                script or outputs.get("parameters") or outputs.get("artifacts") or in_arts
            )
            if needs_wrap:
                host_dir, sub = await self.step_dir(wf, node)
                if host_dir.exists():
                    shutil.rmtree(host_dir)
                host_dir.mkdir(parents=True)
                plan = {
                    "captureResult": bool(script),
                    "inputs": [],
                    "outputParameters": [],
                    "outputArtifacts": [],
                }
                if script:
                    (host_dir / "script").write_text(script["source"])
                    if not argv:
                        argv = ["python"]
                    argv.append(f"{STEP_MOUNT}/script")
                scratch = _ScratchDirs(host_dir, sub, [m["mountPath"] for m in mounts])
                prefix = await self.artifacts.output_prefix(wf, node["id"])
                for art in in_arts:
                    if not art.get("path"):
                        continue
                    item: dict[str, Any] = {"path": art["path"], "mode": art.get("mode")}
                    scratch.parent_of(art["path"])
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
                    plan["inputs"].append(item)
                for p in outputs.get("parameters") or []:
                    vf = p.get("valueFrom") or {}
                    if vf.get("path"):
                        plan["outputParameters"].append(
                            {"name": p["name"], "path": vf["path"], "default": vf.get("default")}
                        )
                ttl = int(_deadline(tmpl) or MAX_URL_TTL) + 3600
                for a in outputs.get("artifacts") or []:
                    if not a.get("path"):
                        continue
                    kind = archive_kind(a)
                    key = (a.get("s3") or {}).get("key") or (
                        f"{prefix}/{a['name']}" + (".tgz" if kind == "tgz" else "")
                    )
                    await self.artifacts.check_location(ns, a, key)
                    plan["outputArtifacts"].append(
                        {
                            "name": a["name"],
                            "path": a["path"],
                            "optional": a.get("optional"),
                            "key": key,
                            "archive": kind,
                            "upload": await self.artifacts.upload_form(key, ttl),
                        }
                    )
                for entry in plan["outputParameters"] + plan["outputArtifacts"]:
                    scratch.parent_of(entry["path"])
                (host_dir / "plan.json").write_text(json.dumps(plan))
                mounts.append({"name": "shipyard-step", "mountPath": STEP_MOUNT, "subPath": sub})
                mounts += scratch.mounts
                argv = self.wrap(f"{STEP_MOUNT}/plan.json", [*argv, *(container.get("args") or [])])
            else:
                argv = [*argv, *(container.get("args") or [])]
        used = {m["name"] for m in mounts}
        vols = []
        for v in volumes:
            if v["name"] in used:
                vols.append(
                    {k: v[k] for k in ("name", "persistentVolumeClaim", "emptyDir") if k in v}
                )
        if "shipyard-step" in used:
            vols.append(
                {"name": "shipyard-step", "persistentVolumeClaim": {"claimName": STEP_VOLUME}}
            )
        deadline = _deadline(tmpl)
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
            "activeDeadlineSeconds": deadline,
            "terminationGracePeriodSeconds": 2,
            "labels": {
                SERVICE_LABEL: "pipeline",
                WORKFLOW_LABEL: wf["metadata"]["name"],
                UID_LABEL: wf["metadata"]["uid"],
                NODE_LABEL: f"{fnv32a(node['name']):08x}",
            },
            "owner": {
                "kind": "Workflow",
                "name": wf["metadata"]["name"],
                "uid": wf["metadata"]["uid"],
                "node": node["id"],
            },
        }

    # ----------------------------------------------------------------- wait
    def _watch(self, ns: str, name: str, workflow: str) -> None:
        key = (ns, name)
        task = self._waiters.get(key)
        if task is not None and not task.done():
            return

        async def wait() -> None:
            status: WorkloadStatus | None = None
            try:
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

    async def poll(self, wf: dict[str, Any], node: dict[str, Any]) -> PodResult | None:
        ns = wf["metadata"]["namespace"]
        name = workload_name(wf, node)
        key = (ns, name)
        if key in self._results:
            return self._results[key]
        if key not in self._done:
            self._watch(ns, name, wf["metadata"]["name"])  # after a restart: re-adopt
            return None
        status = self._done[key]
        result = await self._result(wf, node, status)
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
        elif status.exit_code != 0:
            result.message = f"Error (exit code {status.exit_code})"
        host_dir, _ = await self.step_dir(wf, node)
        if self.kfp is not None and (host_dir / "kfp.json").exists():
            await self.kfp.collect(self, wf, node, host_dir, result)
            return result
        outputs_file = host_dir / "outputs.json"
        if not outputs_file.exists():
            return result
        try:
            outputs = json.loads(outputs_file.read_text())
        except ValueError:
            return result
        try:
            plan = json.loads((host_dir / "plan.json").read_text())
        except (OSError, ValueError):
            plan = {}
        result.parameters = dict(outputs.get("parameters") or {})
        if outputs.get("result") is not None:
            result.result = outputs["result"]
        paths = {a.get("name"): a.get("path") for a in plan.get("outputArtifacts", [])}
        for art_name, stored in (outputs.get("artifacts") or {}).items():
            key = stored.get("key") if isinstance(stored, dict) else None
            kind = stored.get("stored") if isinstance(stored, dict) else None
            if not key or not await self.artifacts.uploaded(key, kind or "file"):
                outputs.setdefault("errors", []).append(
                    f"output artifact {art_name!r}: the store has no finished upload"
                )
                continue
            art: dict[str, Any] = {
                "name": art_name,
                "path": paths.get(art_name),
                "s3": {"key": key},
            }
            if kind != "tgz":
                art["archive"] = {"none": {}}
            result.artifacts.append(art)
        if outputs.get("errors") and result.phase == "Succeeded":
            result.phase = "Error"
            result.message = "; ".join(outputs["errors"])
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
        for store in (self._done, self._results):
            store.pop((ns, name), None)
        task = self._waiters.pop((ns, name), None)
        if task is not None:
            task.cancel()

    async def cleanup(self, wf: dict[str, Any]) -> None:
        """Delete every workload, step directory and artifact of a deleted workflow."""
        ns, uid = wf["metadata"]["namespace"], wf["metadata"]["uid"]
        for status in await self.runtime.list({UID_LABEL: uid}, namespace=ns):
            await self.runtime.delete(ns, status.name)
        self.forget(wf)
        root = await self.step_root(ns)
        await asyncio.to_thread(shutil.rmtree, root / uid, True)
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
