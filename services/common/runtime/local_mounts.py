"""Where a local workload's files come from: its volumes, its working directory, and the
claims' sizes its supervisor measures (the launch plan's mount part, for local.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import VolumeNotFound
from .models import WorkloadSpec
from .quantity import parse_quantity
from .volumes import VolumeStore


class LaunchError(Exception):
    """A problem the user can fix; becomes a Failed status with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def own_for_workload(path: Path, uid: int | None) -> None:
    """Hand a directory the workload writes to its uid (root only), private to it."""
    if uid is not None:
        st = path.stat()
        if st.st_uid != uid:
            os.chown(path, uid, uid)
        path.chmod(0o700)


def cwd_mount(cwd: str, mounts: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    """The working directory: the workload's own ``work`` directory there, unless it lies
    inside one of its mounts."""
    if not any(cwd == m["dst"] or cwd.startswith(m["dst"] + "/") for m in mounts):
        return {"src": str(work), "dst": cwd, "ro": False}
    return _cwd_in_mounts(cwd, mounts)


def _cwd_in_mounts(path: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """A working directory inside a volume mount: the same volume, one level deeper."""
    for mount in sorted(mounts, key=lambda m: len(m["dst"]), reverse=True):
        if path == mount["dst"] or path.startswith(mount["dst"] + "/"):
            rel = os.path.relpath(path, mount["dst"])
            sub = "/".join(p for p in ((mount.get("subPath") or ""), rel) if p and p != ".")
            return {**mount, "dst": path, "subPath": sub or None}
    raise AssertionError("unreachable: the caller checked the path is under a mount")


#: A memory-backed emptyDir here (Kubeflow's "shm") is what the sandbox already provides.
SHM = "/dev/shm"


def resolve_mounts(
    store: VolumeStore, wdir: Path, spec: WorkloadSpec, uid: int | None
) -> list[dict[str, Any]]:
    """The bind mounts of the spec's volumes (claims and emptyDirs); LaunchError for a
    missing claim, a host path or a reserved mount path."""
    volumes = {v.name: v for v in spec.volumes}
    mounts: list[dict[str, Any]] = []
    for i, vm in enumerate(spec.volume_mounts):
        vol = volumes[vm.name]
        if vol.empty_dir is not None and os.path.normpath(vm.mount_path) == SHM:
            continue  # the sandbox's /dev is a tmpfs: every workload has its own /dev/shm
        read_only = vm.read_only
        if vol.persistent_volume_claim is not None:
            claim = vol.persistent_volume_claim
            read_only = read_only or claim.read_only
            try:
                source = store.resolve(spec.namespace, claim.claim_name)
            except (VolumeNotFound, ValueError):
                raise LaunchError(
                    "PersistentVolumeClaimNotFound",
                    f"PersistentVolumeClaim {claim.claim_name} not found in namespace "
                    f"{spec.namespace}",
                ) from None
            own_for_workload(source, uid)
        elif vol.empty_dir is not None:
            source = wdir / "emptydir" / vol.name
            source.mkdir(parents=True, exist_ok=True)
            own_for_workload(source, uid)
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
        mounts.append({"src": str(source), "dst": target, "ro": read_only, "subPath": vm.sub_path})
    return mounts


def volume_limits(store: VolumeStore, spec: WorkloadSpec) -> list[dict[str, Any]]:
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
        size = store.size(spec.namespace, claim.claim_name)
        if not size:
            continue
        field = f"PersistentVolumeClaim {claim.claim_name}: spec.resources.requests.storage"
        try:
            limit = int(parse_quantity(size, field))
        except ValueError as exc:
            raise LaunchError("InvalidVolume", str(exc)) from None
        limits.append(
            {
                "path": str(store.resolve(spec.namespace, claim.claim_name)),
                "claim": claim.claim_name,
                "mountPath": os.path.normpath(vm.mount_path),
                "size": size,
                "bytes": limit,
            }
        )
    return limits
