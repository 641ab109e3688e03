"""Volumes stay in their namespace (issue 10, item 2), tried through the real gateway.

- ``hostPath`` is refused (422, the cause names the field) in every tenant-facing kind:
  Notebook, Workflow, WorkflowTemplate, CronWorkflow (and the Argo server API), Experiment
  trial templates of any trial kind, Trial, InferenceService. The user here owns the
  namespace (single-user mode); the refusal holds for everyone.
- An InferenceService's ``file://`` storageUri is refused (422, naming ``pvc://``): another
  namespace's volume, ``/etc``, the platform's state directory, ``..`` and the namespace's
  own volumes alike; a model server never sees a host path. A symbolic link planted in the
  namespace's own claim (pointing at another namespace's volume) on a ``pvc://`` path is
  resolved inside the model server's sandbox, where that volume does not exist: the revision
  fails, and the other namespace's model never answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.runtime import LocalRuntime
from services.common.settings import SINGLE_USER_NAMESPACE as NS
from tests import specs
from tests.serving.conftest import ISVC_PATH, create_claim, isvc

OTHER_NS = "tenant-b"
NOTEBOOKS = f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks"
ARGO = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}"
KATIB = f"/apis/kubeflow.org/v1beta1/namespaces/{NS}"
HOST_PATH = {"name": "host", "hostPath": {"path": "/"}}
SECRET_MODEL = 'def predict(instances):\n    return ["tenant-b secret" for _ in instances]\n'


@pytest.fixture(scope="module")
def api(platform: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.gateway_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def other_volume(platform: Any) -> Path:
    """Another namespace's volume holding a model (its data directory on this host)."""
    runtime = LocalRuntime(platform.state_dir)
    asyncio.run(runtime.create_volume(OTHER_NS, "secrets"))
    data = asyncio.run(runtime.resolve_volume(OTHER_NS, "secrets"))
    (data / "m").mkdir(exist_ok=True)
    (data / "m" / "model.py").write_text(SECRET_MODEL)
    return data


def refused(r: httpx.Response, field: str) -> str:
    """The 422's message for ``field`` (fails unless the response is one naming it)."""
    assert r.status_code == 422, r.text
    causes = {c["field"]: c["message"] for c in r.json()["details"]["causes"]}
    assert field in causes, causes
    assert f"{field}: " in r.json()["message"]
    return causes[field]


def assert_host_path_refused(r: httpx.Response, field: str) -> None:
    message = refused(r, field)
    assert message.startswith("not allowed") and "cluster admins included" in message, message


# ------------------------------------------------------------------------------- hostPath
def test_create_notebook_host_path_422(api: httpx.Client) -> None:
    body = specs.notebook(
        "hostpath",
        container_name="nb",
        volumes=[{"name": "ws", "emptyDir": {}}, HOST_PATH],
        volumeMounts=[{"name": "host", "mountPath": "/host"}],
    )
    r = api.post(NOTEBOOKS, json=body)
    assert_host_path_refused(r, "spec.template.spec.volumes[1].hostPath")
    assert api.get(f"{NOTEBOOKS}/hostpath").status_code == 404


def workflow_spec() -> dict[str, Any]:
    return {
        "entrypoint": "main",
        "volumes": [HOST_PATH],
        "templates": [
            {
                "name": "main",
                "container": {
                    "image": "alpine",
                    "command": ["cat", "/host/etc/shadow"],
                    "volumeMounts": [{"name": "host", "mountPath": "/host"}],
                },
                "volumes": [{"name": "own", "hostPath": {"path": "/tmp"}}],
            }
        ],
    }


@pytest.mark.parametrize(
    ("plural", "kind", "spec", "at"),
    [
        ("workflows", "Workflow", workflow_spec(), "spec"),
        ("workflowtemplates", "WorkflowTemplate", workflow_spec(), "spec"),
        (
            "cronworkflows",
            "CronWorkflow",
            {"schedule": "* * * * *", "workflowSpec": workflow_spec()},
            "spec.workflowSpec",
        ),
    ],
)
def test_create_argo_kinds_host_path_422(
    api: httpx.Client, plural: str, kind: str, spec: dict[str, Any], at: str
) -> None:
    body = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "hostpath"},
        "spec": spec,
    }
    r = api.post(f"{ARGO}/{plural}", json=body)
    assert_host_path_refused(r, f"{at}.volumes[0].hostPath")
    assert_host_path_refused(r, f"{at}.templates[0].volumes[0].hostPath")


def test_submit_workflow_argo_server_api_host_path_refused(api: httpx.Client) -> None:
    """hera's path (the Argo server API) refuses it too, in Argo's error shape."""
    body = {"workflow": {"metadata": {"name": "hostpath"}, "spec": workflow_spec()}}
    r = api.post(f"/api/v1/workflows/{NS}", json=body)
    assert r.status_code in (400, 422), r.text
    assert "spec.volumes[0].hostPath: not allowed" in r.json()["message"]


