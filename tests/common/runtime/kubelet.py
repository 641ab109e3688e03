"""A test-only kubelet: runs the emulated API server's Pods through the LocalRuntime.

An API server (real or emulated) runs nothing; a kubelet on each node does. This one watches
Pods in :class:`~tests.common.runtime.apiserver.ApiServer` and, for each, does what a node
would, as far as the tests need:

* **schedules** it (a pod held by ``schedulingGates`` is left alone; one whose
  PersistentVolumeClaim does not exist stays Pending, ``PodScheduled=False`` with the
  scheduler's words);
* **runs** its container as a LocalRuntime workload: command, args and env unexpanded
  (``$(VAR)`` is expanded the way Kubernetes does, by the local runtime), ``envFrom``
  ConfigMaps and Secrets, workingDir, resources (memory and cpu are enforced), ports and
  the readiness probe; a PVC becomes the local volume of the same name (made on demand,
  when the PVC object exists); secret volumes and the projected identity volume become
  ``WorkloadSpec.files`` (the token is a placeholder, not one the API server signed);
* **enforces** ``activeDeadlineSeconds`` from the pod's start (also when it is brought
  forward later), like the kubelet: the pod ends ``Failed``/``DeadlineExceeded``;
* **writes status** back through ``pods/{name}/status``: phase, startTime, conditions
  (PodScheduled, Ready), the container's state (waiting, running, terminated with exit
  code, reason and, as ``FallbackToLogsOnError`` does, the end of the log as message) and
  restartCount;
* **serves logs** for ``pods/{name}/log`` (``tailLines``, ``follow``) from the local
  runtime (all runs of a restarted container are "current"; "previous" is empty);
* **terminates** a pod marked for deletion (SIGTERM, then SIGKILL after its grace period)
  and then removes it with ``gracePeriodSeconds=0``, as the kubelet does.

**Service networking is emulated**: a server's local endpoint is recorded, and
:meth:`Kubelet.resolve_service` maps a Service (by its selector) to the endpoint of a
ready pod behind it. The runtime under test gets it as its ``endpoint_for`` hook, where
in a cluster the Service's DNS name would be used.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import kmock

from services.common.runtime import LocalRuntime, Phase, WorkloadStatus
from services.common.runtime.k8s_status import service_endpoint

from .apiserver import ApiServer

log = logging.getLogger(__name__)
SYNC_INTERVAL = 0.05
POD_UID_LABEL = "emulator-pod-uid"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


class NotStartable(Exception):
    """The container cannot be made (a missing Secret or ConfigMap): it waits, as on a node."""


def _stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodRun:
    """One pod on this node."""

    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    deadline: int | None = None
    started: float | None = None
    start_time: str | None = None
    deadline_hit: bool = False
    terminating: bool = False
    applied: bool = False
    endpoint: str | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    deadline_task: asyncio.Task[None] | None = None


class Kubelet:
    """Runs the pods of ``server`` (reached at ``url``) under a LocalRuntime in ``state_dir``."""

    def __init__(self, server: ApiServer, url: str, state_dir: Path) -> None:
        self.server = server
        self.url = url.rstrip("/")
        self.local = LocalRuntime(state_dir, backoff_base=0.1, backoff_max=1.0)
        self.runs: dict[tuple[str, str], PodRun] = {}
        self._session: aiohttp.ClientSession | None = None
        self._watch: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        server[kmock.resource("", "v1", "pods"), kmock.subresource("log")] << self.serve_log

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(self.url)
        self._watch = asyncio.get_running_loop().create_task(self._watch_pods())

    async def close(self) -> None:
        tasks = [t for t in (self._watch,) if t is not None]
        for run in self.runs.values():
            tasks += [*run.tasks, *([run.deadline_task] if run.deadline_task else [])]
        tasks += list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.local.shutdown()
        if self._session is not None:
            await self._session.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- the API -----------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "start() first"
        return self._session

    async def _get(self, path: str) -> dict[str, Any] | None:
        async with self.session.get(path) as response:
            if response.status == 404:
                return None
            response.raise_for_status()
            return dict(await response.json())

    async def _patch_status(self, run: PodRun, status: Mapping[str, Any]) -> None:
        path = f"/api/v1/namespaces/{run.namespace}/pods/{run.name}/status"
        body = json.dumps({"status": status})
        async with self.session.patch(path, data=body, headers=MERGE_PATCH) as response:
            if response.status not in (200, 404):
                log.warning(
                    "kubelet: status of %s/%s: HTTP %s", run.namespace, run.name, response.status
                )

    async def _remove(self, namespace: str, name: str) -> None:
        """The kubelet's last word on a pod it stopped: delete it without grace."""
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        async with self.session.delete(path, params={"gracePeriodSeconds": "0"}) as response:
            await response.read()

    async def _watch_pods(self) -> None:
        version = ""
        while True:
            params = {"watch": "true", **({"resourceVersion": version} if version else {})}
            try:
                async with self.session.get("/api/v1/pods", params=params) as response:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            version = ""  # too old: start again from a full listing
                            break
                        obj = event.get("object") or {}
                        version = obj.get("metadata", {}).get("resourceVersion") or version
                        self._on_pod(event["type"], obj)
            except (aiohttp.ClientError, ValueError) as exc:
                log.warning("kubelet: watch failed: %s", exc)
                await asyncio.sleep(0.2)

    # -- pod lifecycle -----------------------------------------------------------------------

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        run = self.runs.get(key)
        if run is not None and run.uid != meta.get("uid"):
            return  # a pod of the same name that this one replaces: gone already
        if kind == "DELETED":
            if run is not None and not run.terminating:
                self._spawn(self._stop(run, remove=False))
            return
        if meta.get("deletionTimestamp"):
            if run is None:
                self._spawn(self._remove(*key))
            elif not run.terminating:
                run.terminating = True
                self._spawn(self._stop(run, remove=True))
            return
        spec = pod.get("spec") or {}
        if run is None:
            phase = (pod.get("status") or {}).get("phase")
            if spec.get("schedulingGates") or phase in ("Succeeded", "Failed"):
                return
            run = PodRun(key[0], key[1], meta["uid"], dict(meta.get("labels") or {}))
            run.deadline = spec.get("activeDeadlineSeconds")
            self.runs[key] = run
            run.tasks.append(self._spawn(self._run(run, pod)))
        elif spec.get("activeDeadlineSeconds") != run.deadline:
            run.deadline = spec.get("activeDeadlineSeconds")
            self._arm_deadline(run)

    async def _run(self, run: PodRun, pod: dict[str, Any]) -> None:
        missing = [c for c in _claims(pod) if not await self._claim_exists(run.namespace, c)]
        if missing:
            await self._patch_status(run, _unschedulable(missing[0]))
            self.runs.pop((run.namespace, run.name), None)
            return
        try:
            spec = await self._local_spec(pod)
        except NotStartable as exc:
            await self._patch_status(run, _waiting("CreateContainerConfigError", str(exc)))
            return
        for claim in _claims(pod):
            await self.local.create_volume(run.namespace, claim)
        run.started = asyncio.get_running_loop().time()
        run.start_time = _stamp()
        await self._patch_status(
            run, {**_waiting("ContainerCreating", None), "startTime": run.start_time}
        )
        await self.local.apply(spec)
        run.applied = True
        self._arm_deadline(run)
        await self._sync(run, pod)

    async def _sync(self, run: PodRun, pod: dict[str, Any]) -> None:
        """Copy the local workload's status to the pod's until it finishes."""
        image = pod["spec"]["containers"][0].get("image")
        steps = {c["name"]: c.get("image", image) for c in pod["spec"].get("initContainers") or []}
        written: dict[str, Any] | None = None
        while not run.terminating:
            local = await self.local.status(run.namespace, run.name)
            run.endpoint = local.endpoint if local.ready else None
            status = await self._pod_status(run, local, image, steps)
            if (
                steps
                and "initContainerStatuses" not in status
                and local.reason != "PodInitializing"
            ):
                # All done: restarts are counted on the container (the local runtime counts
                # the steps' and the command's together).
                done = {"terminated": {"exitCode": 0, "reason": "Completed"}}
                status["initContainerStatuses"] = [
                    _init_status(name, steps[name], state=done, ready=True) for name in steps
                ]
            if status != written:
                await self._patch_status(run, status)
                written = status
            if local.finished:
                return
            await asyncio.sleep(SYNC_INTERVAL)

    def _arm_deadline(self, run: PodRun) -> None:
        if run.deadline_task is not None:
            run.deadline_task.cancel()
            run.deadline_task = None
        if run.deadline and run.started is not None:
            run.deadline_task = self._spawn(self._deadline(run, run.started + run.deadline))

    async def _deadline(self, run: PodRun, at: float) -> None:
        await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
        if not (await self.local.status(run.namespace, run.name)).finished:
            run.deadline_hit = True
            await self.local.stop_all({POD_UID_LABEL: run.uid})

    async def _stop(self, run: PodRun, remove: bool) -> None:
        run.terminating = True
        for task in [*run.tasks, *([run.deadline_task] if run.deadline_task else [])]:
            task.cancel()
        run.endpoint = None
        await self.local.delete(run.namespace, run.name)
        if self.runs.get((run.namespace, run.name)) is run:
            del self.runs[(run.namespace, run.name)]
        if remove:
            await self._remove(run.namespace, run.name)

    async def _claim_exists(self, namespace: str, claim: str) -> bool:
        return (
            await self._get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
            is not None
        )

    # -- translation -------------------------------------------------------------------------

    async def _local_spec(self, pod: dict[str, Any]) -> dict[str, Any]:
        meta, spec = pod["metadata"], pod["spec"]
        container = spec["containers"][0]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        files: dict[str, str] = {}
        mounts: list[dict[str, Any]] = []
        local_volumes: list[dict[str, Any]] = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "secret" in volume:
                files.update(await self._secret_files(meta["namespace"], volume, mount))
            elif "projected" in volume:
                files.update(_identity_files(pod, mount["mountPath"]))
            else:
                mounts.append(mount)
                if not any(v["name"] == volume["name"] for v in local_volumes):
                    local_volumes.append(_local_volume(volume))
        env = await self._env_from(meta["namespace"], container.get("envFrom") or [])
        for var in container.get("env") or []:
            env[var["name"]] = var.get("value", "")
        ports = container.get("ports") or []
        server = bool(ports) or spec.get("restartPolicy") == "Always"
        probe = container.get("readinessProbe") or {}
        local: dict[str, Any] = {
            "kind": "server" if server else "job",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "command": container.get("command") or [],
            "args": container.get("args") or [],
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "image": container.get("image"),
            "resources": container.get("resources") or {},
            "volumeMounts": mounts,
            "volumes": local_volumes,
            "files": files,
            "restartPolicy": spec.get("restartPolicy", "Always"),
            "terminationGracePeriodSeconds": spec.get("terminationGracePeriodSeconds", 30),
            "labels": {POD_UID_LABEL: meta["uid"]},
        }
        if container.get("workingDir"):
            local["workingDir"] = container["workingDir"]
        # Init containers run first in the same local workload (its init steps); their mounts
        # are the main container's here (the runtime under test gives them the same).
        local["initContainers"] = [
            {
                "name": step["name"],
                "command": step.get("command") or [],
                "args": step.get("args") or [],
                "env": [{"name": e["name"], "value": e.get("value", "")} for e in step["env"]],
                "image": step.get("image"),
            }
            for step in spec.get("initContainers") or []
        ]
        if server:
            local["ports"] = [{"containerPort": p["containerPort"]} for p in ports]
            local["readinessProbe"] = _local_probe(probe)
        return local

    async def _secret_files(
        self, namespace: str, volume: dict[str, Any], mount: dict[str, Any]
    ) -> dict[str, str]:
        name = volume["secret"]["secretName"]
        secret = await self._get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        if secret is None:
            raise NotStartable(f'secret "{name}" not found')
        data = secret.get("data") or {}
        items = volume["secret"].get("items") or [{"key": k, "path": k} for k in data]
        return {
            f"{mount['mountPath'].rstrip('/')}/{item['path']}": base64.b64decode(
                data[item["key"]]
            ).decode()
            for item in items
        }

    async def _env_from(self, namespace: str, sources: list[dict[str, Any]]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in sources:
            prefix = source.get("prefix", "")
            for kind, ref_key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
                ref = source.get(ref_key)
                if not ref:
                    continue
                obj = await self._get(f"/api/v1/namespaces/{namespace}/{kind}/{ref['name']}")
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise NotStartable(f'{kind[:-1]} "{ref["name"]}" not found')
                for k, v in (obj.get("data") or {}).items():
                    env[prefix + k] = base64.b64decode(v).decode() if kind == "secrets" else v
        return env

    # -- status ------------------------------------------------------------------------------

    async def _pod_status(
        self, run: PodRun, local: WorkloadStatus, image: str, steps: dict[str, str]
    ) -> dict[str, Any]:
        """The pod's status from the local workload's; `steps` maps init containers to images."""
        ready = local.ready and local.phase == Phase.RUNNING
        container: dict[str, Any] = {
            "name": "workload",
            "image": image,
            "imageID": "",
            "restartCount": local.restart_count,
            "ready": ready,
            "started": local.phase == Phase.RUNNING,
        }
        status: dict[str, Any] = {"phase": local.phase.value, "startTime": run.start_time}
        status["reason"] = status["message"] = None
        if local.phase == Phase.PENDING:
            container["state"] = {"waiting": {"reason": "ContainerCreating"}}
        elif local.phase == Phase.RUNNING:
            if local.reason == "CrashLoopBackOff":
                container["state"] = {"waiting": {"reason": local.reason, "message": local.message}}
            else:
                container["state"] = {"running": {"startedAt": _stamp(local.start_time)}}
        else:
            container["state"] = {"terminated": await self._terminated(run, local)}
            if run.deadline_hit:
                status["reason"] = "DeadlineExceeded"
                status["message"] = "Pod was active on the node longer than the specified deadline"
        init = init_failure_statuses(local, steps)
        if init:  # an init step failed: the container never started
            container["state"] = {"waiting": {"reason": "PodInitializing"}}
            container["started"] = False
            container["restartCount"] = 0  # the init container's, not this one's
            status = {**status, "initContainerStatuses": init}
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": str(not init and local.reason != "PodInitializing")},
            {"type": "ContainersReady", "status": str(ready)},
            {"type": "Ready", "status": str(ready)},
        ]
        return {**status, "conditions": conditions, "containerStatuses": [container]}

    async def _terminated(self, run: PodRun, local: WorkloadStatus) -> dict[str, Any]:
        code = local.exit_code if local.exit_code is not None else 137
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed"
            if code == 0
            else ("OOMKilled" if local.reason == "OOMKilled" else "Error"),
            "startedAt": _stamp(local.start_time),
            "finishedAt": _stamp(local.finish_time),
        }
        if code != 0:  # FallbackToLogsOnError: the end of the log, at most 80 lines, 2 KiB
            tail = [line async for line in self.local.logs(run.namespace, run.name, tail=80)]
            terminated["message"] = "\n".join(tail)[-2048:]
        return terminated

    # -- logs and services -------------------------------------------------------------------

    async def serve_log(self, request: kmock.Request) -> Any:
        """``GET pods/{name}/log`` (kmock calls this for the subresource)."""
        run = self.runs.get((request.namespace or "", request.name or ""))
        if run is None or not run.applied:
            raise kmock.KubernetesError(
                400,
                "BadRequest",
                f'container "workload" in pod "{request.name}" is waiting to start',
            )
        tail = request.params.get("tailLines")
        lines = None if tail is None else int(tail)
        if request.params.get("previous") == "true":
            return b""  # every run's output is in the current log here
        if request.params.get("follow") == "true":
            return self._follow(run, lines)
        out = [line async for line in self.local.logs(run.namespace, run.name, tail=lines)]
        return "".join(f"{line}\n" for line in out).encode()

    async def _follow(self, run: PodRun, tail: int | None) -> AsyncIterator[bytes]:
        with contextlib.suppress(Exception):
            async for line in self.local.logs(run.namespace, run.name, tail=tail, follow=True):
                yield f"{line}\n".encode()

    def resolve_service(self, namespace: str, service: str, port: int) -> str:
        """Where the Service ``service`` leads: a ready pod it selects (emulated networking)."""
        key = (kmock.resource("", "v1", "services"), namespace, service)
        if key in self.server.objects and not self.server.objects[key].deleted:
            selector = (self.server.objects[key].raw.get("spec") or {}).get("selector") or {}
            for run in self.runs.values():
                if (
                    run.namespace == namespace
                    and run.endpoint
                    and all(run.labels.get(k) == v for k, v in selector.items())
                ):
                    return run.endpoint
        return service_endpoint(namespace, service, port)


