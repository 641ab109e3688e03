"""The real platform through the real gateway: processes, single-user mode, real clients."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from services.common.runtime import LocalRuntime
from services.common.settings import SINGLE_USER_NAMESPACE as NS

SEED = Path(__file__).parent / "seed"


def shipyard(platform: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shipyard.cli", "--server", platform.gateway_url, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_readyz_green_through_gateway(platform: Any) -> None:
    r = httpx.get(platform.gateway_url + "/readyz", timeout=10)
    assert r.status_code == 200, r.text
    assert "notebook" in r.text and "pipeline" in r.text and "automl" in r.text


def test_kubernetes_client_through_gateway(platform: Any) -> None:
    """CoreV1Api against the gateway: CRUD, 409 on a stale replace, and a watch that sees
    ADDED, MODIFIED and DELETED (the notebook service's controller adds its own MODIFIED
    events: Bound, and the pvc-protection finalizer's removal)."""
    core = client.CoreV1Api(client.ApiClient(client.Configuration(host=platform.gateway_url)))
    start = core.list_namespaced_persistent_volume_claim(NS)
    events: list[tuple[str, str, str]] = []

    def run_watch() -> None:
        w = watch.Watch()
        for event in w.stream(
            core.list_namespaced_persistent_volume_claim,
            NS,
            resource_version=start.metadata.resource_version,
            timeout_seconds=30,
        ):
            obj = event["object"]
            if obj.metadata.name != "gw-claim":
                continue
            events.append(
                (
                    event["type"],
                    (obj.metadata.labels or {}).get("team", ""),
                    (obj.status.phase if obj.status else None) or "",
                )
            )
            if event["type"] == "DELETED":
                w.stop()

    watcher = threading.Thread(target=run_watch, daemon=True)
    watcher.start()
    body = client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="gw-claim", labels={"team": "ml"}),
        spec=client.V1PersistentVolumeClaimSpec(access_modes=["ReadWriteOnce"]),
    )
    created = core.create_namespaced_persistent_volume_claim(NS, body)
    got = core.read_namespaced_persistent_volume_claim("gw-claim", NS)
    assert got.metadata.uid == created.metadata.uid and got.spec.access_modes == ["ReadWriteOnce"]
    listed = core.list_namespaced_persistent_volume_claim(NS, label_selector="team=ml")
    assert [i.metadata.name for i in listed.items] == ["gw-claim"]
    core.patch_namespaced_persistent_volume_claim(
        "gw-claim", NS, {"metadata": {"labels": {"team": "ops"}}}
    )
    try:
        core.replace_namespaced_persistent_volume_claim("gw-claim", NS, created)
        raise AssertionError("a stale resourceVersion must conflict")
    except ApiException as exc:
        assert exc.status == 409
    core.delete_namespaced_persistent_volume_claim("gw-claim", NS)
    watcher.join(30)
    assert events[0] == ("ADDED", "ml", "")
    assert ("MODIFIED", "ops", "Bound") in events
    assert events[-1][0] == "DELETED"
    assert [e[0] for e in events[1:-1]] == ["MODIFIED"] * (len(events) - 2)


def test_seed_pvc_applies_and_binds(platform: Any) -> None:
    first = shipyard(platform, "apply", "-f", str(SEED / "pvc.yaml"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "persistentvolumeclaim/kubeflow-test-pv created"
    again = shipyard(platform, "apply", "-f", str(SEED / "pvc.yaml"))
    assert again.stdout.strip() == "persistentvolumeclaim/kubeflow-test-pv unchanged"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        table = shipyard(platform, "get", "pvc")
        if "Bound" in table.stdout:
            break
        time.sleep(0.2)
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATUS", "CAPACITY"], table.stdout
    rows = [line.split()[:3] for line in lines[1:]]  # other tests' claims may be listed too
    assert ["kubeflow-test-pv", "Bound", "128Mi"] in rows, table.stdout
    as_yaml = shipyard(platform, "get", "pvc", "kubeflow-test-pv", "-o", "yaml")
    assert "storage: 128Mi" in as_yaml.stdout

    # A job that mounts the claim at the seed's path writes a file; a second job reads it.
    runtime = LocalRuntime(platform.state_dir)
    mount = {
        "volumeMounts": [{"name": "workdir", "mountPath": "/gotest/outputs/output_text/"}],
        "volumes": [
            {"name": "workdir", "persistentVolumeClaim": {"claimName": "kubeflow-test-pv"}}
        ],
    }
    asyncio.run(
        runtime.apply(
            {
                "namespace": NS,
                "name": "seed-writer",
                "command": [
                    "python3",
                    "-c",
                    "open('/gotest/outputs/output_text/data', 'w').write('Hello\\n' * 3)",
                ],
                **mount,
            }
        )
    )
    assert asyncio.run(runtime.wait(NS, "seed-writer", timeout=30)).exit_code == 0
    asyncio.run(
        runtime.apply(
            {
                "namespace": NS,
                "name": "seed-reader",
                "command": ["cat", "/gotest/outputs/output_text/data"],
                **mount,
            }
        )
    )
    assert asyncio.run(runtime.wait(NS, "seed-reader", timeout=30)).exit_code == 0

    async def read_logs() -> list[str]:
        return [line async for line in runtime.logs(NS, "seed-reader")]

    assert asyncio.run(read_logs()) == ["Hello"] * 3


def test_apply_reports_invalid_objects(platform: Any) -> None:
    bad = (
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: Bad_Name}\n---\n"
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: fine}\n"
        "spec: {accessModes: [ReadWriteOnce], bogus: 1}\n"
    )
    result = shipyard(platform, "apply", "-f", "-", stdin=bad)
    assert result.returncode == 1
    assert "metadata.name" in result.stderr and "spec.bogus" in result.stderr
    assert "Traceback" not in result.stderr


