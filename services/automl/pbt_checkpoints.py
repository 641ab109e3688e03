"""PBT checkpoints: the experiment's volume, each trial's directory on it, and the copy of a
parent's checkpoint into its child's directory before the child starts.

The layout is Katib's. Katib's PBT suggestion gets a PersistentVolumeClaim named
``<experiment>-pbt`` (``<suggestion>-<algorithm>``); Katib's pod webhook mounts it in each
trial's primary container at ``suggestion_trial_dir`` with ``subPath:
<experiment>/<trial>``, so a trial program sees only its own directory there
(Katib's simple-pbt reads and writes ``training.ckpt`` in it). Before a child trial is
created, Katib's suggestion (which mounts the claim at ``/opt/katib/data``) copies its
parent's directory to the child's.

Here the automl service never touches a volume's files itself (no host path from a service,
on either runtime): the copy is a short job through the runtime, ``automl-<trial>-pbt-seed``,
that mounts the claim at ``/opt/katib/data`` and copies ``<experiment>/<parent>`` to
``<experiment>/<trial>`` with the platform's Python (stdlib only), before the trial's own
workload is applied. It is the same on the local runtime (a sandboxed process) and on
Kubernetes (a pod of the platform image). The copy is skipped once the trial's workload
exists (a restarted service must not overwrite a running child's directory), and repeated
harmlessly if the service stopped between the copy and the trial's start.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from services.automl import pbt
from services.automl.models import EXPERIMENT, EXPERIMENT_LABEL
from services.automl.template import workload_name
from services.automl.validation import settings_map
from services.common.runtime import (
    SERVICE_LABEL,
    Runtime,
    RuntimeBackendError,
    WorkloadNotFound,
)

if TYPE_CHECKING:
    from services.automl.controller import AutoMLController

log = logging.getLogger(__name__)

VOLUME_NAME = "suggestion-volume"  # Katib's ContainerSuggestionVolumeName
VOLUME_SIZE = "1Gi"  # Katib's DefaultSuggestionVolumeStorage
DATA_PATH = "/opt/katib/data"  # where Katib's suggestion mounts the claim
SEED_SECONDS = 120.0
LOG_LINES = 10

# Katib's suggestion: the child's directory is replaced by a copy of the parent's (an empty
# one when the parent left none). Links are copied as links, never followed.
COPY_SCRIPT = """\
import os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
if os.path.isdir(dst):
    shutil.rmtree(dst)
if os.path.isdir(src):
    shutil.copytree(src, dst, symlinks=True)
    print(f"copied {src} to {dst}: {sorted(os.listdir(dst))}")
else:
    os.makedirs(dst)
    print(f"{src} holds no checkpoint; {dst} starts empty")
