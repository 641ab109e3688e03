"""The per-workload supervisor: ``python -I -S supervisor.py <workload-dir>``.

One supervisor runs per workload, in its own session, so it outlives the service that
started it (even a SIGKILL of that service). It reads ``launch.json`` (the argv, environment,
limits and probe the runtime resolved), starts the workload, and records every transition in
``state.json`` with an atomic rename, so any later runtime reads the truth from disk: start
time and pid, readiness, restarts, and the final exit code.

Exactly once: the supervisor holds an exclusive ``flock`` on ``<dir>/lock`` while alive (the
runtime's liveness test), and refuses to run when ``state.json`` already exists (an earlier
supervisor took the workload, whatever happened to it afterwards).

Lean on purpose, because it starts once per Trial and pipeline step: standard library only,
no imports from the package (it is run by file path with ``-I -S``), no polling: it sleeps
in ``select`` on a pidfd of the workload and on a signal wake-up pipe.
"""

from __future__ import annotations

# Start-up time is most of this process's cost: ``json`` and ``signal`` would pull in ``re``
# and ``enum`` (about 10 ms), so the C modules behind them are used directly.
import _json
import _signal as signal
import errno
import fcntl
import os
import resource
import select
import sys
import time

TYPE_CHECKING = False  # typing costs 12 ms at start-up; this file avoids it
if TYPE_CHECKING:
    from typing import Any

STATE = "state.json"
LAUNCH = "launch.json"
LOCK = "lock"
LOG_TAIL_BYTES = 600
# Restart back-off is reset once a run lasted this long, as Kubernetes does for containers.
BACKOFF_RESET_AFTER = 60.0


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot): a pid plus this is unique."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; counted after the ")" that closes the command name, which may contain spaces.
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


