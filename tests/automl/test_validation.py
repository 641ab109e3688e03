"""Experiment validation: Katib's defaults; 422 with field paths for bad specs (real service)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.automl.conftest import API, AutoML, seed_experiment


def _mutate(path: list[Any], value: Any) -> dict[str, Any]:
    obj = seed_experiment("bad-exp")
    node: Any = obj["spec"]
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("path", "value", "field", "text"),
    [
        (
            ["parameters", 1, "feasibleSpace", "min"],
            "9",
            "spec.parameters[1].feasibleSpace.min",
            "must be < max",
        ),
        (["parameters", 0, "parameterType"], "float", "spec.parameters[0].parameterType", ""),
        (
            ["parameters", 2, "feasibleSpace", "list"],
            [],
            "spec.parameters[2].feasibleSpace.list",
            "Required",
        ),
        (["maxFailedTrialCount"], 20, "spec.maxFailedTrialCount", "maxTrialCount"),
        (["parallelTrialCount"], 0, "spec.parallelTrialCount", "greater than 0"),
        (["algorithm", "algorithmName"], "annealing", "spec.algorithm.algorithmName", "tpe"),
        (
            ["algorithm", "algorithmSettings"],
            [{"name": "n_EI_candidates", "value": "3"}],
            "spec.algorithm.algorithmSettings[0].name",
            "random_state",
        ),
        (
            ["trialTemplate", "trialSpec", "kind"],
            "TFJob",
            "spec.trialTemplate.trialSpec.kind",
            "not supported by the local runtime",
        ),
        (
            ["trialTemplate", "trialParameters", 0, "reference"],
            "nope",
            "spec.trialTemplate.trialParameters[0].reference",
            "parameter",
        ),
        (["objective", "type"], KeyError, "spec.objective.type", ""),
        (
            ["earlyStopping"],
            {
                "algorithmName": "medianstop",
                "algorithmSettings": [{"name": "start_step", "value": "0"}],
            },
            "spec.earlyStopping.algorithmSettings[0].value",
            ">= 1",
        ),
        (
            ["metricsCollectorSpec"],
            {"collector": {"kind": "PrometheusMetric"}},
            "spec.metricsCollectorSpec.collector.kind",
            "not supported",
        ),
        (
            ["trialTemplate", "configMap"],
            {"configMapName": "x", "templatePath": "y"},
            "spec.trialTemplate",
            "exactly one",
        ),
    ],
)
async def test_create_experiment_invalid(
    automl: AutoML, path: list[Any], value: Any, field: str, text: str
) -> None:
    r = await automl.request("POST", f"{API}/experiments", json=_mutate(path, value))
    assert r.status_code == 422, r.text
    causes = r.json()["details"]["causes"]
    assert any(c["field"] == field and text in c["message"] for c in causes), causes


async def test_create_experiment_defaults(automl: AutoML) -> None:
    obj = seed_experiment("defaults-exp")
    del obj["spec"]["parallelTrialCount"]
    obj["spec"]["maxTrialCount"] = 1
    obj["spec"]["maxFailedTrialCount"] = 1
    obj["spec"]["objective"]["type"] = "minimize"
    obj["spec"]["parallelTrialCount"] = 1
    created = await automl.create("experiments", copy.deepcopy(obj))
    spec = created["spec"]
    assert spec["resumePolicy"] == "Never"
    assert spec["metricsCollectorSpec"] == {"collector": {"kind": "StdOut"}}
    assert spec["objective"]["metricStrategies"][0] == {
        "name": "Validation-accuracy",
        "value": "min",
    }
    template = spec["trialTemplate"]
    assert template["successCondition"] == (
        'status.conditions.#(type=="Complete")#|#(status=="True")#'
    )
    assert template["failureCondition"] == (
        'status.conditions.#(type=="Failed")#|#(status=="True")#'
    )
    assert created["metadata"]["finalizers"] == ["update-prometheus-metrics"]
    await automl.wait_finished("defaults-exp")
    del obj["spec"]["parallelTrialCount"]
    obj["metadata"]["name"] = "defaults-exp2"
    obj["spec"]["maxTrialCount"] = 5
    created = await automl.create("experiments", obj)
    assert created["spec"]["parallelTrialCount"] == 3
    await automl.request("DELETE", f"{API}/experiments/defaults-exp2")