"""


def claim_name(experiment: str) -> str:
    return f"{experiment}-pbt"[:253]


def trial_folder(experiment: str, trial: str) -> str:
    return f"{experiment}/{trial}"


def seed_name(trial: str) -> str:
    return f"{workload_name(trial)}-pbt-seed"[:253]


async def with_checkpoints(
    ctl: AutoMLController, trial: dict[str, Any], workload: dict[str, Any]
) -> dict[str, Any]:
    """``workload`` (a trial's WorkloadSpec as a dict) with the checkpoint volume mounted,
    its parent's checkpoint copied first; unchanged for a trial PBT did not suggest.

    Raises ``ValueError`` when the copy fails: the trial fails saying why (and Katib's PBT
    queues it again)."""
    meta = trial["metadata"]
    labels = meta.get("labels") or {}
    if pbt.GENERATION_LABEL not in labels:
        return workload
    namespace, name = meta["namespace"], meta["name"]
    experiment_name = labels.get(EXPERIMENT_LABEL, "")
    experiment = await ctl.store.find(EXPERIMENT, namespace, experiment_name)
    if experiment is None:
        raise ValueError(f"experiment {experiment_name!r} is gone")
    settings = settings_map(experiment["spec"]["algorithm"].get("algorithmSettings"))
    claim = claim_name(experiment_name)
    await ctl.runtime.create_volume(
        namespace,
        claim,
        size=VOLUME_SIZE,
        labels={SERVICE_LABEL: "automl", EXPERIMENT_LABEL: experiment_name},
    )
    parent = labels.get(pbt.PARENT_LABEL)
    if parent and not await _started(ctl.runtime, namespace, workload["name"]):
        await copy_checkpoint(
            ctl.runtime,
            namespace,
            claim,
            trial_folder(experiment_name, parent),
            trial_folder(experiment_name, name),
            owner=f"trials/{namespace}/{name}",
        )
    return mount_checkpoints(workload, experiment_name, name, pbt.trial_dir(settings))


def mount_checkpoints(
    workload: dict[str, Any], experiment: str, trial: str, mount_path: str
) -> dict[str, Any]:
    """``workload`` with the experiment's claim mounted at ``mount_path``, showing only the
    trial's own directory (``subPath``), as Katib's webhook mounts it."""
    out = dict(workload)
    out["volumes"] = [
        *workload.get("volumes", []),
        {"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": claim_name(experiment)}},
    ]
    out["volumeMounts"] = [
        *workload.get("volumeMounts", []),
        {"name": VOLUME_NAME, "mountPath": mount_path, "subPath": trial_folder(experiment, trial)},
    ]
    return out


async def _started(runtime: Runtime, namespace: str, workload: str) -> bool:
    try:
        await runtime.status(namespace, workload)
    except WorkloadNotFound:
        return False
    return True


async def copy_checkpoint(
    runtime: Runtime,
    namespace: str,
    claim: str,
    source: str,
    target: str,
    *,
    owner: str,
) -> None:
    """Run the copy job ``source`` -> ``target`` (folders of ``claim``) to its end."""
    job = seed_name(target.rsplit("/", 1)[-1])
    spec = {
        "kind": "job",
        "namespace": namespace,
        "name": job,
        "command": [
            runtime.python,
            "-I",
            "-S",
            "-c",
            COPY_SCRIPT,
            f"{DATA_PATH}/{source}",
            f"{DATA_PATH}/{target}",
        ],
        "volumeMounts": [{"name": VOLUME_NAME, "mountPath": DATA_PATH}],
        "volumes": [{"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": claim}}],
        "labels": {SERVICE_LABEL: "automl"},
        "owner": owner,
        "restartPolicy": "Never",
    }
    lines: list[str] = []
    try:
        # A copy job left by an earlier instance of the service (stopped, or still running)
        # is replaced: the copy starts over from an emptied target, so it is safe to redo.
        await runtime.delete(namespace, job)
        await runtime.apply(spec)
        final = await runtime.wait(namespace, job, timeout=SEED_SECONDS)
        async for line in runtime.logs(namespace, job, tail=LOG_LINES):
            lines.append(line)
    except (TimeoutError, RuntimeBackendError, OSError) as exc:
        raise ValueError(f"copying the parent's checkpoint {source}: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            await runtime.delete(namespace, job)
    if final.phase.value != "Succeeded":
        detail = final.message or final.reason or f"exit code {final.exit_code}"
        tail = "\n".join(lines) or "(no output)"
        raise ValueError(f"copying the parent's checkpoint {source} failed: {detail}\n{tail}")
    log.info("pbt: %s/%s: %s", namespace, target, " ".join(lines))


async def delete_volume(runtime: Runtime, experiment: dict[str, Any]) -> None:
    """The experiment's checkpoint volume goes with it (Katib's is owned by its Suggestion)."""
    if (experiment["spec"].get("algorithm") or {}).get("algorithmName") == "pbt":
        meta = experiment["metadata"]
        await runtime.delete_volume(meta["namespace"], claim_name(meta["name"]))
