"""Who may call Katib's DB manager API through the gateway (gateway/katib_grpc.py).

A whole platform in trusted-header mode (the test, on 127.0.0.1, is the trusted proxy; a
bearer token is checked as on HTTP), the gateway's DB manager listener on a free port. A call
without credentials is UNAUTHENTICATED (what Katib's SDK sends: it adds no metadata), a bad
bearer token too; a person without access to the trial's namespace finds no trial; the
namespace's owner reads it; a trial's token (what its collector holds) writes to that trial
alone. The gRPC calls go from a child process (tests/automl/grpc_calls.py says why).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.automl.push import load_key, trial_token
from tests import specs
from tests.automl.grpc_calls import call
from tests.automl.test_katib_sdk import _kubeconfig
from tests.automl.test_katib_tune import KATIB_SDK
from tests.conftest import (
    ADMIN_USER,
    create_profile,
    free_port,
    fresh_database,
    running_trusted_header_platform,
)

OWNER = "dbm-owner@example.com"
GET = "GetObservationLog"


@pytest.fixture(scope="module")
def secured(nats_url: str, seaweedfs: Any, tmp_path_factory: pytest.TempPathFactory):
    """The platform, its DB manager address, and a trial in a namespace OWNER owns."""
    port = free_port()
    with (
        fresh_database("shipyard_katib_auth") as url,
        running_trusted_header_platform(
            tmp_path_factory.mktemp("katib-auth"),
            database_url=url,
            nats_url=nats_url,
            s3=seaweedfs.config,
            env={"SHIPYARD_KATIB_DB_MANAGER_PORT": str(port)},
        ) as platform,
        httpx.Client(
            base_url=platform.gateway_url, headers={"kubeflow-userid": ADMIN_USER}, timeout=30
        ) as admin,
    ):
        namespace = f"dbm-{uuid.uuid4().hex[:6]}"
        create_profile(admin, namespace, owner=OWNER)
        trial = _finished_trial(admin, namespace)
        yield platform, f"127.0.0.1:{port}", namespace, trial


def _finished_trial(api: httpx.Client, namespace: str) -> str:
    name = f"auth-{uuid.uuid4().hex[:6]}"
    base = f"/apis/kubeflow.org/v1beta1/namespaces/{namespace}"
    body = specs.python_experiment(
        name, "print('loss=0.25')", maxTrialCount=1, parallelTrialCount=1
    )
    deadline = time.monotonic() + 60
    while True:  # the profile's namespace is made asynchronously
        r = api.post(f"{base}/experiments", json=body)
        if r.status_code == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert r.status_code == 201, r.text
    while time.monotonic() < deadline:
        exp = api.get(f"{base}/experiments/{name}").json()
        if exp.get("status", {}).get("trialsSucceeded") == 1:
            trials = api.get(f"{base}/trials", params={"labelSelector": f"experiment={name}"})
            return str(trials.json()["items"][0]["metadata"]["name"])
        time.sleep(0.3)
    raise AssertionError(f"experiment {name} did not finish")


def _values(result: dict[str, Any]) -> list[str]:
    assert "reply" in result, result
    return [e["metric"]["value"] for e in result["reply"]["observation_log"]["metric_logs"]]


def test_no_credentials_no_access(secured: Any) -> None:
    _, address, _, trial = secured
    assert call(address, GET, {"trial_name": trial}) == {
        "code": "UNAUTHENTICATED",
        "details": "authentication required: send 'authorization: Bearer <token>' metadata",
    }
    refused = call(address, GET, {"trial_name": trial}, authorization="Bearer nope")
    assert refused["code"] == "UNAUTHENTICATED" and refused["details"]


def test_katib_sdk_get_trial_metrics_is_refused(secured: Any, tmp_path: Path) -> None:
    """The real SDK (kubeflow-katib 0.19, .venv/katib-sdk) sends no credentials: refused."""
    platform, address, namespace, trial = secured
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", platform.gateway_url)
    code = (
        "import sys; from kubeflow.katib import KatibClient\n"
        "client = KatibClient(config_file=sys.argv[1])\n"
        "try:\n"
        "    client.get_trial_metrics(sys.argv[2], sys.argv[3], db_manager_address=sys.argv[4])\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(kubeconfig), trial, namespace, address],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(KATIB_SDK)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"Unable to get metrics for Trial {namespace}/{trial}" in done.stdout
    assert "UNAUTHENTICATED" in done.stdout and "authentication required" in done.stdout


def test_only_who_may_read_the_namespace(secured: Any) -> None:
    _, address, namespace, trial = secured
    assert call(address, GET, {"trial_name": trial}, kubeflow_userid="stranger@example.com") == {
        "code": "NOT_FOUND",
        "details": f'trial "{trial}" not found in a namespace you may use '
        '(user "stranger@example.com", role view)',
    }
    assert _values(call(address, GET, {"trial_name": trial}, kubeflow_userid=OWNER)) == ["0.25"]
    named = call(
        address, GET, {"trial_name": trial}, kubeflow_userid=OWNER, x_shipyard_namespace=namespace
    )
    assert _values(named) == ["0.25"]


def test_a_trial_token_reports_for_its_trial_alone(secured: Any) -> None:
    platform, address, namespace, trial = secured
    token = trial_token(load_key(platform.state_dir), namespace, trial)
    logs = {"metric_logs": [{"metric": {"name": "loss", "value": "0.125"}}]}
    report = {"trial_name": trial, "observation_log": logs}
    assert call(address, "ReportObservationLog", report, x_shipyard_trial_token=token) == {
        "reply": {}
    }
    got = call(address, GET, {"trial_name": trial}, kubeflow_userid=OWNER)
    assert _values(got) == ["0.25", "0.125"]
    other = {"trial_name": f"{trial}x", "observation_log": logs}
    assert call(address, "ReportObservationLog", other, x_shipyard_trial_token=token) == {
        "code": "PERMISSION_DENIED",
        "details": f"the trial token is not valid for trial '{trial}x'",
    }
    # The token is for reporting: it reads nothing, and deletes nothing.
    for method in (GET, "DeleteObservationLog"):
        refused = call(address, method, {"trial_name": trial}, x_shipyard_trial_token=token)
        assert refused["code"] == "NOT_FOUND", refused
        assert 'user "system:katib-trial-token"' in refused["details"]
