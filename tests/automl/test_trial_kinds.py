"""Katib trials of any kind: GJSON success/failure conditions, and PyTorchJob trials.

The condition evaluator (services/automl/conditions.py) is checked against Katib's own
default condition strings on the job statuses Kubernetes and the Training Operator report.
Then, on a real automl service: an experiment whose trials are PyTorchJobs (examples/automl/
pytorchjob-experiment.yaml, real torch.distributed) completes with the master's metrics, and
a Job trial's outcome follows its conditions, not its exit code alone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.automl import conditions
from tests.automl.conftest import API, NAMESPACE, AutoML, python_experiment, reason_of, unique

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "automl"
JOBS = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs"


def cond(ctype: str, status: str = "True", **extra: str) -> dict[str, str]:
    return {"type": ctype, "status": status, **extra}


def job(*conds: dict[str, str]) -> dict[str, Any]:
    return {"status": {"conditions": list(conds)}}


# -- the GJSON subset -------------------------------------------------------------------------


def test_katib_job_defaults_on_batch_job_statuses() -> None:
    success, failure, labels = conditions.defaults("Job")
    assert success == 'status.conditions.#(type=="Complete")#|#(status=="True")#'
    assert failure == 'status.conditions.#(type=="Failed")#|#(status=="True")#'
    assert labels is None
    done = job(cond("Complete", reason="CompletionsReached", message="done"))
    assert conditions.job_outcome(done, success, failure) == (
        "Succeeded",
        cond("Complete", reason="CompletionsReached", message="done"),
    )
    failed = job(cond("Failed", reason="BackoffLimitExceeded", message="limit"))
    assert conditions.job_outcome(failed, success, failure) == (
        "Failed",
        cond("Failed", reason="BackoffLimitExceeded", message="limit"),
    )
    assert conditions.job_outcome(job(), success, failure) is None
    assert conditions.job_outcome({"status": {}}, success, failure) is None
    # A condition present but not True does not hold (Katib: an empty array is no match).
    assert conditions.job_outcome(job(cond("Complete", "False")), success, failure) is None


def test_katib_training_defaults_on_pytorchjob_statuses() -> None:
    success, failure, labels = conditions.defaults("PyTorchJob")
    assert success == 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
    assert failure == 'status.conditions.#(type=="Failed")#|#(status=="True")#'
    assert labels == {"training.kubeflow.org/job-role": "master"}
    assert conditions.defaults("TFJob") == (success, failure, labels)
    running = job(cond("Created"), cond("Running"))
    assert conditions.job_outcome(running, success, failure) is None
    ended = job(cond("Created"), cond("Running", "False"), cond("Succeeded", reason="ok"))
    assert conditions.job_outcome(ended, success, failure) == (
        "Succeeded",
        cond("Succeeded", reason="ok"),
    )
    # Failure is tried first, as Katib does.
    both = job(cond("Succeeded"), cond("Failed", reason="PyTorchJobFailed"))
    assert conditions.job_outcome(both, success, failure) == (
        "Failed",
        cond("Failed", reason="PyTorchJobFailed"),
    )
    assert conditions.defaults("Deployment") == (None, None, None)


def test_gjson_paths_queries_and_pipes() -> None:
    doc = {
        "a": {"b.c": 1, "list": [{"n": 1, "x": "p"}, {"n": 3, "x": "q"}, {"n": 5, "x": "r"}]},
    }
    assert conditions.get(doc, "a.b\\.c") == 1
    assert conditions.get(doc, "a.list.#") == 3
    assert conditions.get(doc, "a.list.1.x") == "q"
    assert conditions.get(doc, "a.list.#(n>1)") == {"n": 3, "x": "q"}
    assert conditions.get(doc, "a.list.#(n>1)#.x") == ["q", "r"]
    assert conditions.get(doc, "a.list.#(n>1)#|#") == 2
    assert conditions.get(doc, 'a.list.#(x!="q")#|#(n>=5)#') == [{"n": 5, "x": "r"}]
    assert conditions.get(doc, "a.list.#(n<0)") is conditions.MISSING
    assert conditions.get(doc, "a.list.#(n<0)#") == []
    assert conditions.get(doc, "a.missing.deeper") is conditions.MISSING
    assert conditions.get(doc, "a.list.#(x)#|#") == 3  # "exists" query
    # A string compared with a number never matches; ordering works on numbers and strings.
    assert conditions.get(doc, 'a.list.#(n=="1")#') == []
    assert conditions.get(doc, 'a.list.#(x<"q")#.n') == [1]


def test_met_needs_an_object_or_a_non_empty_array() -> None:
    doc = {"status": {"phase": "Succeeded", "conditions": [cond("Ready")]}}
    assert conditions.met(doc, "status.phase") is None  # a string is not a condition
    assert conditions.met(doc, 'status.conditions.#(type=="Ready")') == cond("Ready")
    assert conditions.met(doc, 'status.conditions.#(type=="Gone")#') is None
    assert conditions.met(doc, "") is None


@pytest.mark.parametrize(
    "bad",
    [
        "status.conditions.@reverse",
        'status.conditions.#(type=="Complete"#',
        "status..type",
        "{status.a,status.b}",
        "x" * 2000,
    ],
)
def test_check_refuses_what_the_subset_does_not_evaluate(bad: str) -> None:
    with pytest.raises(conditions.ConditionError):
        conditions.check(bad)


def test_check_accepts_katibs_documented_conditions() -> None:
    for kind in ("Job", "PyTorchJob"):
        success, failure, _ = conditions.defaults(kind)
        conditions.check(success or "")
        conditions.check(failure or "")


def test_conditions_accept_the_gjson_katibs_controller_evaluates() -> None:
    """Katib reads conditions with the full gjson: a bare word compares as a string, keys take
    ``*``/``?`` wildcards, ``%`` matches a pattern, ``[@this]`` wraps the document."""
    doc = job(cond("Created"), cond("Complete", reason="CompletionsReached"))
    complete = cond("Complete", reason="CompletionsReached")
    for condition in (
        "status.conditions.#(type==Complete)#",
        "status.*.#(type%Comp*)",
        "status.cond?tions.#(reason)",
        "[@this].#(status.conditions.#(type==Complete)).status.conditions.1",
    ):
        conditions.check(condition)
        assert conditions.met(doc, condition) == complete, condition
    assert conditions.met(doc, "status.conditions.#(type==Failed)#") is None


# -- on a real service ------------------------------------------------------------------------


def test_experiment_example_inlines_the_trial_program() -> None:
    code = (EXAMPLES / "pytorchjob_trial.py").read_text()
    exp = yaml.safe_load((EXAMPLES / "pytorchjob-experiment.yaml").read_text())
    specs = exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["pytorchReplicaSpecs"]
    for replica in specs.values():
        assert replica["template"]["spec"]["containers"][0]["command"][2] == code


async def test_pytorchjob_trials_complete_with_the_masters_metrics(automl: AutoML) -> None:
    exp = yaml.safe_load((EXAMPLES / "pytorchjob-experiment.yaml").read_text())
    name = unique("ptj-exp")
    exp["metadata"]["name"] = name
    exp["spec"]["maxTrialCount"] = 2
    created = await automl.create("experiments", exp)
    template = created["spec"]["trialTemplate"]
    assert template["successCondition"] == conditions.TRAINING_SUCCESS  # Katib's defaults
    assert template["primaryPodLabels"] == {"training.kubeflow.org/job-role": "master"}
    done = await automl.wait_finished(name, timeout=120)
    assert reason_of(done) == ("Succeeded", "ExperimentMaxTrialsReached"), done["status"]
    trials = await automl.trials(name)
    assert len(trials) == 2
    for trial in trials:
        status = trial["status"]
        assert status["conditions"][-1]["type"] == "Succeeded", status
        metrics = {m["name"]: m for m in status["observation"]["metrics"]}
        assert float(metrics["loss"]["latest"]) < 5.0
        assert trial["spec"]["runSpec"]["kind"] == "PyTorchJob"
    optimal = done["status"]["currentOptimalTrial"]
    assert optimal["bestTrialName"] in {t["metadata"]["name"] for t in trials}
    # Katib deletes a finished trial's job unless the template retains it.
    async with asyncio.timeout(30):
        for trial in trials:
            path = f"{JOBS}/{trial['metadata']['name']}"
            while (await automl.request("GET", path)).status_code != 404:  # noqa: ASYNC110
                await asyncio.sleep(0.2)


async def test_retained_pytorchjob_trial_logs_and_deletion(automl: AutoML) -> None:
    """``retain: true`` keeps the trial's PyTorchJob; the trial's log is its primary
    replica's (the master's); deleting the experiment deletes the job with its trials."""
    exp = yaml.safe_load((EXAMPLES / "pytorchjob-experiment.yaml").read_text())
    name = unique("ptj-keep")
    exp["metadata"]["name"] = name
    exp["spec"].update(maxTrialCount=1, parallelTrialCount=1, maxFailedTrialCount=1)
    exp["spec"]["trialTemplate"]["retain"] = True
    await automl.create("experiments", exp)
    done = await automl.wait_finished(name, timeout=120)
    assert reason_of(done) == ("Succeeded", "ExperimentMaxTrialsReached"), done["status"]
    (trial,) = await automl.trials(name)
    trial_name = trial["metadata"]["name"]
    job = (await automl.request("GET", f"{JOBS}/{trial_name}")).json()
    assert job["metadata"]["labels"]["katib.kubeflow.org/trial"] == trial_name
    assert job["metadata"]["ownerReferences"][0]["name"] == trial_name
    assert job["status"]["conditions"][-1]["type"] == "Succeeded"
    r = await automl.request("GET", f"{API}/trials/{trial_name}/log")
    assert r.status_code == 200, r.text
    assert "allreduce: rank=0 world=2 sum=3" in r.text and "loss=" in r.text
    r = await automl.request("DELETE", f"{API}/experiments/{name}")
    assert r.status_code == 200, r.text
    async with asyncio.timeout(30):
        while (await automl.request("GET", f"{JOBS}/{trial_name}")).status_code != 404:  # noqa: ASYNC110
            await asyncio.sleep(0.2)


async def test_job_trial_outcome_follows_its_conditions(automl: AutoML) -> None:
    """One code path for every kind: a Job that exits 0 is a failed trial when the template's
    failureCondition says a Complete job has failed."""
    name = unique("cond-job")
    exp = python_experiment(name, "print('loss=0.5')", maxTrialCount=1, parallelTrialCount=1)
    template = exp["spec"]["trialTemplate"]
    template["failureCondition"] = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
    template["successCondition"] = 'status.conditions.#(type=="Never")#'
    await automl.create("experiments", exp)
    await automl.wait_finished(name)
    trial = (await automl.trials(name))[0]
    last = trial["status"]["conditions"][-1]
    assert last["type"] == "Failed", trial["status"]
    assert "Reached expected number of succeeded pods" in last["message"]


async def test_invalid_condition_is_a_422_naming_the_field(automl: AutoML) -> None:
    exp = python_experiment(unique("cond-bad"), "print('loss=1')")
    exp["spec"]["trialTemplate"]["successCondition"] = "status.conditions.@reverse"
    r = await automl.request(
        "POST", f"/apis/kubeflow.org/v1beta1/namespaces/{NAMESPACE}/experiments", json=exp
    )
    assert r.status_code == 422, r.text
    fields = [c["field"] for c in r.json()["details"]["causes"]]
    assert fields == ["spec.trialTemplate.successCondition"]
