"""Who may call Katib's DB manager API through the gateway (gateway/katib_grpc.py).

A whole platform in trusted-header mode (the test, on 127.0.0.1, is the trusted proxy; a
bearer token is checked as on HTTP), the gateway's DB manager listener on a free port. A call
without credentials is UNAUTHENTICATED (what Katib's SDK sends: it adds no metadata), a bad
bearer token too; a person without access to the trial's namespace finds no trial; the
namespace's owner reads it; a trial's token (what its collector holds) writes to that trial
alone.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
import httpx
import pytest

from services.automl.push import load_key, trial_token
from services.common.eventspb.katib.v1beta1 import dbmanager_pb2 as pb
from tests import specs
from tests.conftest import (
    ADMIN_USER,
    create_profile,
    free_port,
    fresh_database,
    running_trusted_header_platform,
)

SERVICE = "/api.v1.beta1.DBManager/"
OWNER = "dbm-owner@example.com"


@pytest.fixture(scope="module")
def secured(nats_url: str, seaweedfs: Any, tmp_path_factory: pytest.TempPathFactory):
    """The platform, its DB manager channel, and a trial in a namespace OWNER owns."""
    port = free_port()
    env = {
        "SHIPYARD_KATIB_DB_MANAGER_PORT": str(port),
        "SHIPYARD_DB_MANAGER_PORT": str(free_port()),
    }
    with (
        fresh_database("shipyard_katib_auth") as url,
        running_trusted_header_platform(
            tmp_path_factory.mktemp("katib-auth"),
            database_url=url,
            nats_url=nats_url,
            s3=seaweedfs.config,
            env=env,
        ) as platform,
        httpx.Client(
            base_url=platform.gateway_url, headers={"kubeflow-userid": ADMIN_USER}, timeout=30
        ) as admin,
    ):
        namespace = f"dbm-{uuid.uuid4().hex[:6]}"
        create_profile(admin, namespace, owner=OWNER)
        trial = _finished_trial(admin, namespace)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            yield platform, channel, namespace, trial


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


def _get(channel: grpc.Channel, trial: str, metadata: tuple[tuple[str, str], ...]) -> Any:
    call = channel.unary_unary(
        SERVICE + "GetObservationLog",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.GetObservationLogReply.FromString,
    )
    return call(pb.GetObservationLogRequest(trial_name=trial), metadata=metadata, timeout=30)


def _refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value.code(), refused.value.details()


def test_no_credentials_no_access(secured: Any) -> None:
    _, channel, _, trial = secured
    assert _refusal(lambda: _get(channel, trial, ())) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "authentication required: send 'authorization: Bearer <token>' metadata",
    )
    code, message = _refusal(lambda: _get(channel, trial, (("authorization", "Bearer nope"),)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and message


def test_only_who_may_read_the_namespace(secured: Any) -> None:
    _, channel, namespace, trial = secured
    stranger = (("kubeflow-userid", "stranger@example.com"),)
    assert _refusal(lambda: _get(channel, trial, stranger)) == (
        grpc.StatusCode.NOT_FOUND,
        f'trial "{trial}" not found in a namespace you may use '
        '(user "stranger@example.com", role view)',
    )
    got = _get(channel, trial, (("kubeflow-userid", OWNER),))
    assert [(m.metric.name, m.metric.value) for m in got.observation_log.metric_logs] == [
        ("loss", "0.25")
    ]
    named = (("kubeflow-userid", OWNER), ("x-shipyard-namespace", namespace))
    assert len(_get(channel, trial, named).observation_log.metric_logs) == 1


def test_a_trial_token_reports_for_its_trial_alone(secured: Any) -> None:
    platform, channel, namespace, trial = secured
    token = trial_token(load_key(platform.state_dir), namespace, trial)
    report = channel.unary_unary(
        SERVICE + "ReportObservationLog",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.ReportObservationLogReply.FromString,
    )
    request = pb.ReportObservationLogRequest(
        trial_name=trial,
        observation_log=pb.ObservationLog(
            metric_logs=[pb.MetricLog(metric=pb.Metric(name="loss", value="0.125"))]
        ),
    )
    report(request, metadata=(("x-shipyard-trial-token", token),), timeout=30)
    got = _get(channel, trial, (("kubeflow-userid", OWNER),))
    assert [m.metric.value for m in got.observation_log.metric_logs] == ["0.25", "0.125"]
    other = pb.ReportObservationLogRequest(
        trial_name=f"{trial}x", observation_log=request.observation_log
    )
    assert _refusal(
        lambda: report(other, metadata=(("x-shipyard-trial-token", token),), timeout=30)
    ) == (grpc.StatusCode.PERMISSION_DENIED, f"the trial token is not valid for trial '{trial}x'")
