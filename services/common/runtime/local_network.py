"""Workload networks on the local runtime: the workloads of one group share a network namespace.

A sandbox normally has a network namespace of its own holding only a loopback (sandbox.py).
That is too little for a distributed job: ``torch.distributed`` (gloo) has every rank connect
to every other rank on ports chosen at run time and exchanged through the master's store, so
relaying a fixed port or two cannot work. The pods of a Kubernetes cluster simply share one
network; here the members of a group (``WorkloadSpec.network.group``, within one namespace)
share one network namespace, as the containers of one pod do:

* the first member's bubblewrap makes the namespace (``--unshare-net``, as for any workload);
  each member's supervisor records its sandbox's first process in the group's
  ``members.json``, and a later member's supervisor opens ``/proc/<pid>/ns/net`` of a live
  member and starts bubblewrap inside that namespace instead (supervision/group.py), all
  under the group's lock, so two members starting at once cannot make two namespaces;
* every member resolves every name of the group (its ``hostname`` and its ``peers``) to the
  loopback, through its own ``/etc/hosts``;
* each member's supervisor still relays the platform's egress addresses into the namespace;
  in a shared one their listeners take the same address with ``SO_REUSEPORT`` (only the
  platform's user can join such a group), so a member that ends does not cut the others off.

The group is the tenant's own: only workloads of one namespace join it, each still in its own
pid, mount, IPC and UTS namespaces and under its namespace's uid. Joining a network
namespace made by another sandbox is left to a root platform (which holds CAP_SYS_ADMIN over
it); an unprivileged platform's joining member fails with ``SandboxUnavailable`` (fail closed)
rather than run on a network of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .models import WorkloadSpec
from .supervisor import proc_start_time

NETWORKS = "networks"
LOOPBACK = "127.0.0.1"
#: A group's directory goes once its members have ended and it was untouched this long.
PRUNE_AFTER_SECONDS = 600.0
PRUNE_SCAN = 1000


def network_dir(root: Path, namespace: str, group: str) -> Path:
    """The group's directory: its lock and ``members.json`` (the platform's alone)."""
    path = root / NETWORKS / namespace / group
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def prune(root: Path, namespace: str, keep: str) -> int:
    """Remove the namespace's group directories whose members have all ended, untouched for
    :data:`PRUNE_AFTER_SECONDS` (no member is starting); returns how many went."""
    removed = 0
    for path in sorted((root / NETWORKS / namespace).glob("*"))[:PRUNE_SCAN]:
        if path.name == keep or not path.is_dir():
            continue
        members = path / "members.json"
        try:
            stamp = max(path.stat().st_mtime, members.stat().st_mtime if members.exists() else 0)
            recorded = json.loads(members.read_text()) if members.exists() else []
            live = [
                m for m in recorded if proc_start_time(int(m.get("pid") or 0)) == m.get("start")
            ]
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        if not live and time.time() - stamp > PRUNE_AFTER_SECONDS:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def plan(root: Path, spec: WorkloadSpec, etc_dir: str, box: dict[str, Any]) -> None:
    """Add the group's network to a sandbox plan ``box``: where the group's state is, and an
    ``/etc/hosts`` that maps the group's names to the loopback."""
    network = spec.network
    if network is None:
        return
    box["network"] = {"dir": str(network_dir(root, spec.namespace, network.group))}
    prune(root, spec.namespace, keep=network.group)
    names = [n for n in [network.hostname, *network.peers] if n]
    try:
        base = Path(etc_dir, "hosts").read_text()
    except OSError:
        base = f"{LOOPBACK}\tlocalhost\n"
    if not base.endswith("\n"):
        base += "\n"
    hosts = base + "".join(f"{LOOPBACK}\t{name}\n" for name in dict.fromkeys(names))
    files = [f for f in box.get("files") or [] if f["dst"] != "/etc/hosts"]
    box["files"] = [*files, {"dst": "/etc/hosts", "data": hosts}]
    os.chmod(box["network"]["dir"], 0o700)
