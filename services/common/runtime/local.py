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
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import sandbox
from . import supervisor as supervisor_module
from .base import Runtime
from .endpoint import sandbox_endpoint
from .errors import VolumeNotFound, WorkloadNotFound
from .expansion import expand
from .incluster import PIPELINES_TOKEN_DIR, InClusterAPI
from .labels import LabelSelector, parse_selector
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
SPEC, LAUNCH, STATE, LOCK, LOG = "spec.json", "launch.json", "state.json", "lock", "output.log"
#: The port a server listens on inside its own network namespace, unless it declares one.
DEFAULT_SERVER_PORT = 8080
#: Processes (threads included) one namespace's workloads may have at once (RLIMIT_NPROC).
DEFAULT_MAX_PROCESSES = 4096
SECRETS = "secrets"
#: Where a workload finds its token, as in a Kubernetes pod.
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_REFRESH_SECONDS = 30.0
#: How often a workload's supervisor measures the claims it writes to (their sizes).
VOLUME_CHECK_SECONDS = 1.0
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FOLLOW_INTERVAL = 0.05
LOG_CHUNK = 64 * 1024


class LaunchError(Exception):
    """A problem the user can fix; becomes a Failed status with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _container_port(spec: WorkloadSpec) -> int:
    """The server's port inside its sandbox: its first declared containerPort, else 8080."""
    for port in spec.ports:
        if port.container_port:
            return int(port.container_port)
    return DEFAULT_SERVER_PORT


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:  # only a torn write by a crashed *runtime* (never supervisor)
        return None


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


