"""The sandbox's command line: bubblewrap's argv from the plan, its mounts, its rlimits.

The plan itself comes from services/common/runtime/sandbox.py (the launch's ``sandbox``); this
module only carries it out, in the supervisor, just before the workload starts.
"""

import os
import resource
import select
import time

from .jsonio import loads


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
