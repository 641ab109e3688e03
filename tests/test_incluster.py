"""The standard in-cluster Kubernetes config inside workloads (issue 13, item 2).

A real platform in trusted-header mode (the test acts as a person with ``kubeflow-userid``
from 127.0.0.1, so workloads' own tokens are really checked by the gateway). Inside a real
pipeline step, a real notebook server and a Katib trial, the official clients load the
in-cluster config unchanged: ``kubernetes.config.load_incluster_config()`` (HTTPS to
``KUBERNETES_SERVICE_HOST``, verified with ``ca.crt``), kubectl, ``kfp.Client()`` with no
arguments, and ``KatibClient()``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.certs import ca_paths
from tests import specs
from tests.conftest import (
    ADMIN_USER,
    RunningSeaweedFS,
    create_profile,
    fresh_database,
    workflow_logs,
)
from tests.jupyter import execute, open_kernel

ADMIN = {"kubeflow-userid": ADMIN_USER}
NS, OTHER = "incluster-a", "incluster-b"
ISVCS = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices"
PVCS = "/api/v1/namespaces/{ns}/persistentvolumeclaims"
NOTEBOOKS = f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.fixture(scope="module")
def platform(
    nats_url: str, seaweedfs: RunningSeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One platform for this module (trusted-header mode, its own database), with two
    profiles, a claim and an InferenceService in the first."""
    from shipyard.up import Platform

    with fresh_database("incluster") as db:
        running = Platform(
            tmp_path_factory.mktemp("incluster") / "state",
            database_url=db,
            nats_url=nats_url,
            s3=seaweedfs.config,
            ports=Platform.free_ports(),
            auth_mode="trusted-header",
        )
        running.start(
            {
                "SHIPYARD_CLUSTER_ADMINS": ADMIN_USER,
                "SHIPYARD_TRUSTED_PROXIES": "127.0.0.1",
                "SHIPYARD_TRUSTED_HEADER_ALLOW_LOCAL_RUNTIME": "true",
                "SHIPYARD_COOKIE_SECRET": "test-cookie-secret-0123456789abcdef",
            }
        )
        try:
            with httpx.Client(base_url=running.gateway_url, headers=ADMIN, timeout=20) as api:
                for team in (NS, OTHER):
                    create_profile(api, team)
                r = api.post(PVCS.format(ns=NS), json=specs.claim("training-data", "16Mi"))
                assert r.status_code == 201, r.text
                r = api.post(ISVCS.format(ns=NS), json=isvc("from-host"))
                assert r.status_code == 201, r.text
            yield running
        finally:
            running.stop()


def isvc(name: str) -> dict[str, Any]:
    """An InferenceService whose model claim does not exist: its server never starts (cheap),
    the object is all these tests need."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "predictor": {
                "minReplicas": 0,
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "storageUri": "pvc://no-such-claim/model",
                },
            }
        },
    }


# What a tenant runs: the official client, unchanged, as in any pod.
LIST_SCRIPT = """
import json, os
from kubernetes import client, config
config.load_incluster_config()
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
print("ENDPOINT", client.Configuration.get_default_copy().host)
core, custom = client.CoreV1Api(), client.CustomObjectsApi()
pvcs = core.list_namespaced_persistent_volume_claim(ns)
print("PVCS", json.dumps(sorted(p.metadata.name for p in pvcs.items)))
found = custom.list_namespaced_custom_object(
    "serving.kserve.io", "v1beta1", ns, "inferenceservices")
print("ISVCS", found["kind"], json.dumps(sorted(i["metadata"]["name"] for i in found["items"])))
"""

# A hostile tenant: another namespace's objects with its own token, and the CA's key.
HOSTILE_SCRIPT = """
import json, os
from kubernetes import client, config
config.load_incluster_config()
try:
    client.CoreV1Api().list_namespaced_persistent_volume_claim(os.environ["OTHER"])
    print("OTHER allowed")
except client.ApiException as exc:
    print("OTHER", exc.status, exc.body.replace(chr(10), " "))
print("SECRETS", json.dumps(sorted(os.listdir("/var/run/secrets/kubernetes.io/serviceaccount"))))
for path in (os.environ["CA_KEY"], "/proc/1/root" + os.environ["CA_KEY"],
             os.environ["CA_KEY"].rsplit("/", 2)[0]):
    try:
        if os.path.isdir(path):
            print("CAKEY listed", path, os.listdir(path))
        else:
            print("CAKEY read", path, open(path).read())
    except OSError as exc:
        print("CAKEY refused", path, type(exc).__name__)
