"""What a local workload may see and do: the sandbox plan the supervisor carries out.

Tenants are untrusted (docs/security.md). Every workload runs under bubblewrap with:

* **another user.** When the platform runs as root, each namespace gets its own host uid
  (allocated once, recorded in ``uids.json``): the workload runs as that uid with no
  capabilities (``setpriv`` clears every set after bubblewrap, running as root, has built the
  mounts), so the kernel's own permission checks keep it out of the platform's 0600/0700
  files even where a path is visible, and two namespaces cannot touch each other's files or
  processes. When the platform itself is not root (the container image's uid), bubblewrap
  runs unprivileged in a new user namespace with ``--cap-drop ALL``; the workload then shares
  the platform's uid, and only what it can see protects the platform (see below).
* **a minimal filesystem.** A fresh tmpfs root holding ``/usr`` (and the merged-/usr
  symlinks), an allow list of ``/etc`` entries, a generated ``/etc/passwd`` and ``/etc/group``,
  the platform's Python environment and package sources read-only, fresh ``/dev`` and
  ``/proc``, its own ``/tmp`` and home, and its volumes. Never the state directory, the keys,
  the databases or other workloads' directories.
* **its own network namespace** with only a loopback. The supervisor, outside, forwards the
  platform API (``API_ADDRESS`` inside) to the gateway and nothing else, and hands the
  gateway connected sockets to a server's port (see endpoint.py).
* **its own pid, IPC and UTS namespaces**, no_new_privs (bubblewrap always sets it), a
  seccomp filter (seccomp.py), and rlimits from ``resources``.

If any of this cannot be set up the workload fails with ``SandboxUnavailable``; nothing ever
runs outside the sandbox (fail closed). :func:`probe` says why, once, for ``shipyard up``.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import ipaddress
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from .seccomp import build_filter

INSTALL_HINT = "install bubblewrap (`apt-get install bubblewrap`, or `make install`)"
#: Where a workload reaches the platform API, inside its own network namespace. Not 8080 or
#: any port a server is likely to take on 0.0.0.0, which would collide with this address.
API_ADDRESS = ("127.0.0.2", 18080)
#: Where a store named by host name (not a loopback address) answers inside a sandbox: the
#: workload's /etc/hosts maps the name here, so presigned URLs work unchanged (issue 11).
STORE_ALIAS = "127.0.0.3"
#: The working directory and $HOME of a workload that does not name one.
DEFAULT_HOME = "/home/shipyard"
#: Host uids handed to namespaces start here: above the usual subordinate-id ranges.
UID_BASE = 1_000_000
UID_RANGE = 1_000_000
#: /etc entries a workload may read (name resolution, TLS roots, time zone, the loader).
ETC_ALLOWED = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "fonts",
    "gai.conf",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "protocols",
    "services",
    "ssl",
    "timezone",
)
_MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def socket_dir() -> Path:
    """A private directory for the servers' endpoint sockets, with a short path.

    A unix socket's path may be at most 107 bytes, and a workload's directory is often longer,
    so the sockets live here, named by a hash of that directory. Only the platform's user may
    enter it: whoever can open an endpoint socket can talk to that server.
    """
    base = Path("/run") if os.geteuid() == 0 and os.access("/run", os.W_OK) else Path("/tmp")
    path = base / f"shipyard-{os.geteuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        st = os.lstat(path)
        if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.geteuid():
            raise RuntimeError(f"{path} exists and is not the platform's own directory") from None
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)
    return path


def find_bwrap(path: str | None) -> str | None:
    """Resolve the bwrap executable (a name on PATH or a path); None if unavailable."""
    return shutil.which(path) if path else None


def platform_code_paths() -> list[str]:
    """The Python environment and package sources every workload runs the platform's code
    from: the virtualenv, the interpreter it was made from, and the source directories of
    the packages (an editable install points into the project tree, whose state directory
    must stay out of sight, so only the package directories are exposed)."""
    paths = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    paths.add(os.path.realpath(os.path.dirname(os.path.realpath(sys.executable))))
    here = Path(__file__).resolve()
    project = here.parents[3]  # services/common/runtime/sandbox.py -> project root
    for package in ("services", "shipyard"):
        if (project / package / "__init__.py").exists():
            paths.add(str(project / package))
    # A directory inside another one is already visible.
    ordered = sorted(paths, key=len)
    return [p for i, p in enumerate(ordered) if not any(_below(p, q) for q in ordered[:i])]


def _below(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def build_etc(target: Path, uid: int, gid: int, hosts: dict[str, str] | None = None) -> Path:
    """A copy of the allowed /etc entries, with a passwd and group naming the workload's user
    (tools ask ``getpwuid``), bound as the workload's /etc in one mount; returns its path.

    One bind instead of one per entry: every mount costs bubblewrap time, and a trivial job
    pays for each. Links are copied as links (the TLS roots and alternatives point into /usr,
    which the sandbox shows).

    The copy is named by its content (``<target>-<digest>``) and never replaced or removed
    while it may be in use: every service's runtime builds one when it starts, and replacing
    one path in place left a moment with no directory there (a sandbox starting then failed:
    bubblewrap "Can't get type of source") and emptied the /etc of sandboxes already running
    on the old copy. Builders of the same content, in any process, end with the same
    directory; a copy whose content changed (the hosts, the host's /etc) is a new directory.
    """
    fresh = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    fresh.mkdir(mode=0o755, parents=True)
    try:
        for name in ETC_ALLOWED:
            src = Path("/etc") / name
            dst = fresh / name
            try:
                if src.is_symlink():
                    os.symlink(os.readlink(src), dst)
                elif src.is_dir():
                    shutil.copytree(src, dst, symlinks=True)
                elif src.is_file():
                    shutil.copy2(src, dst)
            except OSError:
                continue  # unreadable or vanished: the workload does without it
        if hosts:  # names the sandbox reaches through its egress relays (the object store)
            lines = "".join(f"{address}\t{name}\n" for name, address in sorted(hosts.items()))
            with open(fresh / "hosts", "a") as f:
                f.write(lines)
        for entry in passwd_files(uid, gid, DEFAULT_HOME):
            path = fresh / os.path.basename(entry["dst"])
            path.write_text(entry["data"])
            path.chmod(0o644)
        os.chmod(fresh, 0o755)
        built = target.with_name(f"{target.name}-{_tree_digest(fresh)}")
        try:
            os.rename(fresh, built)  # fails if a builder of the same content was first
        except OSError:
            if not built.is_dir():
                raise
        return built
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def _tree_digest(root: Path) -> str:
    """A digest of the files, links and directories under ``root``: names, kinds, contents."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files) + dirs:
            path = Path(folder) / name
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            if path.is_symlink():
                digest.update(b"l" + os.readlink(path).encode() + b"\0")
            elif path.is_file():
                digest.update(b"f" + path.read_bytes() + b"\0")
            else:
                digest.update(b"d\0")
    return digest.hexdigest()[:16]


def store_egress(endpoint: str | None) -> tuple[dict[str, object] | None, dict[str, str]]:
    """The egress relay for the object store at ``endpoint``, and /etc/hosts entries for it.

    A workload reaches the store only with URLs the platform presigned for its own keys; the
    relay lets those URLs work inside the sandbox exactly as written (same host, port, TLS
    name). A loopback address (the embedded store) is listened on as is inside the sandbox's
    own network; a host name is mapped to :data:`STORE_ALIAS`. Any other address literal
    cannot be reproduced inside, so such a store is not reachable from workloads.
    """
    if not endpoint:
        return None, {}
    url = urlsplit(endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if address.version != 4 or not address.is_loopback:
            return None, {}
        return {"listen": [host, port], "connect": [host, port]}, {}
    if not host:
        return None, {}
    return {"listen": [STORE_ALIAS, port], "connect": [host, port]}, {host: STORE_ALIAS}


def system_mounts() -> tuple[list[list[str]], list[list[str]]]:
    """(read-only binds, symlinks) for the system part of the filesystem, /etc aside (each
    workload's user gets its own copy, :func:`build_etc`)."""
    binds: list[list[str]] = [["/usr", "/usr"]]
    links: list[list[str]] = []
    for name in _MERGED_USR:
        path = f"/{name}"
        if os.path.islink(path):
            links.append([os.readlink(path), path])
        elif os.path.isdir(path):
            binds.append([path, path])
    for path in platform_code_paths():
        if not any(_below(path, b[0]) for b in binds):
            binds.append([path, path])
    return binds, links


def passwd_files(uid: int, gid: int, home: str) -> list[dict[str, str]]:
    """A passwd and group that name the workload's user (tools ask ``getpwuid``)."""
    passwd = (
        "root:x:0:0:root:/root:/bin/sh\n"
        f"shipyard:x:{uid}:{gid}:shipyard workload:{home}:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group = f"root:x:0:\nshipyard:x:{gid}:\nnogroup:x:65534:\n"
    return [{"dst": "/etc/passwd", "data": passwd}, {"dst": "/etc/group", "data": group}]


class UidMap:
    """One host uid per namespace, allocated once and kept in ``<root>/uids.json``.

    Only used when the platform runs as root. Allocation takes an exclusive lock, so services
    starting workloads at the same time agree.
    """

    def __init__(self, root: Path, base: int = UID_BASE) -> None:
        self.path = root / "uids.json"
        self.lock_path = root / "uids.lock"
        self.base = base
        self._cache: dict[str, int] = {}

    def uid_for(self, namespace: str) -> int:
        if namespace in self._cache:
            return self._cache[namespace]
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            table = self._read()
            if namespace not in table:
                used = set(table.values())
                uid = self.base + len(table)
                while uid in used:
                    uid += 1
                if uid >= self.base + UID_RANGE:
                    raise RuntimeError("the namespace uid range is exhausted")
                table[namespace] = uid
                tmp = self.path.with_name(".uids.json.tmp")
                tmp.write_text(json.dumps(table, sort_keys=True))
                os.replace(tmp, self.path)
            self._cache.update(table)
            return table[namespace]
        finally:
            os.close(fd)

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()}


def write_seccomp(root: Path) -> str:
    """The compiled filter, written once per runtime directory; returns its path."""
    path = root / f"seccomp-{platform.machine()}.bpf"
    program = build_filter()
    if not path.exists() or path.read_bytes() != program:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(program)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return str(path)


def base_argv(bwrap: str, privileged: bool) -> list[str]:
    """The namespace flags every sandbox gets (the mounts are added per workload)."""
    argv = [bwrap]
    if not privileged:  # unprivileged bubblewrap: a user namespace of its own, no caps
        argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    argv += [
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
    ]
    return argv


def drop_privileges_argv(setpriv: str, uid: int, gid: int) -> list[str]:
    """Run as ``uid``/``gid`` with every capability set empty (after bwrap built the mounts)."""
    return [
        setpriv,
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def _run_probe(argv: Iterable[str]) -> str | None:
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
    return None


@functools.lru_cache(maxsize=8)
def probe(bwrap_path: str | None) -> str | None:
    """None if workloads can be sandboxed here, else what is missing and how to fix it.

    Runs one trivial sandbox with the same namespaces, user switch and seccomp filter real
    workloads get, because "installed" is not "usable": containers often forbid namespaces.
    """
    bwrap = find_bwrap(bwrap_path)
    if bwrap is None:
        return f"bubblewrap (bwrap) was not found at {bwrap_path!r}: {INSTALL_HINT}"
    privileged = os.geteuid() == 0
    argv = base_argv(bwrap, privileged)
    binds, links = system_mounts()
    for src, dst in binds:
        argv += ["--ro-bind", src, dst]
    for target, path in links:
        argv += ["--symlink", target, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--", "true"]
    if privileged:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            return "setpriv (util-linux) was not found; it drops workloads to their own uid"
        tail = argv.index("--")
        argv[tail + 1 : tail + 1] = drop_privileges_argv(setpriv, UID_BASE, UID_BASE)
    problem = _run_probe(argv)
    if problem:
        return f"bubblewrap ({bwrap}) cannot build the workload sandbox here: {problem}"
    return None


def startup_report(bwrap_path: str | None) -> tuple[int, str]:
    """(logging level, message): whether workloads can run here, for ``shipyard up``.

    The local runtime fails closed: without a working bubblewrap every notebook, step, trial
    and model server fails with ``SandboxUnavailable``. The control plane still starts (the
    APIs work), but the operator learns why and how to fix it now, not from a Failed trial.
    """
    problem = probe(bwrap_path)
    if problem:
        return logging.ERROR, (
            f"workloads cannot run on this machine: {problem}. Until this is fixed every "
            "notebook, pipeline step, trial and model server fails with SandboxUnavailable "
            "(nothing runs unsandboxed; see docs/security.md)."
        )
    return logging.INFO, f"workload sandbox: {enforcement_summary()}"


def enforcement_summary() -> str:
    """What the sandbox enforces on this host, for ``shipyard up`` and the docs."""
    layout = cgroup_layout()
    if layout is not None:
        limits = (
            f"limits: CPU, memory and processes per workload (cgroup v{layout['version']}), "
            "processes per namespace (RLIMIT_NPROC), file size (RLIMIT_FSIZE from "
            "resources.limits.ephemeral-storage)"
        )
    else:
        limits = (
            "limits: memory (RLIMIT_AS from resources.limits.memory), processes per "
            "namespace (RLIMIT_NPROC), file size (RLIMIT_FSIZE from "
            "resources.limits.ephemeral-storage); CPU limits are not enforced (no usable "
            "cgroups: run the platform as root on a host with cgroup v2 or v1 controllers)"
        )
    user = (
        "a uid per namespace, no capabilities"
        if os.geteuid() == 0
        else "the platform's uid in a user namespace, no capabilities (run as root for a uid "
        "per namespace)"
    )
    return f"{user}; seccomp; own mount, pid, network, IPC and UTS namespaces; {limits}"


#: The controllers a workload's limits use (cpu.max, memory.max, pids.max).
CGROUP_CONTROLLERS = ("cpu", "memory", "pids")


@functools.lru_cache(maxsize=1)
def cgroup_layout() -> dict[str, object] | None:
    """Where per-workload cgroups can be made here, or None (then rlimits are all there is).

    cgroup v2 when its unified hierarchy offers cpu, memory and pids; else the v1 hierarchies
    of those controllers (this workplace's machines have only those). Only a root platform
    may make cgroups (no delegation is assumed).
    """
    if os.geteuid() != 0:
        return None
    unified = Path("/sys/fs/cgroup/cgroup.controllers")
    try:
        if set(CGROUP_CONTROLLERS) <= set(unified.read_text().split()):
            return {"version": 2, "roots": {"": "/sys/fs/cgroup"}}
    except OSError:
        pass
    roots = {c: f"/sys/fs/cgroup/{c}" for c in CGROUP_CONTROLLERS}
    if all(os.path.isfile(f"{root}/cgroup.procs") for root in roots.values()):
        if all(os.access(root, os.W_OK) for root in roots.values()):
            return {"version": 1, "roots": roots}
    return None


def cgroup_plan(
    key: str, cpu: float | None, memory: int | None, pids: int | None
) -> dict[str, object] | None:
    """The supervisor's cgroup instructions for one workload (``key`` names its cgroup)."""
    layout = cgroup_layout()
    if layout is None:
        return None
    roots = layout["roots"]
    assert isinstance(roots, dict)
    # Joining a cgroup costs a job several milliseconds (the kernel's cgroup lock), so only a
    # workload with a CPU or memory limit gets one; RLIMIT_NPROC bounds the rest per namespace.
    if not cpu and not memory:
        return None
    wanted = {"": True, "cpu": cpu, "memory": memory, "pids": pids}
    return {
        "version": layout["version"],
        # v1: a hierarchy only where there is a limit (each one costs a trivial job time).
        "dirs": {c: f"{root}/shipyard/{key}" for c, root in roots.items() if wanted[c]},
        "cpu": cpu,
        "memory": memory,
        "pids": pids,
    }