def test_get_unknown_kind_says_what_exists(platform: Any) -> None:
    result = shipyard(platform, "get", "gizmos")
    assert result.returncode == 1
    assert "persistentvolumeclaims" in result.stderr


def test_cli_get_watch_delete_round_trip(platform: Any) -> None:
    import json

    doc = (
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: cli-claim\n"
        "  labels: {owner: cli}\nspec:\n  accessModes: [ReadWriteOnce]\n"
    )
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shipyard.cli",
            "--server",
            platform.gateway_url,
            "get",
            "pvc",
            "-w",
            "-l",
            "owner=cli",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        assert shipyard(platform, "apply", "-f", "-", stdin=doc).stdout.strip() == (
            "persistentvolumeclaim/cli-claim created"
        )
        changed = doc.replace("owner: cli}", "owner: cli, tier: gold}")
        assert shipyard(platform, "apply", "-f", "-", stdin=changed).stdout.strip() == (
            "persistentvolumeclaim/cli-claim configured"
        )
        listed = json.loads(shipyard(platform, "get", "pvc", "-o", "json").stdout)
        assert listed["kind"] == "List"
        assert [
            i["metadata"]["labels"] for i in listed["items"] if i["metadata"]["name"] == "cli-claim"
        ] == [{"owner": "cli", "tier": "gold"}]
        # Listing across namespaces needs a cluster admin; the error says so.
        everywhere = shipyard(platform, "get", "pvc", "-A")
        assert everywhere.returncode == 1 and "cluster scope" in everywhere.stderr
        deleted = shipyard(platform, "delete", "pvc", "cli-claim")
        assert deleted.stdout.strip() == 'persistentvolumeclaim "cli-claim" deleted'
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if shipyard(platform, "get", "pvc", "cli-claim").returncode == 1:
                break
            time.sleep(0.2)
        missing = shipyard(platform, "delete", "pvc", "cli-claim")
        assert missing.returncode == 1 and "not found" in missing.stderr
        nothing = shipyard(platform, "delete")
        assert nothing.returncode == 1 and "KIND NAME... or -f FILE" in nothing.stderr
        time.sleep(1.0)
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][0] == "NAME"
    assert len(rows) >= 4 and {r[0] for r in rows[1:]} == {"cli-claim"}, out


def test_seed_workflow_through_cli(platform: Any) -> None:
    """The seed's PVC and Workflow exactly as written, via `shipyard apply -f`, then logs."""
    import json

    assert shipyard(platform, "apply", "-f", str(SEED / "pvc.yaml")).returncode == 0
    applied = shipyard(platform, "apply", "-f", str(SEED / "workflow.yaml"))
    assert applied.returncode == 0, applied.stderr
    created = applied.stdout.strip()
    assert created.startswith("workflow.argoproj.io/kubeflow-test-") and created.endswith(
        " created"
    )
    name = created.split("/", 1)[1].split()[0]
    deadline = time.monotonic() + 120
    phase = ""
    while time.monotonic() < deadline:
        got = shipyard(platform, "get", "workflow", name, "-o", "json")
        phase = json.loads(got.stdout).get("status", {}).get("phase", "")
        if phase in ("Succeeded", "Failed", "Error"):
            break
        time.sleep(0.2)
    assert phase == "Succeeded", got.stdout
    table = shipyard(platform, "get", "workflows")
    assert any(line.split()[:2] == [name, "Succeeded"] for line in table.stdout.splitlines())
    logs = shipyard(platform, "logs", "workflow", name, "--step", "print-text")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.splitlines() == ["Hello"] * 15


def test_configmap_trial_template_example_through_cli(platform: Any) -> None:
    """examples/automl/configmap-template.yaml (a ConfigMap and an Experiment in one file)."""
    example = Path(__file__).parents[1] / "examples" / "automl" / "configmap-template.yaml"
    applied = shipyard(platform, "apply", "-f", str(example))
    assert applied.returncode == 0, applied.stderr
    assert "configmap/trial-templates" in applied.stdout.lower(), applied.stdout
    listed = shipyard(platform, "get", "cm", "-n", NS)
    assert "trial-templates" in listed.stdout, listed.stdout + listed.stderr
    api = "/apis/kubeflow.org/v1beta1/namespaces"
    with httpx.Client(base_url=platform.gateway_url, timeout=10) as http:
        deadline = time.monotonic() + 90
        while True:
            exp = http.get(f"{api}/{NS}/experiments/configmap-example").json()
            done = [
                c["reason"]
                for c in exp.get("status", {}).get("conditions", [])
                if c["type"] == "Succeeded" and c["status"] == "True"
            ]
            if done:
                break
            assert time.monotonic() < deadline, exp.get("status")
            time.sleep(0.2)
    assert done == ["ExperimentMaxTrialsReached"]
    assert exp["status"]["trialsSucceeded"] == 4
    deleted = shipyard(platform, "delete", "-f", str(example))
    assert deleted.returncode == 0, deleted.stderr
    assert 'experiment.kubeflow.org "configmap-example" deleted' in deleted.stdout, deleted.stdout