"""


def run_workflow(api: httpx.Client, name: str, script: str, env: dict[str, str]) -> str:
    """Run ``script`` as a one-step Workflow in NS; its log once it Succeeded."""
    step = {
        "image": "python:3.11",
        "command": ["python3", "-c", script],
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
    return workflow_logs(api, NS, specs.workflow(name, [{"name": "main", "container": step}]))


def line(logs: str, tag: str) -> str:
    """The rest of the one log line that starts with ``tag``."""
    found = [ln.split(tag + " ", 1)[1] for ln in logs.splitlines() if (tag + " ") in ln]
    assert len(found) == 1, f"{tag}: {found}\n{logs}"
    return found[0]


def test_step_lists_pvcs_and_inferenceservices_with_incluster_config(platform: Any) -> None:
    with httpx.Client(base_url=platform.gateway_url, headers=ADMIN, timeout=20) as api:
        logs = run_workflow(api, "incluster-list", LIST_SCRIPT, {})
    assert line(logs, "ENDPOINT") == "https://127.0.0.2:443"
    assert json.loads(line(logs, "PVCS")) == ["training-data"]
    kind, names = line(logs, "ISVCS").split(" ", 1)
    assert kind == "InferenceServiceList" and json.loads(names) == ["from-host"]


def test_step_kubectl_uses_incluster_config(platform: Any) -> None:
    """Debian's kubectl, with no kubeconfig, finds the API the in-cluster way too."""
    script = (
        "import subprocess\n"
        "for kind in ('persistentvolumeclaims', 'inferenceservices.serving.kserve.io'):\n"
        "    out = subprocess.run(['kubectl', 'get', kind, '-o', 'name'], check=True,\n"
        "                         capture_output=True, text=True).stdout\n"
        "    print('KUBECTL', kind, ' '.join(out.split()))\n"
    )
    with httpx.Client(base_url=platform.gateway_url, headers=ADMIN, timeout=20) as api:
        logs = run_workflow(api, "incluster-kubectl", script, {})
    lines = [ln.split("KUBECTL ", 1)[1] for ln in logs.splitlines() if "KUBECTL " in ln]
    assert lines == [
        "persistentvolumeclaims persistentvolumeclaim/training-data",
        "inferenceservices.serving.kserve.io inferenceservice.serving.kserve.io/from-host",
    ], logs


def test_step_token_refused_elsewhere_and_ca_key_unreadable(platform: Any) -> None:
    ca_key = ca_paths(platform.state_dir / "keys").key
    secret = ca_key.read_text()
    assert "PRIVATE KEY" in secret
    with httpx.Client(base_url=platform.gateway_url, headers=ADMIN, timeout=20) as api:
        logs = run_workflow(
            api, "incluster-hostile", HOSTILE_SCRIPT, {"OTHER": OTHER, "CA_KEY": str(ca_key)}
        )
    status, body = line(logs, "OTHER").split(" ", 1)
    assert status == "403", logs
    refusal = json.loads(body)
    assert refusal["kind"] == "Status" and refusal["code"] == 403
    assert OTHER in refusal["message"]
    # Only the token, the namespace and the CA's certificate are mounted, never the key.
    assert json.loads(line(logs, "SECRETS")) == ["ca.crt", "namespace", "token"]
    attempts = [ln for ln in logs.splitlines() if ln.startswith("CAKEY ")]
    assert len(attempts) == 3, logs
    assert all(a.startswith("CAKEY refused ") for a in attempts), logs
    assert secret.strip().splitlines()[1] not in logs


def test_tls_endpoint_is_verified_by_the_platform_ca(platform: Any) -> None:
    """From the host: the TLS listener's certificate chains to ca.crt for the in-cluster
    names, and a request without a credential is a 401/403 Status, not served."""
    ca_file = ca_paths(platform.state_dir / "keys").cert
    verified = ssl.create_default_context(cafile=str(ca_file))
    url = f"https://127.0.0.1:{platform.tls_port}{PVCS.format(ns=NS)}"
    with httpx.Client(verify=verified, timeout=10) as tls:
        r = tls.get(url, extensions={"sni_hostname": "kubernetes.default.svc"})
    assert r.status_code in (401, 403), r.text
    assert r.json()["kind"] == "Status"
    with httpx.Client(timeout=10) as public_roots, pytest.raises(httpx.ConnectError):
        public_roots.get(url, extensions={"sni_hostname": "kubernetes.default.svc"})


