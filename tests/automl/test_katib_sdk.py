"""The Katib SDK's KatibClient against shipyard, through the real gateway.

The whole platform runs (``platform`` fixture: four services and the gateway as processes,
single-user mode). KatibClient loads a kubeconfig file whose cluster is the gateway (single-
user mode needs no token) and creates an experiment built from the SDK's own model classes,
gets it, and waits for it the way the SDK offers (kubeflow-katib 0.14, the newest release
that installs with our pins, has no wait helper: the loop polls ``is_experiment_succeeded``
and ``get_experiment_status``, bounded). The trial runs a local script.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import specs

katib = pytest.importorskip("kubeflow.katib", reason="the optional extra 'katib' is not installed")

NAMESPACE = "kubeflow-user-example-com"
TRIAL = "import sys; print(f'loss={(float(sys.argv[1]) - 0.3) ** 2:.6f}')"


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "shipyard",
                "clusters": [{"name": "shipyard", "cluster": {"server": server}}],
                "users": [{"name": "me", "user": {}}],
                "contexts": [
                    {
                        "name": "shipyard",
                        "context": {"cluster": "shipyard", "user": "me", "namespace": NAMESPACE},
                    }
                ],
            }
        )
    )
    return path


def _experiment(name: str) -> Any:
    m = katib
    return m.V1beta1Experiment(
        api_version="kubeflow.org/v1beta1",
        kind="Experiment",
        metadata={"name": name, "namespace": NAMESPACE},
        spec=m.V1beta1ExperimentSpec(
            max_trial_count=3,
            parallel_trial_count=2,
            max_failed_trial_count=1,
            algorithm=m.V1beta1AlgorithmSpec(algorithm_name="random"),
            objective=m.V1beta1ObjectiveSpec(type="minimize", objective_metric_name="loss"),
            parameters=[
                m.V1beta1ParameterSpec(
                    name="x",
                    parameter_type="double",
                    feasible_space=m.V1beta1FeasibleSpace(min="0.0", max="1.0"),
                )
            ],
            trial_template=m.V1beta1TrialTemplate(
                primary_container_name="main",
                trial_parameters=[m.V1beta1TrialParameterSpec(name="x", reference="x")],
                trial_spec=specs.trial_job([sys.executable, "-c", TRIAL, "${trialParameters.x}"]),
            ),
        ),
    )


def test_katib_client_create_get_wait(platform: Any, tmp_path: Path) -> None:
    client = katib.KatibClient(
        config_file=str(_kubeconfig(tmp_path / "kubeconfig", platform.gateway_url))
    )
    name = f"sdk-{uuid.uuid4().hex[:6]}"
    created = client.create_experiment(_experiment(name), namespace=NAMESPACE)
    assert created["metadata"]["name"] == name
    assert created["spec"]["parallelTrialCount"] == 2

    got = client.get_experiment(name, namespace=NAMESPACE)
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    assert got["spec"]["objective"]["objectiveMetricName"] == "loss"

    deadline = time.monotonic() + 90
    while not client.is_experiment_succeeded(name, namespace=NAMESPACE):
        assert client.get_experiment_status(name, namespace=NAMESPACE) != "Failed"
        assert time.monotonic() < deadline, client.get_experiment(name, namespace=NAMESPACE)
        time.sleep(0.2)
    done = client.get_experiment(name, namespace=NAMESPACE)
    assert done["status"]["trialsSucceeded"] == 3
    assert [c["reason"] for c in done["status"]["conditions"] if c["type"] == "Succeeded"] == [
        "ExperimentMaxTrialsReached"
    ]
    trials = [
        t
        for t in client.list_trials(name, namespace=NAMESPACE)
        if t.metadata.labels.get("katib.kubeflow.org/experiment") == name
    ]
    assert len(trials) == 3
    optimal = client.get_optimal_hyperparameters(name, namespace=NAMESPACE)
    assert optimal["currentOptimalTrial"]["parameterAssignments"][0]["name"] == "x"
    client.delete_experiment(name, namespace=NAMESPACE)


def test_configmap_trial_template_with_the_kubernetes_client(platform: Any, tmp_path: Path) -> None:
    """The trial Job kept in a ConfigMap, created with the kubernetes client's CoreV1Api."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    kubeconfig = str(_kubeconfig(tmp_path / "kubeconfig", platform.gateway_url))
    core = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=kubeconfig))
    name = f"sdkcm-{uuid.uuid4().hex[:6]}"
    experiment = _experiment(name)
    job = experiment.spec.trial_template.trial_spec
    core.create_namespaced_config_map(
        NAMESPACE,
        k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(name=f"{name}-templates"),
            data={"trial.yaml": yaml.safe_dump(job)},
        ),
    )
    read = core.read_namespaced_config_map(f"{name}-templates", NAMESPACE)
    assert yaml.safe_load(read.data["trial.yaml"]) == job
    assert f"{name}-templates" in [
        cm.metadata.name for cm in core.list_namespaced_config_map(NAMESPACE).items
    ]
    experiment.spec.trial_template.trial_spec = None
    experiment.spec.trial_template.config_map = katib.V1beta1ConfigMapSource(
        config_map_name=f"{name}-templates", template_path="trial.yaml"
    )
    client = katib.KatibClient(config_file=kubeconfig)
    client.create_experiment(experiment, namespace=NAMESPACE)
    deadline = time.monotonic() + 90
    while not client.is_experiment_succeeded(name, namespace=NAMESPACE):
        assert client.get_experiment_status(name, namespace=NAMESPACE) != "Failed"
        assert time.monotonic() < deadline, client.get_experiment(name, namespace=NAMESPACE)
        time.sleep(0.2)
    assert client.get_experiment(name, namespace=NAMESPACE)["status"]["trialsSucceeded"] == 3
    client.delete_experiment(name, namespace=NAMESPACE)
    core.delete_namespaced_config_map(f"{name}-templates", NAMESPACE)