def _claims(pod: Mapping[str, Any]) -> list[str]:
    return [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod.get("spec", {}).get("volumes") or []
        if v.get("persistentVolumeClaim")
    ]


def _local_volume(volume: Mapping[str, Any]) -> dict[str, Any]:
    if "persistentVolumeClaim" in volume:
        return {"name": volume["name"], "persistentVolumeClaim": volume["persistentVolumeClaim"]}
    if "emptyDir" in volume:
        return {"name": volume["name"], "emptyDir": {}}
    raise NotStartable(f"volume {volume['name']}: this emulated node mounts PVCs and emptyDirs")


def _local_probe(probe: Mapping[str, Any]) -> dict[str, Any]:
    local: dict[str, Any] = {
        "periodSeconds": probe.get("periodSeconds", 10),
        "timeoutSeconds": probe.get("timeoutSeconds", 1),
        "failureThreshold": probe.get("failureThreshold", 3),
        "initialDelaySeconds": probe.get("initialDelaySeconds", 0),
    }
    if "httpGet" in probe:
        local["httpGet"] = {"path": probe["httpGet"].get("path", "/")}
    return local


def _identity_files(pod: Mapping[str, Any], directory: str) -> dict[str, str]:
    """The projected identity volume. The token is a placeholder: no API server signs it."""
    meta = pod["metadata"]
    base = directory.rstrip("/")
    return {
        f"{base}/token": f"emulated-token.{meta['namespace']}.{meta['name']}.{meta['uid']}",
        f"{base}/namespace": meta["namespace"],
    }


