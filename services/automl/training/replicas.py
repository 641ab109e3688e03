"""Each replica of a PyTorchJob as a runtime job workload, with what torch.distributed reads.

As the Training Operator sets them on every replica's ``pytorch`` container: ``MASTER_ADDR``
(the master's hostname, ``<job>-master-0``: a headless Service on Kubernetes, the loopback of
the group's shared network locally), ``MASTER_PORT`` (the master's ``pytorchjob-port``,
23456 unless its container declares one), ``WORLD_SIZE`` (every replica), ``RANK`` (0 for
the master, 1 + i for worker i) and ``PYTHONUNBUFFERED``. The replicas of one job form one
workload network (``WorkloadSpec.network``), so the ranks' gloo connections reach each other.
"""

from __future__ import annotations

from typing import Any

from services.automl.template import pod_workload
from services.automl.training.validation import CONTAINER
from services.common.runtime import SERVICE_LABEL

JOB_NAME_LABEL = "training.kubeflow.org/job-name"
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
OPERATOR_LABEL = "training.kubeflow.org/operator-name"
OPERATOR_NAME = "pytorchjob-controller"
#: Restarts this platform made of a replica under the ExitCode policy (a new workload each).
RESTARTS_LABEL = "training.shipyard.io/restarts"
DEFAULT_PORT = 23456
PORT_NAME = "pytorchjob-port"
WORKLOAD_PREFIX = "pytorchjob-"


def hostname(job: str, rtype: str, index: int) -> str:
    """The replica's pod (and Service) name under the operator: ``<job>-<type>-<index>``."""
    return f"{job}-{rtype.lower()}-{index}"


def workload_name(job: str, rtype: str, index: int) -> str:
    return f"{WORKLOAD_PREFIX}{hostname(job, rtype, index)}"[:253]


def selector(job: str) -> dict[str, str]:
    """The labels every replica workload of ``job`` carries."""
    return {SERVICE_LABEL: "automl", JOB_NAME_LABEL: job}


def replica_list(job: dict[str, Any]) -> list[tuple[str, int]]:
    """(replica type, index) of every replica: the master first, so it is rank 0."""
    specs = job["spec"]["pytorchReplicaSpecs"]
    out = [("Master", i) for i in range(int((specs.get("Master") or {}).get("replicas", 1)))]
    worker = specs.get("Worker")
    if worker is not None:
        out += [("Worker", i) for i in range(int(worker.get("replicas", 1)))]
    return out


def master_port(job: dict[str, Any]) -> int:
    master = job["spec"]["pytorchReplicaSpecs"].get("Master") or {}
    for container in ((master.get("template") or {}).get("spec") or {}).get("containers") or []:
        if container.get("name") == CONTAINER:
            for port in container.get("ports") or []:
                if port.get("name") == PORT_NAME and port.get("containerPort"):
                    return int(port["containerPort"])
    return DEFAULT_PORT


def replica_workload(
    job: dict[str, Any], rtype: str, index: int, restarts: int = 0
) -> dict[str, Any]:
    """The WorkloadSpec (a dict) of one replica; raises TemplateError if it cannot run."""
    meta, spec = job["metadata"], job["spec"]
    name, namespace = meta["name"], meta["namespace"]
    replica = spec["pytorchReplicaSpecs"][rtype]
    replicas = replica_list(job)
    rank = replicas.index((rtype, index))
    env = {
        "MASTER_PORT": str(master_port(job)),
        "MASTER_ADDR": hostname(name, "Master", 0),
        "WORLD_SIZE": str(len(replicas)),
        "RANK": str(rank),
        "PYTHONUNBUFFERED": "1",
    }
    pod = (replica.get("template") or {}).get("spec") or {}
    where = f"spec.pytorchReplicaSpecs.{rtype}.template.spec"
    workload = pod_workload(
        pod,
        CONTAINER,
        namespace=namespace,
        name=workload_name(name, rtype, index),
        env=env,
        where=where,
    )
    policy = replica.get("restartPolicy", "OnFailure")
    # ExitCode restarts are the controller's (a new workload); Always: see docs/automl.md.
    workload["restartPolicy"] = "OnFailure" if policy in ("OnFailure", "Always") else "Never"
    run = spec.get("runPolicy") or {}
    if run.get("backoffLimit") is not None and policy != "Never":
        workload["backoffLimit"] = int(run["backoffLimit"])
    if run.get("activeDeadlineSeconds") is not None:
        workload["activeDeadlineSeconds"] = float(run["activeDeadlineSeconds"])
    pod_labels = ((replica.get("template") or {}).get("metadata") or {}).get("labels") or {}
    workload["labels"] = {
        **{k: str(v) for k, v in pod_labels.items()},
        **selector(name),
        OPERATOR_LABEL: OPERATOR_NAME,
        REPLICA_TYPE_LABEL: rtype.lower(),
        REPLICA_INDEX_LABEL: str(index),
        RESTARTS_LABEL: str(restarts),
    }
    if rtype == "Master":
        workload["labels"][JOB_ROLE_LABEL] = "master"
    workload["owner"] = f"pytorchjobs/{namespace}/{name}"
    workload["network"] = {
        "group": f"{WORKLOAD_PREFIX}{name}",
        "hostname": hostname(name, rtype, index),
        "peers": [hostname(name, "Master", 0)],
    }
    return workload
