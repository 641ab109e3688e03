"""The seed's Katib Experiment (random-example) runs as written, with a local training script.

Real automl service (in-process uvicorn), real Postgres/NATS, real sandboxed trial processes.
"""

from __future__ import annotations

from typing import Any

from services.common.catalog import EXPERIMENT, TRIAL
from shipyard.output import table
from tests.automl.conftest import API, AutoML, max_overlap, reason_of, seed_experiment


async def workload_intervals(automl: AutoML, experiment: str) -> list[tuple[float, float]]:
    runtime = automl.app.state.ctx.runtime
    statuses = await runtime.list({"katib.kubeflow.org/experiment": experiment})
    return [
        (s.start_time.timestamp(), s.finish_time.timestamp())
        for s in statuses
        if s.start_time and s.finish_time
    ]


async def test_create_seed_experiment_succeeds(automl: AutoML) -> None:
    created = await automl.create("experiments", seed_experiment("random-example"))
    assert created["spec"]["parallelTrialCount"] == 3
    assert created["spec"]["objective"]["metricStrategies"] == [
        {"name": "Validation-accuracy", "value": "max"},
        {"name": "Train-accuracy", "value": "max"},
    ]
    exp = await automl.wait_finished("random-example", timeout=120)
    assert reason_of(exp) == ("Succeeded", "ExperimentMaxTrialsReached")
    status = exp["status"]
    assert status["trials"] == 12 and status["trialsSucceeded"] == 12
    assert status["trialsFailed"] == status["trialsRunning"] == status["trialsPending"] == 0
    assert status["trialsKilled"] == status["trialsEarlyStopped"] == 0
    assert status["trialMetricsUnavailable"] == 0
    assert max_overlap(await workload_intervals(automl, "random-example")) <= 3

    trials = await automl.trials("random-example")
    assert len(trials) == 12
    values = []
    for t in trials:
        assert t["metadata"]["ownerReferences"][0]["uid"] == exp["metadata"]["uid"]
        params = {a["name"]: a["value"] for a in t["spec"]["parameterAssignments"]}
        assert 0.01 <= float(params["lr"]) <= 0.03 and 2 <= int(params["num-layers"]) <= 5
        assert params["optimizer"] in ("sgd", "adam", "ftrl")
        command = t["spec"]["runSpec"]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert f"--lr={params['lr']}" in command
        metric = next(
            m for m in t["status"]["observation"]["metrics"] if m["name"] == "Validation-accuracy"
        )
        values.append((float(metric["max"]), t["metadata"]["name"]))
    best = max(values, key=lambda v: v[0])
    assert status["currentOptimalTrial"]["bestTrialName"] == best[1]

    summary = (await automl.request("GET", f"{API}/experiments/random-example/trialsummary")).json()
    assert summary["parameters"] == ["lr", "num-layers", "optimizer"]
    assert len(summary["trials"]) == 12
    row: dict[str, Any] = summary["trials"][0]
    assert set(row["parameters"]) == {"lr", "num-layers", "optimizer"}
    assert row["objective"] is not None and "Train-accuracy" in row["metrics"]

    name = trials[0]["metadata"]["name"]
    obs = (
        await automl.request(
            "GET",
            f"{API}/trials/{name}/observationlog",
            params={"metricName": "Validation-accuracy"},
        )
    ).json()
    logs = obs["observationLog"]["metricLogs"]
    assert [entry["step"] for entry in logs] == [0, 1, 2]
    assert all(entry["metric"]["name"] == "Validation-accuracy" for entry in logs)

    text = (await automl.request("GET", f"{API}/trials/{name}/log")).text
    assert "Epoch[2] Validation-accuracy=" in text
    tail = (await automl.request("GET", f"{API}/trials/{name}/log", params={"tailLines": "1"})).text
    assert tail.count("\n") == 1

    suggestion = await automl.get("suggestions", "random-example")
    assert suggestion["spec"]["requests"] == 12
    assert suggestion["status"]["suggestionCount"] == 12

    rows = table(EXPERIMENT, [exp])
    assert "BEST-TRIAL" in rows[0] and best[1] in rows[1]
    trial_rows = table(TRIAL, trials)
    assert "PARAMETERS" in trial_rows[0] and "OBJECTIVE" in trial_rows[0]
    assert "lr=" in " ".join(trial_rows[1])