class LocalRuntime(Runtime):
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
        if self.in_cluster is not None:
            self._store_hosts = {**InClusterAPI.hosts(), **self._store_hosts}
        self._refresher: asyncio.Task[None] | None = None
        self.workloads_root = self.root / "workloads"
        self.volumes = VolumeStore(self.root / "volumes")
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
        return _read_json(wdir / STATE) is None and not self._supervisor_alive(wdir)

    @staticmethod
    def _supervisor_alive(wdir: Path) -> bool:
        """The supervisor holds an exclusive flock on ``lock`` for exactly its lifetime."""
        try:
            fd = os.open(wdir / LOCK, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases our probe lock if we got it
        return False

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
            found.append(await self.status(ns, name))
        running = sum(1 for s in found if not s.finished)
        if found:
            log.info("runtime adopted %d workloads (%d still running)", len(found), running)
        return found

    def _workload_dirs(self, namespace: str | None = None) -> builtins.list[Path]:
        """``<ns>/<name>`` directories, sorted; a delete's hidden trash (``.deleted-*``) and
        directories vanishing while we look are skipped."""
        namespaces = [check_namespace(namespace)] if namespace else _listdir(self.workloads_root)
        return [
            self.workloads_root / ns / name
            for ns in namespaces
            if not ns.startswith(".")
            for name in _listdir(self.workloads_root / ns)
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
            _write_json_atomic(wdir / SPEC, spec.model_dump(mode="json", by_alias=True))
            if spec.image:
                log.info(
                    "workload %s/%s: image %s is recorded, not pulled (local runtime)",
                    spec.namespace,
                    spec.name,
                    spec.image,
                )
            await self._launch(wdir, spec)
        return await self.status(spec.namespace, spec.name)

    def _read_spec(self, wdir: Path) -> WorkloadSpec:
        return WorkloadSpec.model_validate_json((wdir / SPEC).read_text())

    async def _launch(self, wdir: Path, spec: WorkloadSpec) -> None:
        try:
            launch = self._resolve_launch(wdir, spec)
        except LaunchError as exc:
            log.warning("workload %s/%s cannot start: %s", spec.namespace, spec.name, exc.message)
            _write_json_atomic(
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
        _write_json_atomic(wdir / LAUNCH, launch)
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
            self._own(path, uid)
        mounts = self._resolve_mounts(wdir, spec, uid)
        volume_limits = self._volume_limits(spec)
        cwd_inside = spec.working_dir or sandbox.DEFAULT_HOME
        port = _container_port(spec) if spec.kind == "server" else None
        env = {
            "PATH": f"{self.python_bin_dir}:{SYSTEM_PATH}",
            "HOME": cwd_inside,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }
        if port is not None:
            env["PORT"] = str(port)
        egress = self._platform_env(spec.namespace, env)
        binding = f"{spec.namespace}/{spec.name}/{uuid.uuid4().hex[:12]}"
        if self.workload_tokens is not None:
            identity = self._identity_mount(wdir, spec.namespace, binding, uid)
            mounts.append(identity)
            env["SHIPYARD_TOKEN_FILE"] = f"{TOKEN_DIR}/token"
            if self.in_cluster is not None:  # what a pod has (incluster.py)
                env.update(self.in_cluster.env())
                egress += self.in_cluster.egress(port)
                mounts.append({**identity, "dst": PIPELINES_TOKEN_DIR})
        for var in spec.env:  # later entries may refer to earlier ones, as in Kubernetes
            env[var.name] = expand(var.value, env)
        argv = [expand(a, env) for a in [*spec.command, *spec.args]]
        mounts.append(self._cwd_mount(cwd_inside, mounts, work))
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
        probe = spec.readiness_probe
        return {
            "kind": spec.kind,
            "argv": argv,
            "env": env,
            "cwd": str(wdir),
            "log": str(wdir / LOG),
            "port": port,
            "endpoint": str(self._endpoint_path(wdir)) if port is not None else None,
            "sandbox": box,
            "binding": binding,
            "probe": {
                "path": probe.http_get.path if probe.http_get else None,
                "initialDelay": probe.initial_delay_seconds,
                "period": probe.period_seconds,
                "timeout": probe.timeout_seconds,
                "failureThreshold": probe.failure_threshold,
            }
            if probe
            else None,
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
            "volumeLimits": volume_limits,
            "volumeCheckSeconds": VOLUME_CHECK_SECONDS,
        }

    def _platform_env(self, namespace: str, env: dict[str, str]) -> list[dict[str, Any]]:
        """Add the platform's variables to ``env``; the egress relays the supervisor runs
        (the API, the object store), and nothing else of the network."""
        egress: list[dict[str, Any]] = []
        if self.workload_env is not None:
            platform_env = dict(self.workload_env(namespace))
            gateway = urlsplit(platform_env.get("SHIPYARD_URL", ""))
            if gateway.hostname:
                # Inside, the API is a loopback address of the sandbox's own network; the
                # supervisor forwards it to the gateway and to nothing else.
                host, api_port = sandbox.API_ADDRESS
                egress.append(
                    {"listen": [host, api_port], "connect": [gateway.hostname, gateway.port or 80]}
                )
                platform_env["SHIPYARD_URL"] = f"http://{host}:{api_port}"
            env.update(platform_env)
        if self._store_egress is not None:
            egress.append(self._store_egress)
        return egress

    def _identity_mount(
        self, wdir: Path, namespace: str, binding: str, uid: int | None
    ) -> dict[str, Any]:
        """The workload's token and namespace files, in the in-cluster layout (read-only)."""
        secrets = wdir / SECRETS
        secrets.mkdir(exist_ok=True)
        self._write_token(secrets, namespace, binding, uid)
        (secrets / "namespace").write_text(namespace)
        files = ["namespace"]
        if self.in_cluster is not None:  # the CA's certificate, never its key
            (secrets / "ca.crt").write_bytes(self.in_cluster.ca_pem)
            files.append("ca.crt")
        if uid is not None:
            for name in files:
                os.chown(secrets / name, uid, uid)
            os.chown(secrets, uid, uid)
        # Read-only for the workload's uid; root refreshes it all the same. An unprivileged
        # platform shares its uid with the workload and must keep writing here.
        secrets.chmod(0o500 if uid is not None else 0o700)
        return {"src": str(secrets), "dst": TOKEN_DIR, "ro": True}

    def _write_token(self, secrets: Path, namespace: str, binding: str, uid: int | None) -> None:
        """(Re)write the workload's token file atomically: readers see the old or the new."""
        assert self.workload_tokens is not None
        token = self.workload_tokens(namespace, binding)
        tmp = secrets / f".token.{uuid.uuid4().hex[:8]}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        if uid is not None:
            os.chown(tmp, uid, uid)
        os.replace(tmp, secrets / "token")

    async def refresh_tokens(self) -> int:
        """Rewrite tokens older than half their life in running workloads; drop finished
        workloads' tokens. Returns how many were rewritten."""
        if self.workload_tokens is None:
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
            launch = _read_json(wdir / LAUNCH) or {}
            box = launch.get("sandbox") or {}
            if launch.get("binding"):
                self._write_token(wdir / SECRETS, spec.namespace, launch["binding"], box.get("uid"))
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
        launch = _read_json(wdir / LAUNCH) or {}
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

    @staticmethod
    def _own(path: Path, uid: int | None) -> None:
        """Hand a directory the workload writes to its uid (root only), private to it."""
        if uid is not None:
            st = path.stat()
            if st.st_uid != uid:
                os.chown(path, uid, uid)
            path.chmod(0o700)

    def _cwd_mount(self, cwd: str, mounts: list[dict[str, Any]], work: Path) -> dict[str, Any]:
        """The working directory: the workload's own ``work`` directory there, unless it lies
        inside one of its mounts."""
        if not any(cwd == m["dst"] or cwd.startswith(m["dst"] + "/") for m in mounts):
            return {"src": str(work), "dst": cwd, "ro": False}
        return self._cwd_in_mounts(cwd, mounts)

    @staticmethod
    def _cwd_in_mounts(path: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
        """A working directory inside a volume mount: the same volume, one level deeper."""
        for mount in sorted(mounts, key=lambda m: len(m["dst"]), reverse=True):
            if path == mount["dst"] or path.startswith(mount["dst"] + "/"):
                rel = os.path.relpath(path, mount["dst"])
                sub = "/".join(p for p in ((mount.get("subPath") or ""), rel) if p and p != ".")
                return {**mount, "dst": path, "subPath": sub or None}
        raise AssertionError("unreachable: the caller checked the path is under a mount")

    def _resolve_mounts(
        self, wdir: Path, spec: WorkloadSpec, uid: int | None
    ) -> list[dict[str, Any]]:
        volumes = {v.name: v for v in spec.volumes}
        mounts: list[dict[str, Any]] = []
        for i, vm in enumerate(spec.volume_mounts):
            vol = volumes[vm.name]
            read_only = vm.read_only
            if vol.persistent_volume_claim is not None:
                claim = vol.persistent_volume_claim
                read_only = read_only or claim.read_only
                try:
                    source = self.volumes.resolve(spec.namespace, claim.claim_name)
                except (VolumeNotFound, ValueError):
                    raise LaunchError(
                        "PersistentVolumeClaimNotFound",
                        f"PersistentVolumeClaim {claim.claim_name} not found in namespace "
                        f"{spec.namespace}",
                    ) from None
                self._own(source, uid)
            elif vol.empty_dir is not None:
                source = wdir / "emptydir" / vol.name
                source.mkdir(parents=True, exist_ok=True)
                self._own(source, uid)
            else:
                raise LaunchError(
                    "HostPathNotAllowed",
                    f"volumes[{vol.name}].hostPath: host paths are never mounted into a "
                    "workload; use a persistentVolumeClaim of the namespace",
                )
            target = os.path.normpath(vm.mount_path)
            if (
                target in ("/", "/proc", "/dev", "/tmp")
                or target.startswith(("/proc/", "/dev/", "/usr/", "/etc/"))
                or target in ("/usr", "/etc")
            ):
                raise LaunchError(
                    "InvalidMount", f"volumeMounts[{i}].mountPath {vm.mount_path!r} is reserved"
                )
            mounts.append(
                {"src": str(source), "dst": target, "ro": read_only, "subPath": vm.sub_path}
            )
        return mounts

    def _volume_limits(self, spec: WorkloadSpec) -> list[dict[str, Any]]:
        """What the supervisor checks for each claim the workload may write to: its data
        directory and the size the claim asked for.

        A local volume is a directory on the host's filesystem, so nothing stops a write at
        the claim's size; the supervisor measures the claim's usage as the kubelet measures
        an emptyDir's ``sizeLimit``, and stops the workload that finds it over the size.
        """
        volumes = {v.name: v for v in spec.volumes}
        limits: list[dict[str, Any]] = []
        for vm in spec.volume_mounts:
            claim = volumes[vm.name].persistent_volume_claim
            if claim is None or vm.read_only or claim.read_only:
                continue
            size = self.volumes.size(spec.namespace, claim.claim_name)
            if not size:
                continue
            field = f"PersistentVolumeClaim {claim.claim_name}: spec.resources.requests.storage"
            try:
                limit = int(parse_quantity(size, field))
            except ValueError as exc:
                raise LaunchError("InvalidVolume", str(exc)) from None
            limits.append(
                {
                    "path": str(self.volumes.resolve(spec.namespace, claim.claim_name)),
                    "claim": claim.claim_name,
                    "mountPath": os.path.normpath(vm.mount_path),
                    "size": size,
                    "bytes": limit,
                }
            )
        return limits

    # -- status and waiting ------------------------------------------------------------------

    async def status(self, namespace: str, name: str) -> WorkloadStatus:
        wdir = self._dir(namespace, name)
        try:
            spec = self._read_spec(wdir)
        except FileNotFoundError:
            raise WorkloadNotFound(namespace, name) from None
        return self._status_from(wdir, spec)

    def _status_from(self, wdir: Path, spec: WorkloadSpec) -> WorkloadStatus:
        state = _read_json(wdir / STATE) or {}
        phase = Phase(state.get("phase", Phase.PENDING.value))
        if not phase.finished and state and not self._supervisor_alive(wdir):
            # Re-read: the supervisor may have written its final state and exited just now.
            state = _read_json(wdir / STATE) or {}
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
        supervisor_module.cgroup_remove((_read_json(wdir / LAUNCH) or {}).get("cgroup"))
        state = {
            **state,
            "phase": Phase.FAILED.value,
            "reason": "SupervisorLost",
            "message": "the workload's supervisor stopped without recording an exit code "
            "(host reboot or killed); apply it again after deleting it",
            "finishTime": time.time(),
            "ready": False,
        }
        _write_json_atomic(wdir / STATE, state)
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
            sup_pid = (_read_json(wdir / STATE) or {}).get("supervisorPid")
            if ready or (own is None and sup_pid is None):
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
            if not own and not self._supervisor_alive(wdir):
                return
            loop = asyncio.get_running_loop()
            exited = loop.create_future()

            def on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, on_exit)
            try:
                await asyncio.wait_for(exited, limit)
            except TimeoutError:
                pass
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)

    # -- delete and stop ---------------------------------------------------------------------

    async def _stop(self, wdir: Path, grace: float) -> None:
        """SIGTERM the supervisor (which stops the tree) and wait; SIGKILL everything if stuck."""
        end = time.monotonic() + 2.0
        # A supervisor that was just spawned has no state yet: give it a moment to record it.
        own = self._spawned.get(wdir)
        while _read_json(wdir / STATE) is None and time.monotonic() < end:
            if own is None or own.poll() is not None:
                break
            await asyncio.sleep(0.01)
        state = _read_json(wdir / STATE) or {}
        sup_pid = state.get("supervisorPid")
        if sup_pid and self._supervisor_alive(wdir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(sup_pid, signal.SIGTERM)
            await self._wait_pid_exit(sup_pid, wdir, grace + 5.0)
            if self._supervisor_alive(wdir):
                log.warning("supervisor %s of %s ignored SIGTERM; killing it", sup_pid, wdir)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(sup_pid, signal.SIGKILL)
        self._kill_orphaned_workload(_read_json(wdir / STATE) or state)
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
            supervisor_module.cgroup_remove((_read_json(wdir / LAUNCH) or {}).get("cgroup"))
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
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        self._reap()

    # -- list and logs -----------------------------------------------------------------------

    async def list(
        self, label_selector: LabelSelector = None, namespace: str | None = None
    ) -> builtins.list[WorkloadStatus]:
        match = parse_selector(label_selector)
        found: builtins.list[WorkloadStatus] = []
        for wdir in self._workload_dirs(namespace):
            try:
                spec = self._read_spec(wdir)
            except (FileNotFoundError, ValueError):
                continue
            if match(spec.labels):
                found.append(self._status_from(wdir, spec))
        return found

    async def volume_users(self, namespace: str, claim: str) -> builtins.list[str]:
        users: builtins.list[str] = []
        for wdir in self._workload_dirs(namespace):
            try:
                spec = self._read_spec(wdir)
            except (FileNotFoundError, ValueError):
                continue
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
        path = wdir / LOG
        position = _tail_offset(path, tail) if tail is not None else 0
        pending = b""
        while True:
            try:
                with open(path, "rb") as f:  # noqa: ASYNC230 - a local file, read in chunks
                    f.seek(position)
                    chunk = f.read(LOG_CHUNK)
            except FileNotFoundError:
                chunk = b""
                if not wdir.exists():  # deleted while following
                    return
            if chunk:
                position += len(chunk)
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
                continue
            if not follow:
                break
            try:
                finished = (await self.status(namespace, name)).finished
            except WorkloadNotFound:
                return
            if finished:
                # One more read: output written just before the exit must not be lost.
                with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:  # noqa: ASYNC230
                    f.seek(position)
                    rest = f.read()
                if rest:
                    position += len(rest)
                    *lines, pending = (pending + rest).split(b"\n")
                    for line in lines:
                        yield line.decode(errors="replace")
                break
            await asyncio.sleep(FOLLOW_INTERVAL)
        if pending:
            yield pending.decode(errors="replace")

    # -- volumes -----------------------------------------------------------------------------

    async def create_volume(
        self,
        namespace: str,
        name: str,
        size: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> VolumeInfo:
        return self.volumes.create(namespace, name, size, labels)

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
        return await asyncio.to_thread(_read_inside, root, path, max_bytes)


def _read_inside(root: Path, path: str, max_bytes: int) -> bytes:
    """The file at ``path`` under ``root``, opened one component at a time without following
    a link (a workload may have planted one pointing anywhere on the host)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"{path!r}: must be a file path inside the volume, without '..'")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise FileNotFoundError(f"{path}: {part} is not a directory") from None
                raise
            os.close(fd)
            fd = next_fd
        try:
            file_fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FileNotFoundError(f"{path}: a symbolic link is not followed") from None
            raise
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):  # before fdopen: it refuses directories
        os.close(file_fd)
        raise FileNotFoundError(f"{path}: not a regular file")
    with os.fdopen(file_fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes} bytes")
    return data


def _tail_offset(path: Path, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of the file begin."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = pos = f.tell()
            if lines <= 0:
                return end
            # A trailing newline ends the last line; it does not start a new one.
            f.seek(max(0, end - 1))
            wanted = lines + 1 if end and f.read(1) == b"\n" else lines
            seen = 0
            while pos > 0:
                step = min(LOG_CHUNK, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                for i in range(len(block) - 1, -1, -1):
                    if block[i] == 0x0A:
                        seen += 1
                        if seen == wanted:
                            return pos + i + 1
            return 0
    except FileNotFoundError:
        return 0