# In a notebook: the same listing, an InferenceService created, kfp.Client() with no
# arguments, and KatibClient().
NOTEBOOK_CODE = (
    LIST_SCRIPT
    + """
created = custom.create_namespaced_custom_object(
    "serving.kserve.io", "v1beta1", ns, "inferenceservices", json.loads(os.environ["ISVC"]))
print("CREATED", created["metadata"]["name"], created["metadata"]["namespace"])
import warnings
warnings.simplefilter("ignore")
import kfp
kfp_client = kfp.Client()
print("KFP_HOST", kfp_client._existing_config.host)
experiment = kfp_client.create_experiment("from-notebook", namespace=ns)
print("KFP_EXPERIMENT", experiment.display_name, experiment.namespace)
runs = kfp_client.list_runs(namespace=ns)
print("KFP_RUNS", json.dumps(runs.to_dict(), default=str))
names = [e.display_name for e in kfp_client.list_experiments(namespace=ns).experiments]
print("KFP_EXPERIMENTS", json.dumps(names))
from kubeflow.katib import KatibClient, V1beta1Experiment
from kubeflow.katib.utils.utils import FakeResponse
katib = KatibClient()
spec = json.loads(os.environ["EXPERIMENT"])
katib.create_experiment(katib.api_client.deserialize(FakeResponse(spec), V1beta1Experiment), ns)
print("KATIB", json.dumps([e.metadata.name for e in katib.list_experiments()]))
"""
)

# A trial is a workload too: its metric is the number of claims it lists in-cluster.
TRIAL_SCRIPT = """
from kubernetes import client, config
config.load_incluster_config()
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
lr = float("${trialParameters.lr}")
claims = client.CoreV1Api().list_namespaced_persistent_volume_claim(ns).items
print(f"accuracy={len(claims)}")
"""

EXPERIMENT = specs.experiment(
    "from-notebook",
    ["python3", "-c", TRIAL_SCRIPT],
    parameters=[
        {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.01", "max": "0.1"}}
    ],
    objective="maximize",
    metric="accuracy",
    parallelTrialCount=1,
    maxTrialCount=1,
    maxFailedTrialCount=1,
)


async def test_notebook_uses_incluster_config_kfp_and_katib(platform: Any) -> None:
    gw = platform.gateway_url
    route = f"{gw}/notebook/{NS}/lab"
    env = {"ISVC": json.dumps(isvc("from-notebook")), "EXPERIMENT": json.dumps(EXPERIMENT)}
    notebook = specs.notebook(
        "lab",
        "kubeflownotebookswg/jupyter-scipy:v1.8.0",
        env=[{"name": k, "value": v} for k, v in env.items()],
    )
    async with httpx.AsyncClient(base_url=gw, headers=ADMIN, timeout=20) as http:
        r = await http.post(NOTEBOOKS, json=notebook)
        assert r.status_code == 201, r.text
        ws_url = await open_kernel(http, route)
        out = await execute(ws_url, NOTEBOOK_CODE, headers=ADMIN, timeout=90)

        assert line(out, "ENDPOINT") == "https://127.0.0.2:443"
        assert json.loads(line(out, "PVCS")) == ["training-data"]
        kind, names = line(out, "ISVCS").split(" ", 1)
        assert kind == "InferenceServiceList" and "from-host" in json.loads(names)
        assert line(out, "CREATED") == f"from-notebook {NS}"
        made = await http.get(f"{ISVCS.format(ns=NS)}/from-notebook")
        assert made.status_code == 200 and made.json()["spec"]["predictor"]["minReplicas"] == 0
        # kfp.Client() found the pipelines API the in-cluster way, with the mounted token.
        assert line(out, "KFP_HOST") == "ml-pipeline.kubeflow.svc.cluster.local:8888"
        assert line(out, "KFP_EXPERIMENT") == f"from-notebook {NS}"
        assert json.loads(line(out, "KFP_EXPERIMENTS")) == ["from-notebook"]
        assert json.loads(line(out, "KFP_RUNS")).get("runs") in (None, [])
        assert json.loads(line(out, "KATIB")) == ["from-notebook"]
        experiment = f"/apis/kubeflow.org/v1beta1/namespaces/{NS}/experiments/from-notebook"
        deadline, status = time.monotonic() + 120, dict[str, Any]()
        while time.monotonic() < deadline and not status.get("completionTime"):
            await asyncio.sleep(0.2)
            status = (await http.get(experiment)).json().get("status") or {}
        assert status.get("trialsSucceeded") == 1, status
        metric = status["currentOptimalTrial"]["observation"]["metrics"][0]
        assert (metric["name"], float(metric["latest"])) == ("accuracy", 1.0), status
        assert (await http.delete(f"{NOTEBOOKS}/lab")).is_success


def test_ca_key_stays_the_platforms(platform: Any) -> None:
    """On the host: the CA's key is the platform user's alone (0600 in a 0700 directory)."""
    keys = Path(platform.state_dir) / "keys"
    assert keys.stat().st_mode & 0o777 == 0o700
    assert ca_paths(keys).key.stat().st_mode & 0o777 == 0o600
