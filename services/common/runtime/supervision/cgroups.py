"""The workload's cgroups (the plan comes from sandbox.cgroup_plan): made, read, removed."""

import os
import sys
import time

from .launch import SandboxError


def write_file(path: str, value: str) -> None:
    """Write ``value`` to a kernel interface file (a cgroup's limit or ``cgroup.procs``)."""
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
                write_file(f"{level}/cgroup.subtree_control", "+cpu +memory +pids")
            os.makedirs(path, exist_ok=True)
            if cg.get("cpu"):
                write_file(f"{path}/cpu.max", f"{max(1000, int(cg['cpu'] * 100000))} 100000")
            if cg.get("memory"):
                write_file(f"{path}/memory.max", str(int(cg["memory"])))
                write_file(f"{path}/memory.swap.max", "0")
            if cg.get("pids"):
                write_file(f"{path}/pids.max", str(int(cg["pids"])))
            return [f"{path}/cgroup.procs"]
        dirs = cg["dirs"]
        for path in dirs.values():
            os.makedirs(path, exist_ok=True)
        if cg.get("cpu") and "cpu" in dirs:
            write_file(f"{dirs['cpu']}/cpu.cfs_period_us", "100000")
            write_file(f"{dirs['cpu']}/cpu.cfs_quota_us", str(max(1000, int(cg["cpu"] * 100000))))
        if cg.get("memory") and "memory" in dirs:
            write_file(f"{dirs['memory']}/memory.limit_in_bytes", str(int(cg["memory"])))
            if os.path.exists(f"{dirs['memory']}/memory.memsw.limit_in_bytes"):
                write_file(f"{dirs['memory']}/memory.memsw.limit_in_bytes", str(int(cg["memory"])))
        if cg.get("pids") and "pids" in dirs:
            write_file(f"{dirs['pids']}/pids.max", str(int(cg["pids"])))
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
