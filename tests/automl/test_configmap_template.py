"""Katib trial templates kept in a ConfigMap (``trialTemplate.configMap``).

Real automl service, real trial processes. The ConfigMap kind (core/v1) is served by the
automl service; creating an experiment reads and checks the template there, as Katib's
webhook does, and every new trial reads it again, as Katib's controller does.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tests.automl.conftest import NAMESPACE, AutoML, python_experiment, reason_of, unique

CODE = "import sys; print(f'loss={(float(sys.argv[1]) - 0.5) ** 2:.6f}')"
PARAMS = [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}}]
CONFIG_MAPS = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


def _split(name: str, cm_name: str, key: str = "job.yaml") -> tuple[dict[str, Any], dict]:
    """(experiment whose template points at the ConfigMap, the ConfigMap holding the Job)."""
    exp = python_experiment(name, CODE, parameters=PARAMS, maxTrialCount=2, parallelTrialCount=2)
    template = exp["spec"]["trialTemplate"]
    job = template.pop("trialSpec")
    template["configMap"] = {"configMapName": cm_name, "templatePath": key}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": cm_name},
        "data": {key: yaml.safe_dump(job), "notes.txt": "not a template"},
    }
    return exp, config_map


async def _causes(automl: AutoML, exp: dict[str, Any]) -> dict[str, str]:
    r = await automl.request(
        "POST", f"/apis/kubeflow.org/v1beta1/namespaces/{NAMESPACE}/experiments", json=exp
    )
    assert r.status_code == 422, r.text
    return {c["field"]: c["message"] for c in r.json()["details"]["causes"]}


async def test_experiment_runs_its_trials_from_a_configmap(automl: AutoML) -> None:
    name = unique("cmtemplate")
    exp, config_map = _split(name, f"{name}-templates")
    r = await automl.request("POST", CONFIG_MAPS, json=config_map)
    assert r.status_code == 201, r.text
    assert r.json()["data"] == config_map["data"]
    await automl.create("experiments", exp)
    done = await automl.wait_finished(name, timeout=60)
    assert reason_of(done) == ("Succeeded", "ExperimentMaxTrialsReached")
    assert done["status"]["trialsSucceeded"] == 2
    stored = await automl.get("experiments", name)
    assert "trialSpec" not in stored["spec"]["trialTemplate"]  # kept as written
    for trial in await automl.trials(name):
        args = trial["spec"]["runSpec"]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert args[-1] == next(
            a["value"] for a in trial["spec"]["parameterAssignments"] if a["name"] == "x"
        )


async def test_configmap_problems_are_422_with_the_field(automl: AutoML) -> None:
    name = unique("cmbad")
    exp, config_map = _split(name, f"{name}-templates")
    causes = await _causes(automl, exp)
    assert "not found" in causes["spec.trialTemplate.configMap.configMapName"]

    r = await automl.request("POST", CONFIG_MAPS, json=config_map)
    assert r.status_code == 201, r.text
    wrong_key = copy.deepcopy(exp)
    wrong_key["spec"]["trialTemplate"]["configMap"]["templatePath"] = "nope.yaml"
    message = (await _causes(automl, wrong_key))["spec.trialTemplate.configMap.templatePath"]
    assert "no key 'nope.yaml'" in message and "job.yaml, notes.txt" in message

    other_ns = copy.deepcopy(exp)
    other_ns["spec"]["trialTemplate"]["configMap"]["configMapNamespace"] = "kubeflow"
    message = (await _causes(automl, other_ns))["spec.trialTemplate.configMap.configMapNamespace"]
    assert "experiment's namespace" in message

    not_a_job = copy.deepcopy(exp)
    not_a_job["spec"]["trialTemplate"]["configMap"]["templatePath"] = "notes.txt"
    causes = await _causes(automl, not_a_job)
    assert "spec.trialTemplate.configMap.templatePath" in causes

    undeclared = copy.deepcopy(exp)
    undeclared["spec"]["trialTemplate"]["trialParameters"] = []
    causes = await _causes(automl, undeclared)
    assert "${trialParameters.x}" in causes["spec.trialTemplate.trialParameters"]


async def test_configmap_validation_and_immutability(automl: AutoML) -> None:
    name = unique("cm")
    r = await automl.request(
        "POST",
        CONFIG_MAPS,
        json={"metadata": {"name": name}, "data": {"bad key!": "x", "n": 3}},
    )
    assert r.status_code == 422, r.text
    fields = {c["field"] for c in r.json()["details"]["causes"]}
    assert fields == {"data[bad key!]", "data[n]"}

    body = {"metadata": {"name": name}, "data": {"a": "1"}, "immutable": True}
    assert (await automl.request("POST", CONFIG_MAPS, json=body)).status_code == 201
    r = await automl.request(
        "PATCH",
        f"{CONFIG_MAPS}/{name}",
        json={"data": {"a": "2"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 422 and "immutable" in r.text, r.text
    r = await automl.request(
        "PATCH",
        f"{CONFIG_MAPS}/{name}",
        json={"metadata": {"labels": {"team": "a"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert (await automl.request("DELETE", f"{CONFIG_MAPS}/{name}")).status_code == 200