def job(volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return specs.trial_job(
        ["python", "-c", "print('loss=${trialParameters.lr}')"],
        image="python",
        volume_mounts=[{"name": "host", "mountPath": "/host"}],
        volumes=volumes,
    )


def experiment(trial_spec: dict[str, Any]) -> dict[str, Any]:
    lr = {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.01", "max": "0.1"}}
    return specs.experiment("hostpath", [], parameters=[lr], trial_spec=trial_spec)


def test_create_experiment_job_trial_host_path_422(api: httpx.Client) -> None:
    r = api.post(f"{KATIB}/experiments", json=experiment(job([HOST_PATH])))
    assert_host_path_refused(
        r, "spec.trialTemplate.trialSpec.spec.template.spec.volumes[0].hostPath"
    )


def test_create_experiment_other_trial_kind_host_path_422(api: httpx.Client) -> None:
    """Whatever the trial kind, wherever its pod templates are (here a TFJob's Worker)."""
    tfjob = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "spec": {
            "tfReplicaSpecs": {
                "Worker": {"replicas": 1, "template": job([HOST_PATH])["spec"]["template"]}
            }
        },
    }
    r = api.post(f"{KATIB}/experiments", json=experiment(tfjob))
    assert_host_path_refused(
        r,
        "spec.trialTemplate.trialSpec.spec.tfReplicaSpecs.Worker.template.spec.volumes[0].hostPath",
    )


def test_create_trial_host_path_422(api: httpx.Client) -> None:
    body = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Trial",
        "metadata": {"name": "hostpath"},
        "spec": {"runSpec": job([HOST_PATH])},
    }
    r = api.post(f"{KATIB}/trials", json=body)
    assert_host_path_refused(r, "spec.runSpec.spec.template.spec.volumes[0].hostPath")


def test_create_inferenceservice_host_path_422(api: httpx.Client) -> None:
    container = {
        "name": "kserve-container",
        "image": "custom",
        "command": ["python", "-m", "http.server"],
        "volumeMounts": [{"name": "host", "mountPath": "/host"}],
    }
    r = api.post(
        ISVC_PATH, json=isvc("hostpath", {"containers": [container], "volumes": [HOST_PATH]})
    )
    assert_host_path_refused(r, "spec.predictor.volumes[0].hostPath")


# ------------------------------------------------------------------------------- file://
def model_isvc(name: str, uri: str) -> dict[str, Any]:
    return isvc(name, {"model": {"modelFormat": {"name": "python"}, "storageUri": uri}})


def test_create_inferenceservice_file_uri_outside_namespace_422(
    api: httpx.Client, platform: Any, other_volume: Path
) -> None:
    own = create_claim(platform, api, "own-models")
    state_dir = Path(platform.state_dir).resolve()
    for uri in (
        f"file://{other_volume / 'm'}",  # another namespace's volume
        f"file://{other_volume.parent}",  # its metadata, beside the data
        "file:///etc",
        f"file://{state_dir}",  # the platform's state: keys, databases
        f"file://{state_dir / 'keys'}",
        f"file://{own}/../../../{OTHER_NS}/secrets/data/m",  # out of its own volume by '..'
    ):
        r = api.post(ISVC_PATH, json=model_isvc("outside", uri))
        message = refused(r, "spec.predictor.model.storageUri")
        assert "pvc://" in message or "'..'" in message, message
    assert api.get(f"{ISVC_PATH}/outside").status_code == 404


def revision_failure(api: httpx.Client, name: str, within: float = 20) -> str:
    """The message of a PredictorReady condition that went False for a failed revision."""
    deadline = time.monotonic() + within
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = api.get(f"{ISVC_PATH}/{name}").json()
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        cond = conds.get("PredictorReady") or {}
        if cond.get("status") == "False" and cond.get("reason") == "RevisionFailed":
            return str(cond.get("message"))
        assert cond.get("status") != "True", f"{name} became ready: {obj.get('status')}"
        time.sleep(0.1)
    raise AssertionError(f"{name} did not fail in {within}s: {obj.get('status')}")


@pytest.fixture(scope="module")
def planted(platform: Any, api: httpx.Client, other_volume: Path) -> Path:
    """The namespace's own claim with symbolic links into another namespace's volume,
    as an earlier job of the namespace could have left them."""
    own = create_claim(platform, api, "planted")
    (own / "link").unlink(missing_ok=True)
    (own / "link").symlink_to(other_volume / "m")
    (own / "dir").mkdir(exist_ok=True)
    (own / "dir" / "up").unlink(missing_ok=True)
    (own / "dir" / "up").symlink_to(other_volume)
    return own


@pytest.mark.parametrize(
    ("name", "uri"),
    [("pvc-link", "pvc://planted/link"), ("pvc-nested-link", "pvc://planted/dir/up/m")],
)
def test_create_inferenceservice_symlink_in_claim_leads_nowhere(
    api: httpx.Client, planted: Path, name: str, uri: str
) -> None:
    """A link on the model's path is followed inside the server's own sandbox, which shows no
    other namespace's volume: the revision fails, and tenant-b's model never answers."""
    r = api.post(ISVC_PATH, json=model_isvc(name, uri))
    assert r.status_code == 201, r.text
    try:
        message = revision_failure(api, name)
        assert "does not exist" in message, message
        assert "tenant-b secret" not in message
        answer = api.post(f"/serving/{NS}/{name}/v1/models/{name}:predict", json={"instances": [1]})
        assert "tenant-b secret" not in answer.text
    finally:
        assert api.delete(f"{ISVC_PATH}/{name}").status_code == 200


def test_create_inferenceservice_file_uri_inside_own_claim_422(
    api: httpx.Client, planted: Path
) -> None:
    """file:// is refused even inside the namespace's own claim: use pvc://."""
    for uri in (f"file://{planted}/link", f"file://{planted}/dir/up/m/model.py"):
        message = refused(
            api.post(ISVC_PATH, json=model_isvc("file-link", uri)),
            "spec.predictor.model.storageUri",
        )
        assert "pvc://" in message, message


def test_create_inferenceservice_other_namespace_claim_not_found(
    api: httpx.Client, other_volume: Path
) -> None:
    """pvc:// names a claim of the InferenceService's own namespace only."""
    r = api.post(ISVC_PATH, json=model_isvc("foreign-claim", "pvc://secrets/m"))
    assert r.status_code == 201, r.text
    try:
        message = revision_failure(api, "foreign-claim")
        assert "secrets" in message and "not found" in message, message
    finally:
        assert api.delete(f"{ISVC_PATH}/foreign-claim").status_code == 200
