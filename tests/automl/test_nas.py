"""Neural architecture search: ``spec.nasConfig`` validated as Katib does, and Katib's
single-trial DARTS run from examples/automl/darts.yaml on the whole platform (gateway and
services as processes) with the ``kubernetes`` client."""

from __future__ import annotations

import copy
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.automl.conftest import API, AutoML, assert_invalid

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "automl" / "darts.yaml"
NAMESPACE = "kubeflow-user-example-com"
GROUP, VERSION = "kubeflow.org", "v1beta1"

# Katib's darts service: its defaults overridden by the example's settings (strings), JSON
# with single quotes; the operations expanded per filter size; numLayers as a string.
SETTINGS = (
    "{'num_epochs': '60', 'w_lr': 0.025, 'w_lr_min': 0.001, 'w_momentum': 0.9, "
    "'w_weight_decay': 0.0003, 'w_grad_clip': 5.0, 'alpha_lr': '5', "
    "'alpha_weight_decay': 0.001, 'batch_size': '64', 'num_workers': 4, "
    "'init_channels': 16, 'print_step': 50, 'num_nodes': '1', 'stem_multiplier': 3}"
)
SEARCH_SPACE = "['max_pooling_3x3', 'avg_pooling_3x3', 'avg_pooling_5x5', 'skip_connection']"


def darts_example(name: str) -> dict[str, Any]:
    obj = yaml.safe_load(EXAMPLE.read_text())
    obj["metadata"]["name"] = name
    return obj


def test_darts_example_inlines_the_trial_program() -> None:
    container = darts_example("x")["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]
    command = container["spec"]["containers"][0]["command"]
    assert command[:2] == ["python3", "-c"]
    assert command[2] == (ROOT / "examples" / "automl" / "darts_trial.py").read_text()


def test_darts_example_runs_one_trial_with_katib_arguments(platform: Any) -> None:
    from kubernetes import client as k8s

    api = k8s.CustomObjectsApi(k8s.ApiClient(k8s.Configuration(host=platform.gateway_url)))
    name = f"darts-{uuid.uuid4().hex[:6]}"
    api.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "experiments", darts_example(name)
    )
    deadline = time.monotonic() + 120
    while True:
        exp = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "experiments", name)
        done = [
            c["type"]
            for c in (exp.get("status") or {}).get("conditions", [])
            if c["status"] == "True" and c["type"] in ("Succeeded", "Failed")
        ]
        if done:
            break
        assert time.monotonic() < deadline, exp
        time.sleep(0.2)
    assert done == ["Succeeded"], exp["status"]
    status = exp["status"]
    assert status["trials"] == status["trialsSucceeded"] == 1, status
    trials = api.list_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "trials", label_selector=f"katib.kubeflow.org/experiment={name}"
    )["items"]
    assert len(trials) == 1
    trial = trials[0]
    assert trial["spec"]["parameterAssignments"] == [
        {"name": "algorithm-settings", "value": SETTINGS},
        {"name": "search-space", "value": SEARCH_SPACE},
        {"name": "num-layers", "value": "2"},
    ]
    command = trial["spec"]["runSpec"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[3:] == [
        f"--algorithm-settings={SETTINGS}",
        f"--search-space={SEARCH_SPACE}",
        "--num-layers=2",
    ]
    # The toy search finds the hidden two-layer architecture: accuracy 1.
    metrics = {m["name"]: m for m in trial["status"]["observation"]["metrics"]}
    assert float(metrics["Validation-Accuracy"]["latest"]) == 1.0, metrics
    assert status["currentOptimalTrial"]["bestTrialName"] == trial["metadata"]["name"]
    suggestion = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "suggestions", name)
    assert suggestion["status"]["suggestionCount"] == 1
    api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "experiments", name)


def _nas(change: Any) -> dict[str, Any]:
    obj = darts_example(f"bad-nas-{uuid.uuid4().hex[:6]}")
    change(obj["spec"])
    return obj


def _set(path: list[Any], value: Any) -> Any:
    def change(spec: dict[str, Any]) -> None:
        node = spec
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = copy.deepcopy(value)

    return change


PARAM = {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "1"}}


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        (_set(["parameters"], [PARAM]), "spec", "only one of spec.parameters and spec.nasConfig"),
        (_set(["nasConfig"], None), "spec.parameters", "spec.parameters or spec.nasConfig"),
        (
            _set(["nasConfig", "operations", 0, "operationType"], ""),
            "spec.nasConfig.operations[0].operationType",
            "Required",
        ),
        (
            _set(["nasConfig", "operations", 1, "parameters", 0, "feasibleSpace", "list"], []),
            "spec.nasConfig.operations[1].parameters[0].feasibleSpace.list",
            "non-empty list",
        ),
        (
            _set(["nasConfig", "operations", 1, "parameters", 0, "feasibleSpace"], {"min": "3"}),
            "spec.nasConfig.operations[1].parameters[0].feasibleSpace",
            "takes a list",
        ),
        (_set(["nasConfig", "operations"], []), "spec.nasConfig.operations", "at least one"),
        (
            _set(["nasConfig", "graphConfig"], {"numLayers": 0, "inputSizes": [32, 0]}),
            "spec.nasConfig.graphConfig.inputSizes[1]",
            "greater than 0",
        ),
        (
            _set(["nasConfig", "graphConfig"], {}),
            "spec.nasConfig.graphConfig.numLayers",
            "darts needs the number of layers",
        ),
        (
            _set(["algorithm", "algorithmSettings"], [{"name": "num_epochs", "value": "0"}]),
            "spec.algorithm.algorithmSettings[0].value",
            "num_epochs should be greater than zero",
        ),
        (
            _set(["algorithm", "algorithmSettings"], [{"name": "w_lr", "value": "-1"}]),
            "spec.algorithm.algorithmSettings[0].value",
            "w_lr should be greater than or equal to zero",
        ),
        (
            _set(["algorithm", "algorithmSettings"], [{"name": "batch", "value": "1"}]),
            "spec.algorithm.algorithmSettings[0].name",
            "unknown setting 'batch' for algorithm darts",
        ),
        (
            _set(["algorithm", "algorithmName"], "random"),
            "spec.algorithm.algorithmName",
            "for spec.nasConfig use one of darts",
        ),
    ],
)
async def test_create_nas_experiment_invalid(
    automl: AutoML, change: Any, field: str, text: str
) -> None:
    r = await automl.request("POST", f"{API}/experiments", json=_nas(change))
    assert_invalid(r, field, text)


async def test_create_darts_experiment_keeps_nas_config(automl: AutoML) -> None:
    """A valid NAS experiment is accepted and its nasConfig stored as sent; batch_size
    "None" is allowed, as Katib's darts validation allows it."""
    obj = _nas(_set(["algorithm", "algorithmSettings"], [{"name": "batch_size", "value": "None"}]))
    obj["spec"]["maxTrialCount"] = 1
    created = await automl.create("experiments", obj)
    assert created["spec"]["nasConfig"] == darts_example("x")["spec"]["nasConfig"]
    await automl.request("DELETE", f"{API}/experiments/{obj['metadata']['name']}")
