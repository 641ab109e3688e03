"""PyTorchJob (kubeflow.org/v1) on a real automl service: real replicas, real torch.distributed.

The example (examples/automl/pytorchjob.yaml: one Master, two Workers) runs a gloo all-reduce
on the CPU in three sandboxed workloads sharing one network; the job reports Succeeded with
the operator's replicaStatuses, and each replica's log shows the all-reduced sum. A failing
worker fails the job; bad specs get 422s naming the field.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import yaml

from tests.automl.conftest import NAMESPACE, AutoML, unique

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "automl"
JOBS = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs"


def example_job(name: str) -> dict[str, Any]:
    obj = yaml.safe_load((EXAMPLES / "pytorchjob.yaml").read_text())
    obj["metadata"]["name"] = name
    return obj


async def wait_job(
    automl: AutoML,
    name: str,
    done: Any,
    timeout: float = 90,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Wait until ``done(job)`` holds; return the job."""
    async with asyncio.timeout(timeout):
        while True:
            r = await automl.request("GET", f"{JOBS}/{name}")
            assert r.status_code == 200, r.text
            job = r.json()
            if done(job):
                return job
            await asyncio.sleep(0.3)


def true_types(job: dict[str, Any]) -> list[str]:
    return [c["type"] for c in job.get("status", {}).get("conditions", []) if c["status"] == "True"]


def ended_either_way(job: dict[str, Any]) -> bool:
    return bool({"Succeeded", "Failed"} & set(true_types(job)))


async def replica_log(automl: AutoML, name: str, replica: str) -> str:
    r = await automl.request("GET", f"{JOBS}/{name}/log", params={"container": replica})
    assert r.status_code == 200, r.text
    return r.text


def test_example_inlines_the_trial_program() -> None:
    code = (EXAMPLES / "pytorchjob_trial.py").read_text()
    job = example_job("x")
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        assert replica["template"]["spec"]["containers"][0]["command"][2] == code


async def test_pytorchjob_allreduce_master_and_two_workers(automl: AutoML) -> None:
    name = unique("ptj")
    r = await automl.request("POST", JOBS, json=example_job(name))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["runPolicy"]["cleanPodPolicy"] == "None"  # the operator's default

    def ended(job: dict[str, Any]) -> bool:
        counts = job.get("status", {}).get("replicaStatuses", {})
        final = {"Succeeded", "Failed"} & set(true_types(job))
        return bool(final) and counts.get("Worker", {}).get("active") is None

    job = await wait_job(automl, name, ended)
    status = job["status"]
    assert true_types(job) == ["Created", "Succeeded"], status
    assert status["replicaStatuses"] == {"Master": {"succeeded": 1}, "Worker": {"succeeded": 2}}
    succeeded = status["conditions"][-1]
    assert succeeded["reason"] == "PyTorchJobSucceeded"
    assert succeeded["message"] == f"PyTorchJob {NAMESPACE}/{name} successfully completed."
    running = next(c for c in status["conditions"] if c["type"] == "Running")
    assert running["status"] == "False" and running["reason"] == "PyTorchJobRunning"
    assert status["startTime"] <= status["completionTime"]
    for rank, replica in enumerate(["master-0", "worker-0", "worker-1"]):
        text = await replica_log(automl, name, replica)
        assert f"allreduce: rank={rank} world=3 sum=6" in text, text
    assert "loss=" in await replica_log(automl, name, "master-0")

    r = await automl.request("DELETE", f"{JOBS}/{name}")
    assert r.status_code == 200, r.text

    async with asyncio.timeout(30):  # the finalizer goes once the replicas are deleted
        while True:
            if (await automl.request("GET", f"{JOBS}/{name}")).status_code == 404:
                break
            await asyncio.sleep(0.2)
    r = await automl.request("GET", f"{JOBS}/{name}/log")
    assert r.status_code == 404


async def test_pytorchjob_failing_worker_fails_the_job(automl: AutoML) -> None:
    name = unique("ptj-fail")
    job = example_job(name)
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    worker["restartPolicy"] = "Never"
    # One worker: with two, the first to fail fails the job and the other may be stopped
    # before it prints (a replica still running when the job fails is stopped).
    worker["replicas"] = 1
    worker["template"]["spec"]["containers"][0]["command"] = [
        "python3",
        "-c",
        "import sys; print('worker gives up'); sys.exit(3)",
    ]
    r = await automl.request("POST", JOBS, json=job)
    assert r.status_code == 201, r.text
    job = await wait_job(automl, name, lambda j: "Failed" in true_types(j))
    failed = job["status"]["conditions"][-1]
    assert failed["type"] == "Failed" and failed["reason"] == "PyTorchJobFailed"
    assert f"PyTorchJob {NAMESPACE}/{name} has failed because" in failed["message"]
    assert "Worker replica(s) failed" in failed["message"]
    assert job["status"]["replicaStatuses"]["Worker"].get("failed", 0) == 1
    assert "worker gives up" in await replica_log(automl, name, "worker-0")
    # The master, left waiting for its peers, is stopped rather than left to hang.
    await wait_job(automl, name, lambda j: "active" not in j["status"]["replicaStatuses"]["Master"])


