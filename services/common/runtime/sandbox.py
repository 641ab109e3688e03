"""Build the bubblewrap (``bwrap``) command line that sandboxes a local workload.

The sandbox shows the host read-only (so the platform's Python and tools work as they are),
gives the workload its own writable working directory and ``/tmp``, fresh ``/dev`` and
``/proc``, a new pid namespace (when its first process dies, the kernel kills every process
left in it, so nothing escapes ``delete``), and the shared host network (servers bind
127.0.0.1). Volumes are bind-mounted read-write at their ``mountPath``.

A ``mountPath`` such as ``/gotest/outputs/output_text`` usually does not exist on the host, and
bwrap cannot create it below a read-only bind of ``/``. For such paths the nearest existing
ancestor is rebuilt as a tmpfs holding read-only binds of its host children, then remounted
read-only once the mount points exist, so the workload still sees an unwritable host.

Flags were checked on the project machines (Debian 12, bubblewrap 0.8, running as root): no
``--unshare-user`` is needed (root may create mount and pid namespaces directly), and none is
added, so files written to volumes belong to the service's own user. ``probe_bwrap`` re-checks
once per runtime, since containers without the needed privileges make bwrap fail at start.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with `apt-get install bubblewrap`"
# Paths the sandbox provides itself, never copied from the host.
_ROOT_SKIP = {"/proc", "/dev", "/tmp"}


@dataclass(frozen=True)
class BindMount:
    source: Path
    target: str
    read_only: bool = False


def find_bwrap(path: str | None) -> str | None:
    """Resolve the bwrap executable (a name on PATH or a path); None if unavailable."""
    if not path:
        return None
    return shutil.which(path)


@functools.lru_cache(maxsize=8)
def probe_bwrap(executable: str) -> str | None:
    """Run a trivial sandbox once; return None if bwrap works here, else the error text.

    Containers often forbid the namespaces bwrap needs, so "installed" is not "usable".
    """
    argv = [
        executable,
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--unshare-pid",
        "--die-with-parent",
        "--",
        "true",
    ]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
    return None


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _covered(path: str, targets: Sequence[str]) -> bool:
    """True if path is at or below one of the mount targets (so bwrap can create it there)."""
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets)


def _overlay_dirs(targets: Sequence[str]) -> list[str]:
    """Host directories that must become a tmpfs so that missing mount points can be made.

    Walking up from a missing target, stop at the first ancestor that is itself a mount
    target (bwrap creates the mount point inside that bind) or that exists on the host (that
    one gets the tmpfs overlay).
    """
    covering = [*targets, "/tmp"]
    overlays: set[str] = set()
    for target in targets:
        if _exists(target):
            continue
        parent = os.path.dirname(target)
        while True:
            if any(_covered(parent, [t]) for t in covering if t != target):
                break
            if _exists(parent):
                overlays.add(parent)
                break
            parent = os.path.dirname(parent)
    return sorted(overlays, key=lambda p: (p.count("/"), p))


def _rebind_children(directory: str, is_root: bool) -> list[str]:
    args: list[str] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        log.warning("cannot list %s for the sandbox: %s", directory, exc)
        return args
    for entry in entries:
        path = os.path.join(directory, entry.name)
        if is_root and path in _ROOT_SKIP:
            continue
        if entry.is_symlink():
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind-try", path, path]
    return args


def build_bwrap_argv(
    bwrap: str,
    argv: Sequence[str],
    *,
    mounts: Sequence[BindMount],
    tmp_dir: Path,
    cwd: str,
    host_paths: Sequence[str] = (),
) -> list[str]:
    """The full argv: bwrap, its options, ``--``, then the workload's own argv unchanged.

    ``host_paths`` stay visible read-only even where the sandbox hides their parent: the
    platform's virtualenv and source tree may live under ``/tmp`` (a CI checkout), which
    the workload's private ``/tmp`` would otherwise cover.
    """
    targets = [os.path.normpath(m.target) for m in mounts]
    overlays = _overlay_dirs(targets)
    args = [bwrap]
    if "/" in overlays:
        args += _rebind_children("/", is_root=True)
    else:
        args += ["--ro-bind", "/", "/"]
    args += ["--dev", "/dev", "--proc", "/proc", "--bind", str(tmp_dir), "/tmp"]
    for path in sorted({os.path.normpath(p) for p in host_paths}):
        if path == "/tmp" or path.startswith("/tmp/"):
            args += ["--ro-bind", path, path]
    for overlay in overlays:
        if overlay != "/":
            args += ["--tmpfs", overlay, *_rebind_children(overlay, is_root=False)]
    for mount, target in sorted(zip(mounts, targets, strict=True), key=lambda mt: mt[1].count("/")):
        args += ["--ro-bind" if mount.read_only else "--bind", str(mount.source), target]
    for overlay in overlays:
        args += ["--remount-ro", overlay]
    args += ["--chdir", cwd, "--unshare-pid", "--die-with-parent", "--", *argv]
    return args