def _init_status(name: str, image: str, **fields: Any) -> dict[str, Any]:
    """An init container's status with the fields the schema requires (an init container
    that exited 0 is ready, as the kubelet reports it)."""
    return {
        "name": name,
        "image": image,
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        **fields,
    }


def init_failure_statuses(local: WorkloadStatus, steps: dict[str, str]) -> list[dict[str, Any]]:
    """The failed init container's status, read from the local runtime's words for it
    ("init step 'NAME' exited with code N; last output: ..."), or none."""
    if local.reason not in ("InitError", "InitCrashLoopBackOff"):
        return []
    words = r"init step '([^']+)' exited with code (\d+)(?:; last output: (.*))?"
    found = re.search(words, local.message or "")
    assert found, local.message
    name, code, tail = found.group(1), int(found.group(2)), found.group(3) or ""
    terminated = {"exitCode": code, "reason": "Error", "message": tail}
    if local.reason == "InitError":
        return [_init_status(name, steps[name], state={"terminated": terminated})]
    return [
        _init_status(
            name,
            steps[name],
            restartCount=local.restart_count,
            state={"waiting": {"reason": "CrashLoopBackOff"}},
            lastState={"terminated": terminated},
        )
    ]


def _waiting(reason: str, message: str | None) -> dict[str, Any]:
    waiting: dict[str, Any] = {"reason": reason}
    if message:
        waiting["message"] = message
    return {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False"},
        ],
        "containerStatuses": [
            {
                "name": "workload",
                "image": "",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": waiting},
            }
        ],
    }


def _unschedulable(claim: str) -> dict[str, Any]:
    return {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found.',
            }
        ],
    }