class _JSONContext:
    """What ``_json.make_scanner`` reads from ``json.JSONDecoder``; strict standard JSON."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo: dict = {}


def loads(text: str) -> object:
    value, end = _json.make_scanner(_JSONContext())(text, 0)  # type: ignore[arg-type]
    if text[end:].strip():
        raise ValueError("trailing data after JSON document")
    return value


def dumps(value: object) -> str:
    """JSON for the few types a state holds (dict, list, str, int, float, bool, None)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if isinstance(value, dict):
        items = (dumps(str(k)) + ": " + dumps(v) for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


class SandboxError(Exception):
    """The sandbox could not be set up; the workload fails (it never runs unsandboxed)."""

    def __init__(self, message: str, reason: str = "SandboxUnavailable") -> None:
        super().__init__(message)
        self.reason = reason


# Mount sources a subPath may not reach through: anything but plain directories and files.
_O_BENEATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def open_beneath(root: str, sub_path: str | None, owner: int | None) -> int:
    """An O_PATH descriptor of ``root/sub_path``, walked one component at a time.

    No component may be a symbolic link (a workload may have planted one in a shared volume
    to make the next mount land anywhere on the host), and ``..`` is refused. Missing
    directories are created (owned by the workload's uid). bubblewrap then binds the
    descriptor itself (``--bind-fd``), not the path, so nothing can be swapped in between.
    """
    import stat

    fd = os.open(root, _O_BENEATH | os.O_DIRECTORY)
    for part in [p for p in (sub_path or "").split("/") if p and p != "."]:
        if part == "..":
            os.close(fd)
            raise SandboxError(f"subPath {sub_path!r}: '..' is not allowed", "InvalidSubPath")
        try:
            nxt = os.open(part, _O_BENEATH, dir_fd=fd)
        except FileNotFoundError:
            os.mkdir(part, 0o755, dir_fd=fd)
            if owner is not None:
                os.chown(part, owner, owner, dir_fd=fd, follow_symlinks=False)
            nxt = os.open(part, _O_BENEATH, dir_fd=fd)
        os.close(fd)
        fd = nxt
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            os.close(fd)
            raise SandboxError(
                f"subPath {sub_path!r}: {part!r} is a symbolic link (links are never followed)",
                "InvalidSubPath",
            )
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            os.close(fd)
            raise SandboxError(
                f"subPath {sub_path!r}: {part!r} is not a file or directory", "InvalidSubPath"
            )
    if owner is not None and sub_path and os.fstat(fd).st_uid != owner:
        _hand_over(fd, owner)
    return fd


#: A subPath the platform staged for a workload (a pipeline step's plan and scripts) is
#: handed to the workload's uid before it runs; at most this many entries.
HAND_OVER_LIMIT = 10_000


def _hand_over(fd: int, owner: int) -> None:
    """chown a directory tree the platform staged (as root) to the workload's uid.

    Links are changed themselves, never followed (``lchown``, and ``fwalk`` does not descend
    through them); hard links to files outside cannot be made across the sandbox's mounts.
    """
    import stat

    if not stat.S_ISDIR(os.fstat(fd).st_mode):  # a file: the descriptor's own inode
        os.chown(f"/proc/self/fd/{fd}", owner, owner)
        return
    seen = 0
    top = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    try:
        for _, dirs, files, dirfd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            os.chown(dirfd, owner, owner)
            for name in [*dirs, *files]:
                seen += 1
                if seen > HAND_OVER_LIMIT:
                    return
                os.chown(name, owner, owner, dir_fd=dirfd, follow_symlinks=False)
    finally:
        os.close(top)


def build_sandbox_argv(box: dict, argv: list) -> tuple[list, list, list]:
    """(bubblewrap argv, descriptors the child must inherit, (pipe, bytes) to write).

    ``box`` is the plan from services/common/runtime/sandbox.py (the launch's ``sandbox``).
    """
    keep: list = []
    data: list = []
    out = list(box["base"])
    for target, path in box["symlinks"]:
        out += ["--symlink", target, path]
    # /dev/shm as a sticky directory on bubblewrap's /dev tmpfs: one mount fewer than a tmpfs.
    out += ["--dev", "/dev", "--chmod", "1777", "/dev/shm", "--proc", "/proc"]
    out += ["--hostname", box.get("hostname") or "workload"]
    uid = box.get("uid")
    # Every mount, shallowest first, so that one inside another lands on top of it (the
    # platform's virtualenv may live under /tmp, which the workload's own /tmp covers).
    # bubblewrap makes a mount point's missing parents private (0700): each gets an explicit
    # plain directory first, or the workload's user could not reach its own interpreter.
    ops: list = [(dst, "ro", src) for src, dst in box["roBinds"]]
    ops += [(m["dst"], "bind", m) for m in box["binds"]]
    ops += [(f["dst"], "file", f["data"]) for f in box.get("files") or []]
    dests = {op[0] for op in ops} | {p for _, p in box["symlinks"]}
    parents: set = set()
    for dest, _, _ in ops:
        parent = os.path.dirname(dest)
        while parent not in ("/", "") and parent not in dests:
            parents.add(parent)
            parent = os.path.dirname(parent)
    ops += [(p, "dir", None) for p in parents]
    ops.sort(key=lambda op: (op[0].count("/"), op[1] != "dir", op[0]))
    try:
        for dst, kind, what in ops:
            if kind == "dir":
                out += ["--perms", "0755", "--dir", dst]
            elif kind == "ro":
                out += ["--ro-bind", what, dst]
            elif kind == "bind":
                fd = open_beneath(what["src"], what.get("subPath"), uid)
                keep.append(fd)
                out += ["--ro-bind-fd" if what.get("ro") else "--bind-fd", str(fd), dst]
            else:
                r, w = os.pipe()
                keep.append(r)
                data.append((w, what.encode()))
                out += ["--perms", "0644", "--ro-bind-data", str(r), dst]
        seccomp = os.open(box["seccomp"], os.O_RDONLY | os.O_CLOEXEC)
        keep.append(seccomp)
        out += ["--seccomp", str(seccomp)]
    except OSError as exc:
        for fd in keep:
            os.close(fd)
        for w, _ in data:
            os.close(w)
        raise SandboxError(f"cannot prepare the sandbox's mounts: {exc}") from None
    except SandboxError:
        for fd in keep:
            os.close(fd)
        for w, _ in data:
            os.close(w)
        raise
    out += ["--chdir", box["cwd"], "--"]
    out += list(box.get("dropPrivileges") or [])
    out += list(argv)
    return out, keep, data


# -- cgroups (the plan comes from sandbox.cgroup_plan) ------------------------------------------


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def cgroup_prepare(cg: dict | None) -> list:
    """Make the workload's cgroups with its limits; return the ``cgroup.procs`` files to join.

    A failure fails the workload (its limits are part of the sandbox).
    """
    if not cg:
        return []
    try:
        if cg["version"] == 2:
            path = cg["dirs"][""]
            parent = os.path.dirname(path)
            os.makedirs(parent, exist_ok=True)
            for level in (os.path.dirname(parent), parent):  # let the limits apply below
                _write(f"{level}/cgroup.subtree_control", "+cpu +memory +pids")
            os.makedirs(path, exist_ok=True)
            if cg.get("cpu"):
                _write(f"{path}/cpu.max", f"{max(1000, int(cg['cpu'] * 100000))} 100000")
            if cg.get("memory"):
                _write(f"{path}/memory.max", str(int(cg["memory"])))
                _write(f"{path}/memory.swap.max", "0")
            if cg.get("pids"):
                _write(f"{path}/pids.max", str(int(cg["pids"])))
            return [f"{path}/cgroup.procs"]
        dirs = cg["dirs"]
        for path in dirs.values():
            os.makedirs(path, exist_ok=True)
        if cg.get("cpu") and "cpu" in dirs:
            _write(f"{dirs['cpu']}/cpu.cfs_period_us", "100000")
            _write(f"{dirs['cpu']}/cpu.cfs_quota_us", str(max(1000, int(cg["cpu"] * 100000))))
        if cg.get("memory") and "memory" in dirs:
            _write(f"{dirs['memory']}/memory.limit_in_bytes", str(int(cg["memory"])))
            if os.path.exists(f"{dirs['memory']}/memory.memsw.limit_in_bytes"):
                _write(f"{dirs['memory']}/memory.memsw.limit_in_bytes", str(int(cg["memory"])))
        if cg.get("pids") and "pids" in dirs:
            _write(f"{dirs['pids']}/pids.max", str(int(cg["pids"])))
        return [f"{path}/cgroup.procs" for path in dirs.values()]
    except OSError as exc:
        raise SandboxError(f"cannot set up the workload's cgroups ({exc})") from None


def cgroup_oom_kills(cg: dict | None) -> int:
    """How often the kernel's OOM killer struck in the workload's memory cgroup."""
    if not cg:
        return 0
    if cg["version"] == 2:
        path = f"{cg['dirs']['']}/memory.events"
    elif "memory" in cg["dirs"]:
        path = f"{cg['dirs']['memory']}/memory.oom_control"
    else:
        return 0
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_remove(cg: dict | None) -> None:
    """Remove the workload's cgroups once its processes are gone (briefly retried)."""
    if not cg:
        return
    end = time.monotonic() + 5.0
    for path in cg["dirs"].values():
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:  # EBUSY: a killed process is still on its way out
                if time.monotonic() > end:
                    sys.stderr.write(f"cgroup {path} still busy; left for the next start\n")
                    break
                time.sleep(0.002)


def read_child_pid(fd: int, timeout: float = 10.0) -> int | None:
    """bubblewrap's ``--info-fd`` report: the pid of the sandbox's first process."""
    buf = b""
    end = time.monotonic() + timeout
    while b"}" not in buf:
        left = end - time.monotonic()
        if left <= 0:
            raise SandboxError("bubblewrap did not report its child in time")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return None  # bubblewrap failed before the namespaces existed; its log says why
        buf += chunk
    value = loads(buf[: buf.index(b"}") + 1].decode())
    if not isinstance(value, dict) or "child-pid" not in value:
        raise SandboxError("bubblewrap's info report has no child-pid")
    return int(value["child-pid"])


def set_rlimits(launch: dict) -> None:
    """The limits from ``resources`` that hold without cgroups (see docs/security.md)."""
    limits = (
        (resource.RLIMIT_AS, launch.get("rlimitAs")),
        (resource.RLIMIT_NPROC, launch.get("rlimitNproc")),
        (resource.RLIMIT_FSIZE, launch.get("rlimitFsize")),
        (resource.RLIMIT_NOFILE, launch.get("rlimitNofile")),
        (resource.RLIMIT_CORE, 0),
    )
    for which, value in limits:
        if value is not None:
            value = int(value)
            soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY and value > hard:
                value = hard
            resource.setrlimit(which, (value, value))


#: Entries one usage check looks at, at most (a walk of a huge tree must not stall us).
USAGE_MAX_ENTRIES = 200_000


def disk_usage(path: str) -> int:
    """Bytes the files under ``path`` occupy (allocated blocks, as ``du`` counts; links are
    not followed), counting at most :data:`USAGE_MAX_ENTRIES` entries."""
    total, seen, pending = 0, 0, [path]
    while pending and seen < USAGE_MAX_ENTRIES:
        try:
            entries = os.scandir(pending.pop())
        except OSError:  # removed meanwhile, or not ours to read
            continue
        with entries:
            for entry in entries:
                seen += 1
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return total


def human_bytes(n: float) -> str:
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if n < 1024 or unit == "Ti":
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}Ti"


