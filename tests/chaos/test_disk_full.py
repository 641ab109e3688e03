"""A workload fills its volume; another fills its ephemeral storage; the platform keeps going.

- ``wf-fill`` writes 256 KiB files to a 1Mi claim until it is stopped: the local runtime's
  supervisor measures the claims a workload writes to (a local claim is a directory of the
  host's filesystem, which does not stop at the claim's size) and stops it; the step and the
  workflow fail with a message that names the claim, its size and what to do.
- ``wf-scratch`` writes one file past its ``resources.limits.ephemeral-storage`` (1Mi) in its
  own /tmp: RLIMIT_FSIZE stops the write and the step fails saying so.

Meanwhile a counted workflow and a small experiment run on to success, every service stays
up and ready, and the API answers.
"""

from __future__ import annotations

import functools
from typing import Any

from tests import specs
from tests.chaos.conftest import ChaosPlatform
from tests.chaos.mix import (
    ARGO,
    CLAIMS,
    api_client,
    create_claim,
    experiment_condition,
    finished_workflow,
    ready,
    start_experiment,
    start_workflow,
    tally,
    wait_until,
)

# Files of 256 KiB, one after another, until the writer is stopped (or dd fails).
FILL = "i=0; while dd if=/dev/zero of=/d/f$i bs=64k count=4 2>/dev/null; do i=$((i+1)); done"
# One file that would be 4 MiB, in the workload's own /tmp.
SCRATCH = "dd if=/dev/zero of=/tmp/big bs=64k count=64"


def _one_step(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return specs.workflow(
        name,
        [
            {
                "name": "main",
                "container": {"image": "alpine", "command": ["sh", "-c", script], **extra},
            }
        ],
    )


def _failed_node(wf: dict[str, Any]) -> dict[str, Any]:
    pods = [n for n in wf["status"]["nodes"].values() if n.get("type") == "Pod"]
    assert len(pods) == 1, wf["status"]["nodes"]
    return pods[0]


def test_disk_full_fails_the_workload_with_a_clear_reason_and_the_platform_runs_on(
    chaos_platform: ChaosPlatform,
) -> None:
    cp = chaos_platform
    api = api_client(cp.gateway)
    start_experiment(api, "chaos-disk", trials=4, parallel=2, seconds=2)
    start_workflow(api, "wf-steady", first_step_seconds=4)

    create_claim(api, "fill-data")  # 1Mi
    fill = _one_step("wf-fill", FILL, volumeMounts=[{"name": "d", "mountPath": "/d"}])
    fill["spec"]["volumes"] = [{"name": "d", "persistentVolumeClaim": {"claimName": "fill-data"}}]
    r = api.post(ARGO, json=fill)
    assert r.status_code == 201, r.text
    scratch = _one_step("wf-scratch", SCRATCH, resources={"limits": {"ephemeral-storage": "1Mi"}})
    r = api.post(ARGO, json=scratch)
    assert r.status_code == 201, r.text

    filled = finished_workflow(api, "wf-fill", 120)
    assert filled["status"]["phase"] == "Failed", filled["status"]
    node = _failed_node(filled)
    assert node["phase"] == "Failed", node
    message = node["message"]
    assert message.startswith("No space left on device: PersistentVolumeClaim fill-data"), node
    assert "mounted at /d" in message and "more than its size 1Mi" in message, message
    assert "Delete files from the claim or use a larger one" in message, message

    scratched = finished_workflow(api, "wf-scratch", 120)
    assert scratched["status"]["phase"] == "Failed", scratched["status"]
    message = _failed_node(scratched)["message"]
    assert message.startswith(
        "File too large: a file reached resources.limits.ephemeral-storage"
    ), message
    assert "(1.0Mi, enforced per file)" in message, message

    # The platform runs on: the other work finishes, every process is up and ready, and the
    # API answers (the full claim included).
    steady = finished_workflow(api, "wf-steady", 120)
    assert steady["status"]["phase"] == "Succeeded", steady["status"]
    assert tally(steady) == "a=1 b=1", tally(steady)
    condition = wait_until(
        "experiment finished", lambda: experiment_condition(api, "chaos-disk"), 120
    )
    assert condition == ("Succeeded", "ExperimentMaxTrialsReached"), condition
    assert cp.exited() == {}, {n: cp.logs(n) for n in cp.exited()}
    for name, url in cp.platform.urls.items():  # type: ignore[attr-defined]
        wait_until(f"{name} ready", functools.partial(ready, url), 30)
    r = api.get(f"{CLAIMS}/fill-data")
    assert r.status_code == 200 and r.json()["metadata"]["name"] == "fill-data", r.text
    r = api.get(ARGO)
    assert r.status_code == 200, r.text
    phases = {w["metadata"]["name"]: w["status"]["phase"] for w in r.json()["items"]}
    assert phases == {"wf-steady": "Succeeded", "wf-fill": "Failed", "wf-scratch": "Failed"}