async def test_pytorchjob_validation_names_the_field(automl: AutoML) -> None:
    base = example_job("ptj-bad")
    cases: list[tuple[str, Any]] = []

    two_masters = copy.deepcopy(base)
    two_masters["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    cases.append(("spec.pytorchReplicaSpecs.Master.replicas", two_masters))

    renamed = copy.deepcopy(base)
    renamed["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0][
        "name"
    ] = "trainer"
    cases.append(("spec.pytorchReplicaSpecs.Worker.template.spec.containers", renamed))

    chief = copy.deepcopy(base)
    chief["spec"]["pytorchReplicaSpecs"]["Chief"] = chief["spec"]["pytorchReplicaSpecs"]["Worker"]
    cases.append(("spec.pytorchReplicaSpecs.Chief", chief))

    policy = copy.deepcopy(base)
    policy["spec"]["pytorchReplicaSpecs"]["Master"]["restartPolicy"] = "Sometimes"
    cases.append(("spec.pytorchReplicaSpecs.Master.restartPolicy", policy))

    backoff = copy.deepcopy(base)
    backoff["spec"]["runPolicy"] = {"backoffLimit": -1}
    cases.append(("spec.runPolicy.backoffLimit", backoff))

    host = copy.deepcopy(base)
    host["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["volumes"] = [
        {"name": "h", "hostPath": {"path": "/etc"}}
    ]
    cases.append(("spec.pytorchReplicaSpecs.Master.template.spec.volumes[0].hostPath", host))

    for field, body in cases:
        r = await automl.request("POST", JOBS, json=body)
        assert r.status_code == 422, (field, r.text)
        status = r.json()
        assert status["kind"] == "Status" and status["reason"] == "Invalid"
        fields = [c["field"] for c in status["details"]["causes"]]
        assert field in fields, (field, status)


async def test_pytorchjob_clean_pod_policy_all_and_ttl(automl: AutoML) -> None:
    """cleanPodPolicy All deletes the replicas once the job ends (their logs go with them);
    ttlSecondsAfterFinished then deletes the job."""
    name = unique("ptj-ttl")
    job = example_job(name)
    del job["spec"]["pytorchReplicaSpecs"]["Worker"]
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    master["command"] = ["python3", "-c", "import os; print('rank', os.environ['RANK'])"]
    job["spec"]["runPolicy"] = {"cleanPodPolicy": "All", "ttlSecondsAfterFinished": 2}
    r = await automl.request("POST", JOBS, json=job)
    assert r.status_code == 201, r.text
    done = await wait_job(automl, name, lambda j: "Succeeded" in true_types(j))
    assert done["status"]["replicaStatuses"] == {"Master": {"succeeded": 1}}
    async with asyncio.timeout(30):
        while True:  # the replica's workload is deleted, then (2 s after completion) the job
            r = await automl.request("GET", f"{JOBS}/{name}/log")
            if r.status_code == 404:
                break
            await asyncio.sleep(0.2)
        while (await automl.request("GET", f"{JOBS}/{name}")).status_code != 404:  # noqa: ASYNC110
            await asyncio.sleep(0.2)


ONCE_KILLED = """
import os, signal
marker = "/state/ran-once"
if os.path.exists(marker):
    print("second run: done")
else:
    open(marker, "w").close()
    print("first run: killed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


async def test_pytorchjob_exit_code_policy_restarts_only_retryable_codes(automl: AutoML) -> None:
    """ExitCode: a replica killed by a signal (137, retryable) runs again as a new workload
    and the job goes Restarting, then Succeeded; exit code 1 (permanent) fails the job."""
    runtime = automl.app.state.ctx.runtime
    claim = unique("ptj-state")
    await runtime.create_volume(NAMESPACE, claim)
    outcomes = {}
    for code, script in (("137", ONCE_KILLED), ("1", "import sys; sys.exit(1)")):
        name = unique(f"ptj-exit{code}")
        job = example_job(name)
        del job["spec"]["pytorchReplicaSpecs"]["Worker"]
        master = job["spec"]["pytorchReplicaSpecs"]["Master"]
        master["restartPolicy"] = "ExitCode"
        pod = master["template"]["spec"]
        pod["volumes"] = [{"name": "state", "persistentVolumeClaim": {"claimName": claim}}]
        pod["containers"][0]["command"] = ["python3", "-c", script]
        pod["containers"][0]["volumeMounts"] = [{"name": "state", "mountPath": "/state"}]
        r = await automl.request("POST", JOBS, json=job)
        assert r.status_code == 201, r.text
        outcomes[code] = await wait_job(automl, name, ended_either_way)
    restarted = outcomes["137"]["status"]
    types = [c["type"] for c in restarted["conditions"]]
    assert types[-1] == "Succeeded" and "Restarting" in types, restarted
    restarting = next(c for c in restarted["conditions"] if c["type"] == "Restarting")
    assert restarting["reason"] == "PyTorchJobRestarting" and restarting["status"] == "False"
    assert restarted["replicaStatuses"] == {"Master": {"succeeded": 1}}
    failed = outcomes["1"]["status"]
    assert [c["type"] for c in failed["conditions"]][-1] == "Failed", failed
    assert "Restarting" not in [c["type"] for c in failed["conditions"]]
