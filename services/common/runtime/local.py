"""LocalRuntime: workloads as sandboxed host processes, each under its own supervisor.

State lives on disk, under ``<state_dir>/runtime/``::

    workloads/<ns>/<name>/spec.json     the applied WorkloadSpec (written first: "it exists")
                          launch.json   the resolved argv/env/limits the supervisor runs
                          state.json    written only by the supervisor (atomic renames)
                          lock          flock held by the live supervisor
                          output.log    stdout + stderr of the workload
                          work/ tmp/ emptydir/<volume>/
    volumes/<ns>/<claim>/data           PersistentVolumeClaims (see volumes.py)

Because the supervisor, not this object, owns each workload, a service may die at any time:
the next LocalRuntime on the same state dir reads the same files and carries on (see
``adopt``). Completion is learnt from a pidfd on the supervisor, not by polling.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import local_network, netns, sandbox
from . import supervisor as supervisor_module
from .base import Runtime
from .endpoint import sandbox_endpoint
from .errors import WorkloadNotFound
from .expansion import expand
from .incluster import InClusterAPI
from .labels import LabelSelector, parse_selector
from .local_files import (
    LAUNCH,
    LOCK,
    LOG,
    SPEC,
    STATE,
    listdir,
    log_lines,
    read_inside,
    read_json,
    supervisor_alive,
    write_json_atomic,
)
from .local_identity import WorkloadIdentity
from .local_launch import container_port, init_step, probe_plan
from .local_mounts import LaunchError, cwd_mount, own_for_workload, resolve_mounts, volume_limits
from .local_quota import QUEUED, QuotaAdmission, QuotaFiles
from .models import (
    Phase,
    VolumeInfo,
    WorkloadSpec,
    WorkloadStatus,
    check_name,
    check_namespace,
)
from .quantity import parse_quantity
from .volumes import VolumeStore

log = logging.getLogger(__name__)

SUPERVISOR_PATH = os.path.abspath(supervisor_module.__file__)
#: Processes (threads included) one namespace's workloads may have at once (RLIMIT_NPROC).
DEFAULT_MAX_PROCESSES = 4096
SECRETS = "secrets"
TOKEN_REFRESH_SECONDS = 30.0
#: How often a workload's supervisor measures the claims it writes to (their sizes).
VOLUME_CHECK_SECONDS = 1.0
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


class LocalRuntime(QuotaAdmission, Runtime):
    """Runs workloads on this host; see the module docstring and :class:`Runtime`.

    ``bwrap_path`` is the bubblewrap executable. Without a working one every workload fails
    with ``SandboxUnavailable`` and an install hint: nothing runs unsandboxed (sandbox.py).
    ``backoff_base``/``backoff_max`` shape the restart back-off of servers in seconds;
    ``max_processes`` caps one namespace's processes (RLIMIT_NPROC of its uid).
    """

    name = "local"

    def __init__(
        self,
        state_dir: Path | str,
        *,
        bwrap_path: str | None = "bwrap",
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        python_bin_dir: str | None = None,
        workload_env: Callable[[str], Mapping[str, str]] | None = None,
        workload_tokens: Callable[[str, str], str] | None = None,
        max_processes: int = DEFAULT_MAX_PROCESSES,
        store_endpoint: str | None = None,
        in_cluster: InClusterAPI | None = None,
    ) -> None:
        """``workload_env(namespace)`` adds platform variables to every workload's environment
        (the service-account token and the API's URL; see services.common.serviceaccounts);
        ``in_cluster`` gives workloads with a token the standard in-cluster layout too."""
        self.root = Path(state_dir).resolve() / "runtime"
        self.workload_env = workload_env
        self.workload_tokens = workload_tokens
        self._store_egress, self._store_hosts = sandbox.store_egress(store_endpoint)
        self.in_cluster = in_cluster if workload_tokens is not None else None
        self.identity = (
            WorkloadIdentity(workload_tokens, self.in_cluster) if workload_tokens else None
        )
        if self.in_cluster is not None:
            self._store_hosts = {**InClusterAPI.hosts(), **self._store_hosts}
        self._refresher: asyncio.Task[None] | None = None
        self.workloads_root = self.root / "workloads"
        self.volumes = VolumeStore(self.root / "volumes")
        self.quotas = QuotaFiles(self.root / "quotas")
        self.workloads_root.mkdir(parents=True, exist_ok=True)
        # Workloads run as other users (root) or see none of this (otherwise): either way the
        # runtime's files are the platform's alone.
        self.root.chmod(0o700)
        self.bwrap_path = bwrap_path
        self.max_processes = max_processes
        self.privileged = os.geteuid() == 0
        self.uids = sandbox.UidMap(self.root)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.python_bin_dir = python_bin_dir or os.path.dirname(sys.executable)
        # The platform's virtualenv is visible read-only in every sandbox.
        self.python = sys.executable
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._spawned: dict[Path, subprocess.Popen[bytes]] = {}  # our own live supervisors
        #: Workloads waiting for room in their namespace's quota, in the order they came.
        self._queued: dict[Path, None] = {}
        self._queue_task: asyncio.Task[None] | None = None
        self._adopted = False
        self._etc_dirs: dict[int, str] = {}

    @functools.cached_property
    def _bwrap(self) -> str:
        exe = sandbox.find_bwrap(self.bwrap_path)
        assert exe is not None, "probe() found it"
        return exe

    @functools.cached_property
    def _setpriv(self) -> str:
        return shutil.which("setpriv") or "/usr/bin/setpriv"

    @functools.cached_property
    def _seccomp(self) -> str:
        return sandbox.write_seccomp(self.root)

    @functools.cached_property
    def _system_mounts(self) -> tuple[list[list[str]], list[list[str]]]:
        return sandbox.system_mounts()

    def _etc_for(self, uid: int, gid: int) -> str:
        """The workload user's /etc (built once per runtime and uid)."""
        if uid not in self._etc_dirs:
            self._etc_dirs[uid] = str(
                sandbox.build_etc(self.root / "etc" / str(uid), uid, gid, self._store_hosts)
            )
        return self._etc_dirs[uid]

    # -- paths and small helpers -------------------------------------------------------------

    def _dir(self, namespace: str, name: str) -> Path:
        return self.workloads_root / check_namespace(namespace) / check_name(name)

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def _reap(self) -> None:
        """Collect exited supervisors we started, so they do not linger as zombies."""
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]
        for wdir, child in list(self._spawned.items()):
            if child.returncode is not None:
                del self._spawned[wdir]

    def _never_started(self, wdir: Path) -> bool:
        """Applied, but no supervisor took it (the service died between spec and launch)."""
        own = self._spawned.get(wdir)
        if own is not None and own.poll() is None:
            return False  # ours, still starting up
        return read_json(wdir / STATE) is None and not supervisor_alive(wdir / LOCK)

    # -- adoption ----------------------------------------------------------------------------

    async def adopt(self) -> list[WorkloadStatus]:
        """Take over the workloads found on disk after a restart; return their statuses.

        Running workloads need nothing (their supervisors never depended on us). A workload
        that was applied but whose supervisor never started is started now; one whose
        supervisor vanished without writing an exit code is marked Failed (SupervisorLost).
        """
        self._adopted = True
        found: list[WorkloadStatus] = []
        for wdir in self._workload_dirs():
            if not (wdir / SPEC).exists():
                continue
            ns, name = wdir.parent.name, wdir.name
            async with self._lock(ns, name):
                if self._never_started(wdir):
                    await self._launch(wdir, self._read_spec(wdir))
                elif QUEUED in (read_json(wdir / STATE) or {}):
                    self._queue(wdir)
            found.append(await self.status(ns, name))
        running = sum(1 for s in found if not s.finished)
        if found:
            log.info("runtime adopted %d workloads (%d still running)", len(found), running)
        return found

    def _workload_dirs(self, namespace: str | None = None) -> builtins.list[Path]:
        """``<ns>/<name>`` directories, sorted; a delete's hidden trash (``.deleted-*``) and
        directories vanishing while we look are skipped."""
        namespaces = [check_namespace(namespace)] if namespace else listdir(self.workloads_root)
        return [
            self.workloads_root / ns / name
            for ns in namespaces
            if not ns.startswith(".")
            for name in listdir(self.workloads_root / ns)
            if not name.startswith(".")
        ]

    async def _ensure_adopted(self) -> None:
        if not self._adopted:
            await self.adopt()
        if self.workload_tokens is not None and self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    # -- apply -------------------------------------------------------------------------------

    async def apply(self, spec: WorkloadSpec | Mapping[str, Any]) -> WorkloadStatus:
        if not isinstance(spec, WorkloadSpec):
            spec = WorkloadSpec.model_validate(spec)
        await self._ensure_adopted()
        self._reap()
        wdir = self._dir(spec.namespace, spec.name)
        async with self._lock(spec.namespace, spec.name):
            if (wdir / SPEC).exists():
                # Same (namespace, name): never a second process. Only a workload whose
                # supervisor never got going (crash between spec and launch) is started.
                if self._never_started(wdir):
                    await self._launch(wdir, self._read_spec(wdir))
                return await self.status(spec.namespace, spec.name)
            wdir.mkdir(parents=True, exist_ok=True)
            if not self._admit(wdir, spec):
                return await self.status(spec.namespace, spec.name)
            if spec.image:
                log.info(
                    "workload %s/%s: image %s is recorded, not pulled (local runtime)",
                    spec.namespace,
                    spec.name,
                    spec.image,
                )
            await self._launch(wdir, spec)
        return await self.status(spec.namespace, spec.name)

    async def ensure_namespace(
        self, namespace: str, owner: str, quota: Mapping[str, str] | None = None
    ) -> None:
        self.quotas.set(check_namespace(namespace), quota)

    async def delete_namespace(self, namespace: str) -> None:
        self.quotas.set(check_namespace(namespace), None)

    def _read_spec(self, wdir: Path) -> WorkloadSpec:
        return WorkloadSpec.model_validate_json((wdir / SPEC).read_text())

    def _workload_specs(self, namespace: str | None) -> Iterator[tuple[Path, WorkloadSpec]]:
        """Each workload's directory and spec; one half-written or vanishing is skipped."""
        for wdir in self._workload_dirs(namespace):
            try:
                spec = self._read_spec(wdir)
            except (FileNotFoundError, ValueError):
                continue
            yield wdir, spec

    async def _launch(self, wdir: Path, spec: WorkloadSpec) -> None:
        try:
            launch = self._resolve_launch(wdir, spec)
        except LaunchError as exc:
            log.warning("workload %s/%s cannot start: %s", spec.namespace, spec.name, exc.message)
            write_json_atomic(
                wdir / STATE,
                {
                    "phase": Phase.FAILED.value,
                    "reason": exc.reason,
                    "message": exc.message,
                    "finishTime": time.time(),
                    "restartCount": 0,
                },
            )
            return
        write_json_atomic(wdir / LAUNCH, launch)
        # Popen (vfork + exec of a lean interpreter) takes about a millisecond; a thread hop
        # would cost more than it saves.
        with open(wdir / "supervisor.log", "ab") as errlog:  # noqa: ASYNC230
            child = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-I", "-S", SUPERVISOR_PATH, str(wdir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errlog,
                cwd=wdir,
                env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
                start_new_session=True,
                close_fds=True,
            )
        self._children[child.pid] = child
        self._spawned[wdir] = child

    def _resolve_launch(self, wdir: Path, spec: WorkloadSpec) -> dict[str, Any]:
        """Turn the spec into the supervisor's launch plan; LaunchError for user errors."""
        problem = sandbox.probe(self.bwrap_path)
        if problem is not None:
            raise LaunchError("SandboxUnavailable", problem)
        uid = self.uids.uid_for(spec.namespace) if self.privileged else None
        os.chmod(wdir, 0o700)  # the launch plan, the token and the logs: the platform's alone
        work, tmp = wdir / "work", wdir / "tmp"
        for path in (work, tmp):
            path.mkdir(exist_ok=True)
            own_for_workload(path, uid)
        mounts = resolve_mounts(self.volumes, wdir, spec, uid)
        limits = volume_limits(self.volumes, spec)
        cwd_inside = spec.working_dir or sandbox.DEFAULT_HOME
        port = container_port(spec) if spec.kind == "server" else None
        env = {
            "PATH": f"{self.python_bin_dir}:{SYSTEM_PATH}",
            "HOME": cwd_inside,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }
        if port is not None:
            env["PORT"] = str(port)
            env[netns.LOCAL_SOCKET_ENV] = "@" + netns.local_socket_name(port)[1:]
        egress = self._platform_env(spec.namespace, env, port)
        binding = f"{spec.namespace}/{spec.name}/{uuid.uuid4().hex[:12]}"
        if self.identity is not None:
            mounts += self.identity.mounts(wdir / SECRETS, spec.namespace, binding, uid)
            env.update(self.identity.env())
        for var in spec.env:  # later entries may refer to earlier ones, as in Kubernetes
            env[var.name] = expand(var.value, env)
        argv = [expand(a, env) for a in [*spec.command, *spec.args]]
        mounts.append(cwd_mount(cwd_inside, mounts, work))
        ro_binds, links = self._system_mounts
        user, group = (uid, uid) if uid is not None else (os.getuid(), os.getgid())
        ro_binds = [*ro_binds, [self._etc_for(user, group), "/etc"]]
        box = {
            "base": sandbox.base_argv(self._bwrap, self.privileged),
            "roBinds": ro_binds,
            "symlinks": links,
            "binds": [{"src": str(tmp), "dst": "/tmp", "ro": False}, *mounts],
            "files": [{"dst": dst, "data": data} for dst, data in spec.files.items()],
            "seccomp": self._seccomp,
            "cwd": cwd_inside,
            "hostname": spec.name[:63],
            "uid": uid,
            "dropPrivileges": sandbox.drop_privileges_argv(self._setpriv, uid, uid)
            if uid is not None
            else [],
            "egress": egress,
        }
        local_network.plan(self.root, spec, ro_binds[-1][0], box)  # a group's shared network
        memory = spec.resources.limits.get("memory")
        memory_bytes = int(parse_quantity(memory, "resources.limits.memory")) if memory else None
        cpu = spec.resources.limits.get("cpu")
        cgroup = sandbox.cgroup_plan(
            hashlib.sha256(str(wdir).encode()).hexdigest()[:16],
            parse_quantity(cpu, "resources.limits.cpu") if cpu else None,
            memory_bytes,
            self.max_processes,
        )
        storage = spec.resources.limits.get("ephemeral-storage")
        return {
            "kind": spec.kind,
            "argv": argv,
            "env": env,
            "init": [init_step(step, env) for step in spec.init_containers],
            "cwd": str(wdir),
            "log": str(wdir / LOG),
            "port": port,
            "endpoint": str(self._endpoint_path(wdir)) if port is not None else None,
            "sandbox": box,
            "binding": binding,
            "probe": probe_plan(spec.readiness_probe),
            "restartPolicy": spec.effective_restart_policy,
            "backoffLimit": spec.backoff_limit if spec.kind == "job" else None,
            "backoffBase": self.backoff_base,
            "backoffMax": self.backoff_max,
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "grace": spec.termination_grace_period_seconds,
            # A memory cgroup counts what is resident; without one, address space is the
            # bound (stricter for programs that reserve much and touch little).
            "cgroup": cgroup,
            "rlimitAs": memory_bytes if cgroup is None else None,
            "rlimitFsize": int(parse_quantity(storage, "resources.limits.ephemeral-storage"))
            if storage
            else None,
            "rlimitNproc": self.max_processes,
            # Claims' sizes, which no filesystem enforces here: the supervisor measures.
            "volumeLimits": limits,
            "volumeCheckSeconds": VOLUME_CHECK_SECONDS,
        }

    def workload_gateway_url(self, namespace: str) -> str | None:
        """The API address of the sandbox's own network, which the supervisor relays to
        the gateway (and to nothing else); None without a gateway to relay to."""
        if self.workload_env is None:
            return None
        if not urlsplit(self.workload_env(namespace).get("SHIPYARD_URL", "")).hostname:
            return None
        host, api_port = sandbox.API_ADDRESS
        return f"http://{host}:{api_port}"

    def _platform_env(
        self, namespace: str, env: dict[str, str], port: int | None
    ) -> list[dict[str, Any]]:
        """Add the platform's variables to ``env``; the egress relays the supervisor runs
        (the API, in-cluster too, and the object store), and nothing else of the network."""
        egress: list[dict[str, Any]] = []
        if self.workload_env is not None:
            platform_env = dict(self.workload_env(namespace))
            gateway = urlsplit(platform_env.get("SHIPYARD_URL", ""))
            inside = self.workload_gateway_url(namespace)
            if gateway.hostname and inside is not None:
                # Inside, the API is a loopback address of the sandbox's own network; the
                # supervisor forwards it to the gateway and to nothing else.
                host, api_port = sandbox.API_ADDRESS
                egress.append(
                    {"listen": [host, api_port], "connect": [gateway.hostname, gateway.port or 80]}
                )
                platform_env["SHIPYARD_URL"] = inside
            env.update(platform_env)
        if self.in_cluster is not None:  # what a pod has (incluster.py)
            egress += self.in_cluster.egress(port)
        if self._store_egress is not None:
            egress.append(self._store_egress)
        return egress

    async def refresh_tokens(self) -> int:
        """Rewrite tokens older than half their life in running workloads; drop finished
        workloads' tokens. Returns how many were rewritten."""
        if self.identity is None:
            return 0
        from .config import WORKLOAD_TOKEN_TTL_SECONDS

        rewritten = 0
        for wdir in self._workload_dirs():
            token = wdir / SECRETS / "token"
            try:
                age = time.time() - token.stat().st_mtime
                spec = self._read_spec(wdir)
            except (FileNotFoundError, ValueError):
                continue
            if self._status_from(wdir, spec).finished:
                token.unlink(missing_ok=True)
                continue
            if age < WORKLOAD_TOKEN_TTL_SECONDS / 2:
                continue
            launch = read_json(wdir / LAUNCH) or {}
            box = launch.get("sandbox") or {}
            if launch.get("binding"):
                self.identity.write_token(
                    wdir / SECRETS, spec.namespace, launch["binding"], box.get("uid")
                )
                rewritten += 1
        return rewritten

    async def run_is_live(self, binding: str) -> bool:
        parts = binding.split("/")
        if len(parts) != 3:
            return False
        namespace, name, _ = parts
        try:
            wdir = self._dir(namespace, name)
            spec = self._read_spec(wdir)
        except (ValueError, FileNotFoundError):
            return False
        launch = read_json(wdir / LAUNCH) or {}
        return launch.get("binding") == binding and not self._status_from(wdir, spec).finished

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(TOKEN_REFRESH_SECONDS)
            try:
                await self.refresh_tokens()
            except Exception:  # noqa: BLE001 - keep refreshing; the next round retries
                log.exception("refreshing workload tokens failed")

    def _endpoint_path(self, wdir: Path) -> Path:
        digest = hashlib.sha256(str(wdir).encode()).hexdigest()[:32]
        return self._socket_dir / f"{digest}.sock"

    @functools.cached_property
    def _socket_dir(self) -> Path:
        return sandbox.socket_dir()

    # -- status and waiting ------------------------------------------------------------------

    async def status(self, namespace: str, name: str) -> WorkloadStatus:
        wdir = self._dir(namespace, name)
        try:
            spec = self._read_spec(wdir)
        except FileNotFoundError:
            raise WorkloadNotFound(namespace, name) from None
        return self._status_from(wdir, spec)

    def _status_from(self, wdir: Path, spec: WorkloadSpec) -> WorkloadStatus:
        state = read_json(wdir / STATE) or {}
        phase = Phase(state.get("phase", Phase.PENDING.value))
        if (
            not phase.finished
            and state
            and QUEUED not in state
            and not supervisor_alive(wdir / LOCK)
        ):
            # Re-read: the supervisor may have written its final state and exited just now.
            state = read_json(wdir / STATE) or {}
            phase = Phase(state.get("phase", Phase.PENDING.value))
            if not phase.finished:
                state = self._mark_lost(wdir, state)
                phase = Phase.FAILED
        ready = bool(state.get("ready")) and phase == Phase.RUNNING
        return WorkloadStatus(
            namespace=spec.namespace,
            name=spec.name,
            kind=spec.kind,
            phase=phase,
            ready=ready,
            exit_code=state.get("exitCode"),
            start_time=_ts(state.get("startTime")),
            finish_time=_ts(state.get("finishTime")),
            reason=state.get("reason"),
            message=state.get("message"),
            endpoint=sandbox_endpoint(str(self._endpoint_path(wdir)))
            if ready and spec.kind == "server"
            else None,
            restart_count=int(state.get("restartCount") or 0),
            image=spec.image,
            labels=spec.labels,
            owner=spec.owner,
        )

    @staticmethod
    def _kill_orphaned_workload(state: dict[str, Any]) -> None:
        """SIGKILL the process group of a workload whose supervisor is gone.

        bwrap's --die-with-parent usually got there first; not if the supervisor died before
        bwrap armed it, nor for unsandboxed workloads. The recorded start time guards against
        a recycled pid.
        """
        pid, started = state.get("pid"), state.get("pidStart")
        if pid and started and supervisor_module.proc_start_time(int(pid)) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)

    def _mark_lost(self, wdir: Path, state: dict[str, Any]) -> dict[str, Any]:
        self._kill_orphaned_workload(state)
        supervisor_module.cgroup_remove((read_json(wdir / LAUNCH) or {}).get("cgroup"))
        state = {
            **state,
            "phase": Phase.FAILED.value,
            "reason": "SupervisorLost",
            "message": "the workload's supervisor stopped without recording an exit code "
            "(host reboot or killed); apply it again after deleting it",
            "finishTime": time.time(),
            "ready": False,
        }
        write_json_atomic(wdir / STATE, state)
        return state

    async def wait(
        self,
        namespace: str,
        name: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the contract asks for it
        *,
        ready: bool = False,
    ) -> WorkloadStatus:
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        wdir = self._dir(namespace, name)
        while True:
            status = await self.status(namespace, name)
            if status.finished or (ready and status.ready):
                self._reap()
                return status
            left = None if end is None else end - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError(
                    f"workload {namespace}/{name} still {status.phase.value} after {timeout}s"
                )
            own = self._spawned.get(wdir)
            if own is not None and own.poll() is not None:
                own = None  # reaped: its pid may belong to anyone now
            state = read_json(wdir / STATE) or {}
            sup_pid = state.get("supervisorPid")
            if QUEUED in state:
                # Waiting for room in its quota: admission is tried once a second.
                await asyncio.sleep(0.2 if left is None else min(0.2, left))
            elif ready or (own is None and sup_pid is None):
                # Readiness is a file change, and a supervisor started by an earlier runtime
                # has no pid on record before its first write: short sleeps, bounded.
                await asyncio.sleep(0.01 if left is None else min(0.01, left))
            elif own is not None:
                await self._wait_pid_exit(own.pid, wdir, left, own=True)
                own.poll()
            elif sup_pid is not None:
                await self._wait_pid_exit(int(sup_pid), wdir, left)

    async def _wait_pid_exit(
        self, pid: int, wdir: Path, limit: float | None, own: bool = False
    ) -> None:
        """Sleep until process ``pid`` (our workload's supervisor) exits, or timeout.

        ``own``: the supervisor is our unreaped child, so its pid cannot have been reused.
        """
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            # Otherwise the pid is the supervisor's only while it holds the lock (pid reuse).
            if not own and not supervisor_alive(wdir / LOCK):
                return
            loop = asyncio.get_running_loop()
            exited = loop.create_future()

            def on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, on_exit)
            try:
                # Not wait_for: before Python 3.12 it drops a cancel that comes in the loop turn
                # the process exits (python/cpython#86296), and a controller worker stopped then
                # carries on and holds up its service's stop forever (tests/automl/test_stop.py).
                async with asyncio.timeout(limit):
                    await exited
            except TimeoutError:
                pass
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)

    # -- delete and stop ---------------------------------------------------------------------

    async def _stop(self, wdir: Path, grace: float) -> None:
        """SIGTERM the supervisor (which stops the tree) and wait; SIGKILL everything if stuck.
        A workload still waiting for room in its quota is marked stopped, and never starts."""
        if self._unqueue(wdir):
            return
        end = time.monotonic() + 2.0
        # A supervisor that was just spawned has no state yet: give it a moment to record it.
        own = self._spawned.get(wdir)
        while read_json(wdir / STATE) is None and time.monotonic() < end:
            if own is None or own.poll() is not None:
                break
            await asyncio.sleep(0.01)
        state = read_json(wdir / STATE) or {}
        sup_pid = state.get("supervisorPid")
        if sup_pid and supervisor_alive(wdir / LOCK):
            with contextlib.suppress(ProcessLookupError):
                os.kill(sup_pid, signal.SIGTERM)
            await self._wait_pid_exit(sup_pid, wdir, grace + 5.0)
            if supervisor_alive(wdir / LOCK):
                log.warning("supervisor %s of %s ignored SIGTERM; killing it", sup_pid, wdir)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(sup_pid, signal.SIGKILL)
        self._kill_orphaned_workload(read_json(wdir / STATE) or state)
        self._reap()

    async def delete(self, namespace: str, name: str) -> None:
        await self._ensure_adopted()
        wdir = self._dir(namespace, name)
        async with self._lock(namespace, name):
            if not wdir.exists():
                return
            grace = 5.0
            with contextlib.suppress(Exception):
                grace = self._read_spec(wdir).termination_grace_period_seconds
            await self._stop(wdir, grace)
            self._endpoint_path(wdir).unlink(missing_ok=True)
            # A supervisor that was killed could not remove its workload's cgroups.
            supervisor_module.cgroup_remove((read_json(wdir / LAUNCH) or {}).get("cgroup"))
            # Rename first so the name is free at once and a half-removed tree is never seen.
            trash = self.workloads_root / f".deleted-{uuid.uuid4().hex}"
            os.replace(wdir, trash)
            await asyncio.to_thread(shutil.rmtree, trash, True)

    async def stop_all(self, label_selector: LabelSelector = None) -> builtins.list[WorkloadStatus]:
        await self._ensure_adopted()
        targets = [s for s in await self.list(label_selector) if not s.finished]

        async def stop(status: WorkloadStatus) -> WorkloadStatus:
            wdir = self._dir(status.namespace, status.name)
            async with self._lock(status.namespace, status.name):
                await self._stop(wdir, self._read_spec(wdir).termination_grace_period_seconds)
            return await self.status(status.namespace, status.name)

        return list(await asyncio.gather(*(stop(s) for s in targets)))

    async def close(self) -> None:
        for task in (self._refresher, self._queue_task):
            if task is not None:
                task.cancel()
        self._refresher = self._queue_task = None
        self._reap()

    # -- list and logs -----------------------------------------------------------------------

    async def list(
        self, label_selector: LabelSelector = None, namespace: str | None = None
    ) -> builtins.list[WorkloadStatus]:
        match = parse_selector(label_selector)
        return [
            self._status_from(wdir, spec)
            for wdir, spec in self._workload_specs(namespace)
            if match(spec.labels)
        ]

    async def volume_users(self, namespace: str, claim: str) -> builtins.list[str]:
        users: builtins.list[str] = []
        for wdir, spec in self._workload_specs(namespace):
            mounts = any(
                v.persistent_volume_claim and v.persistent_volume_claim.claim_name == claim
                for v in spec.volumes
            )
            if mounts and not self._status_from(wdir, spec).finished:
                users.append(spec.name)
        return users

    async def logs(
        self, namespace: str, name: str, tail: int | None = None, follow: bool = False
    ) -> AsyncIterator[str]:
        wdir = self._dir(namespace, name)
        if not (wdir / SPEC).exists():
            raise WorkloadNotFound(namespace, name)

        async def finished() -> bool | None:
            try:
                return (await self.status(namespace, name)).finished
            except WorkloadNotFound:
                return None

        async for line in log_lines(wdir / LOG, tail, follow, finished):
            yield line

    # -- volumes -----------------------------------------------------------------------------

    async def create_volume(
        self,
        namespace: str,
        name: str,
        size: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> VolumeInfo:
        return await asyncio.to_thread(self._create_volume, namespace, name, size, labels)

    async def delete_volume(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self.volumes.delete, namespace, name)

    async def list_volumes(
        self, namespace: str | None = None, label_selector: LabelSelector = None
    ) -> builtins.list[VolumeInfo]:
        return self.volumes.list(namespace, label_selector)

    async def resolve_volume(self, namespace: str, name: str) -> Path:
        """The host directory of a volume: for this runtime and its tests, never for callers
        of the Runtime interface (they use read_file, files and the object store)."""
        return self.volumes.resolve(namespace, name)

    async def read_file(
        self, namespace: str, claim: str, path: str, max_bytes: int = 1024 * 1024
    ) -> bytes:
        root = self.volumes.resolve(namespace, claim)
        return await asyncio.to_thread(read_inside, root, path, max_bytes)