class Supervisor:
    def __init__(self, workdir: str, launch: dict) -> None:
        self.dir = workdir
        self.launch = launch
        self.state: dict = {
            "supervisorPid": os.getpid(),
            "phase": "Pending",
            "restartCount": 0,
            "port": launch.get("port"),
            "ready": False,
        }
        self.stop_requested = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_stop)
        self.deadline_at: float | None = None
        self.evicted: str | None = None  # why the workload was stopped for a full volume
        self.agent: Any = None
        self.egress: list = []
        self.endpoint: Any = None
        if launch.get("kind") == "server" and launch.get("endpoint"):
            import _socket

            path = launch["endpoint"]
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            self.endpoint = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            self.endpoint.bind(path)
            os.chmod(path, 0o600)
            self.endpoint.listen(64)

    # -- bookkeeping -------------------------------------------------------------------------

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def write_state(self, **changes: object) -> None:
        self.state.update(changes)
        tmp = os.path.join(self.dir, ".state.json.tmp")
        with open(tmp, "w") as f:
            f.write(dumps(self.state))
        os.replace(tmp, os.path.join(self.dir, STATE))

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except OSError:
            pass

    def _log_tail(self) -> str:
        try:
            with open(self.launch["log"], "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - LOG_TAIL_BYTES))
                data = f.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [ln for ln in data.splitlines() if ln.strip()][-3:]
        return " | ".join(lines)

    # -- the workload process ------------------------------------------------------------------

    def spawn(self) -> int:
        """Start the workload in its sandbox; return bubblewrap's pid.

        bubblewrap builds the namespaces, reports its child's pid (``--info-fd``) and waits
        (``--block-fd``) while the network agent makes the egress sockets inside; only then
        does it run the workload, so the platform API answers from the first instruction.
        """
        launch = self.launch
        box = launch.get("sandbox")
        if not box:
            raise SandboxError("no sandbox in the launch plan; nothing runs unsandboxed")
        procs = cgroup_prepare(launch.get("cgroup"))
        argv, keep, data = build_sandbox_argv(box, launch["argv"])
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        keep += [info_w, block_r]
        argv[1:1] = ["--info-fd", str(info_w), "--block-fd", str(block_r)]
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        log_fd = os.open(launch["log"], flags, 0o644)
        try:
            pid = os.fork()
            if pid == 0:  # child: never return into the supervisor's code
                try:
                    os.setsid()
                    for sig in (
                        signal.SIGPIPE,
                        signal.SIGXFSZ,
                        signal.SIGTERM,
                        signal.SIGINT,
                        signal.SIGHUP,
                    ):
                        signal.signal(sig, signal.SIG_DFL)
                    signal.set_wakeup_fd(-1)
                    set_rlimits(launch)
                    for path in procs:  # everything the workload starts stays inside
                        _write(path, str(os.getpid()))
                    null = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(null, 0)
                    os.dup2(log_fd, 1)
                    os.dup2(log_fd, 2)
                    for fd in keep:
                        os.set_inheritable(fd, True)
                    os.chdir(launch["cwd"])
                    os.execve(argv[0], argv, launch["env"])
                except BaseException as exc:  # noqa: BLE001 - report anything, then leave
                    try:
                        os.write(2, f"failed to start the sandbox: {exc}\n".encode())
                    finally:
                        os._exit(127)
        finally:
            os.close(log_fd)
            for fd in keep:
                os.close(fd)
        try:
            for fd, payload in data:
                with open(fd, "wb", closefd=True) as pipe:
                    pipe.write(payload)
            # Imported while bubblewrap sets up (netns loads ctypes, for the agent's setns).
            import netns

            child = read_child_pid(info_r)
            self.agent = None
            if child is not None:
                self.agent = netns.Agent(
                    child,
                    [tuple(e["listen"]) for e in box.get("egress") or []],
                    stay=launch.get("kind") == "server",
                )
                self.egress = [
                    (sock, tuple(e["connect"]))
                    for sock, e in zip(self.agent.listeners, box.get("egress") or [], strict=True)
                ]
            os.write(block_w, b"x")
        except Exception as exc:
            self._killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise SandboxError(f"could not set up the workload's network: {exc}") from None
        finally:
            os.close(info_r)
            os.close(block_w)
        return pid

    def kill_tree(self, pid: int, pidfd: int, grace: float) -> int:
        """SIGTERM the process group, SIGKILL it after ``grace``; return the wait status."""
        self._killpg(pid, signal.SIGTERM)
        ready, _, _ = select.select([pidfd], [], [], max(0.0, grace))
        if not ready:
            self._killpg(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        self._killpg(pid, signal.SIGKILL)  # stragglers left in the group
        return status

    @staticmethod
    def _killpg(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    # -- readiness ---------------------------------------------------------------------------

    def probe(self) -> bool:
        """The readiness probe, made inside the workload's network namespace."""
        import netns

        probe = self.launch.get("probe") or {}
        timeout = min(max(float(probe.get("timeout", 1)), 0.1), 5.0)
        if self.agent is None:
            return False
        return netns.probe_http(self.agent, int(self.launch["port"]), probe.get("path"), timeout)

    def serve_endpoint(self) -> None:
        import netns

        assert self.endpoint is not None
        running = self.agent if self.state.get("phase") == "Running" else None
        netns.serve_endpoint(self.endpoint, running, self.launch.get("port"))

    def forward(self, listener: Any) -> None:
        import netns

        for sock, target in self.egress:
            if sock is listener:
                netns.relay(sock, target)

    def close_network(self) -> None:
        for sock, _ in self.egress:
            sock.close()
        self.egress = []
        if self.agent is not None:
            self.agent.close()
            self.agent = None

    # -- volumes -----------------------------------------------------------------------------

    def volume_over_size(self) -> str | None:
        """Why the workload must stop, if a claim it writes to holds more than its size.

        A local claim is a directory of the host's filesystem, which does not stop writes at
        the claim's size; this check (every ``volumeCheckSeconds``) does, like the kubelet's
        for an emptyDir's ``sizeLimit``: a workload may overshoot by what it writes between
        two checks.
        """
        for vol in self.launch.get("volumeLimits") or []:
            used = disk_usage(vol["path"])
            if used > int(vol["bytes"]):
                return (
                    f"No space left on device: PersistentVolumeClaim {vol['claim']} (mounted at "
                    f"{vol['mountPath']}) holds {human_bytes(used)}, more than its size "
                    f"{vol['size']} (spec.resources.requests.storage); the workload was stopped. "
                    "Delete files from the claim or use a larger one"
                )
        return None

    # -- one run -----------------------------------------------------------------------------

    def run_once(self) -> tuple[str, int]:
        """Start the workload and watch it; return (outcome, exit code)."""
        pid = self.spawn()
        now = time.time()
        if self.state.get("startTime") is None:
            deadline = self.launch.get("activeDeadlineSeconds")
            self.deadline_at = time.monotonic() + float(deadline) if deadline else None
            self.write_state(
                phase="Running",
                pid=pid,
                pidStart=proc_start_time(pid),
                startTime=now,
                runStartTime=now,
                reason=None,
                message=None,
                ready=False,
            )
        else:
            self.write_state(
                phase="Running",
                pid=pid,
                pidStart=proc_start_time(pid),
                runStartTime=now,
                reason=None,
                message=None,
                ready=False,
            )
        pidfd = os.pidfd_open(pid)
        is_server = self.launch.get("kind") == "server"
        probe = self.launch.get("probe") or {}
        next_probe = time.monotonic() + float(probe.get("initialDelay", 0)) if is_server else None
        probe_gap = 0.02
        failures = 0
        grace = float(self.launch.get("grace", 5))
        check_every = float(self.launch.get("volumeCheckSeconds") or 1.0)
        next_usage = time.monotonic() if self.launch.get("volumeLimits") else None
        try:
            while True:
                if self.stop_requested:
                    return "stopped", self.kill_tree(pid, pidfd, grace)
                now_m = time.monotonic()
                if self.deadline_at is not None and now_m >= self.deadline_at:
                    return "deadline", self.kill_tree(pid, pidfd, grace)
                if next_usage is not None and now_m >= next_usage:
                    self.evicted = self.volume_over_size()
                    if self.evicted:  # no grace: every second may write more
                        return "volume-full", self.kill_tree(pid, pidfd, 0)
                    next_usage = time.monotonic() + check_every
                if next_probe is not None and now_m >= next_probe:
                    ok = self.probe()
                    if ok and not self.state["ready"]:
                        self.write_state(ready=True)
                    if not ok and self.state["ready"]:
                        failures += 1
                        if failures >= int(probe.get("failureThreshold", 3)):
                            self.write_state(ready=False)
                    if ok:
                        failures = 0
                    if self.state["ready"]:
                        probe_gap = float(probe.get("period", 10))
                    else:  # not ready yet: probe fast (a refused loopback connect is cheap),
                        # backing off to 0.1 s: every probe gap is added to a server's start
                        probe_gap = min(probe_gap * 1.5, 0.1)
                    next_probe = time.monotonic() + probe_gap
                waits = [t for t in (self.deadline_at, next_probe, next_usage) if t is not None]
                timeout = max(0.0, min(waits) - time.monotonic()) if waits else None
                watched = [pidfd, self.wake_r, *(sock for sock, _ in self.egress)]
                if self.endpoint is not None:
                    watched.append(self.endpoint)
                ready, _, _ = select.select(watched, [], [], timeout)
                if self.wake_r in ready:
                    self._drain_wakeups()
                if self.endpoint is not None and self.endpoint in ready:
                    self.serve_endpoint()
                for sock in ready:
                    if sock not in (pidfd, self.wake_r, self.endpoint):
                        self.forward(sock)
                if pidfd in ready:
                    _, status = os.waitpid(pid, 0)
                    self._killpg(pid, signal.SIGKILL)  # orphans left in the group die with it
                    return "exited", status
        finally:
            os.close(pidfd)
            self.close_network()

    # -- the whole life ----------------------------------------------------------------------

    def run(self) -> None:
        self.write_state()
        kind = self.launch.get("kind", "job")
        policy = self.launch.get("restartPolicy", "Never")
        backoff_limit = self.launch.get("backoffLimit")
        base = float(self.launch.get("backoffBase", 1.0))
        cap = float(self.launch.get("backoffMax", 300.0))
        failures_in_a_row = 0
        while True:
            run_started = time.monotonic()
            try:
                outcome, status = self.run_once()
            except SandboxError as exc:
                return self.finish("Failed", 1, exc.reason, str(exc))
            code = os.waitstatus_to_exitcode(status)
            if code < 0:  # killed by a signal: report it the way containers do
                code = 128 - code
            if outcome == "deadline":
                secs = self.launch.get("activeDeadlineSeconds")
                return self.finish(
                    "Failed",
                    code,
                    "DeadlineExceeded",
                    f"workload was active longer than its deadline "
                    f"(activeDeadlineSeconds={secs:g}) and was killed",
                )
            if outcome == "exited" and self.launch.get("volumeLimits"):
                # Writes between two checks are not stopped: a workload that filled a claim
                # past its size and left at once has still failed.
                self.evicted = self.volume_over_size()
                outcome = "volume-full" if self.evicted else outcome
            if outcome == "volume-full":
                return self.finish("Failed", code, "Evicted", self.evicted)
            if outcome == "stopped":
                return self.finish(
                    "Failed", code, "Stopped", "stopped by the runtime (delete or orderly shutdown)"
                )
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if restart and kind == "job" and backoff_limit is not None:
                restart = self.state["restartCount"] < int(backoff_limit)
            if not restart:
                if code == 0:
                    return self.finish("Succeeded", 0, "Completed", None)
                tail = self._log_tail()
                msg = f"command exited with code {code}"
                msg += f"; last output: {tail}" if tail else ""
                reason = "BackoffLimitExceeded" if policy == "OnFailure" else "Error"
                if code == 128 + signal.SIGXFSZ and self.launch.get("rlimitFsize"):
                    # As the kubelet evicts a pod over its ephemeral-storage limit.
                    reason = "Evicted"
                    limit = human_bytes(int(self.launch["rlimitFsize"]))
                    msg = (
                        f"File too large: a file reached resources.limits.ephemeral-storage "
                        f"({limit}, enforced per file) and the writer was killed; " + msg
                    )
                if code == 137 and cgroup_oom_kills(self.launch.get("cgroup")):
                    reason = "OOMKilled"
                    msg = "the workload used more memory than resources.limits.memory; " + msg
                return self.finish("Failed", code, reason, msg)
            if time.monotonic() - run_started >= BACKOFF_RESET_AFTER:
                failures_in_a_row = 0
            delay = min(cap, base * (2**failures_in_a_row))
            failures_in_a_row += 1
            self.write_state(
                phase="Running",
                ready=False,
                pid=None,
                lastExitCode=code,
                reason="CrashLoopBackOff",
                message=f"back-off {delay:g}s restarting a workload that exited with code {code}",
                restartCount=self.state["restartCount"] + 1,
            )
            if self._sleep_interruptibly(delay):
                return self.finish(
                    "Failed", code, "Stopped", "stopped by the runtime (delete or orderly shutdown)"
                )

    def _sleep_interruptibly(self, delay: float) -> bool:
        """Sleep; return True if a stop was requested (or the deadline passed) meanwhile."""
        end = time.monotonic() + delay
        while not self.stop_requested:
            left = end - time.monotonic()
            if self.deadline_at is not None:
                left = min(left, self.deadline_at - time.monotonic())
            if left <= 0:
                break
            ready, _, _ = select.select([self.wake_r], [], [], left)
            if ready:
                self._drain_wakeups()
        deadline_passed = self.deadline_at is not None and time.monotonic() >= self.deadline_at
        return self.stop_requested or deadline_passed

    def finish(self, phase: str, code: int, reason: str, message: str | None) -> None:
        self.write_state(
            phase=phase,
            exitCode=code,
            finishTime=time.time(),
            reason=reason,
            message=message,
            ready=False,
            pid=None,
        )
        # After the state: the workload's last processes may take a moment to leave their
        # cgroup, and no one should wait for that to learn that the workload has ended.
        cgroup_remove(self.launch.get("cgroup"))


def _take_lock(path: str) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    end = time.monotonic() + 0.5
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            # The runtime probes the lock briefly; a real owner holds it for good.
            if time.monotonic() > end:
                os.close(fd)
                return None
            time.sleep(0.01)


def main(argv: list[str]) -> int:
    # netns.py sits beside this file; -I keeps the script's directory off sys.path.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if len(argv) != 2:
        sys.stderr.write("usage: supervisor.py <workload-dir>\n")
        return 2
    workdir = argv[1]
    lock_fd = _take_lock(os.path.join(workdir, LOCK))
    if lock_fd is None:
        sys.stderr.write("another supervisor owns this workload\n")
        return 0
    if os.path.exists(os.path.join(workdir, STATE)):
        sys.stderr.write("workload already started once; not starting it again\n")
        return 0
    with open(os.path.join(workdir, LAUNCH)) as f:
        launch = loads(f.read())
    if not isinstance(launch, dict):
        sys.stderr.write("launch.json: not a JSON object\n")
        return 2
    Supervisor(workdir, launch).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
