"""Completion reasons, medianstop, resumePolicy LongRunning, deletion (real service and trials)."""

from __future__ import annotations

import asyncio

from services.automl.algorithms import StudyRow, SuggestionEngine
from tests.automl.conftest import API, AutoML, python_experiment, reason_of, unique

PRINT_X = "import sys; print(f'loss={float(sys.argv[1]):.6f}')"


async def test_complete_goal_reached(automl: AutoML) -> None:
    # loss = x in [0, 1], so every trial meets the goal (minimize: loss <= goal); 0.99
    # left a 1% chance that the first trial missed it and a second one ran.
    exp = await automl.run_experiment(
        "goal",
        PRINT_X,
        goal=1.0,
        maxTrialCount=6,
        parallelTrialCount=1,
    )
    assert reason_of(exp) == ("Succeeded", "ExperimentGoalReached")
    assert exp["status"]["trials"] == 1


async def test_complete_failed(automl: AutoML) -> None:
    exp = await automl.run_experiment(
        "fail",
        "import sys; print('boom'); sys.exit(3)",
        maxTrialCount=4,
        maxFailedTrialCount=1,
        parallelTrialCount=1,
    )
    name = exp["metadata"]["name"]
    assert reason_of(exp) == ("Failed", "ExperimentFailed")
    assert exp["status"]["trialsFailed"] == 2
    trial = (await automl.trials(name))[0]
    assert "boom" in trial["status"]["conditions"][-1]["message"]


async def test_resume_long_running(automl: AutoML) -> None:
    exp = await automl.run_experiment(
        "long",
        PRINT_X,
        maxTrialCount=1,
        parallelTrialCount=1,
        resumePolicy="LongRunning",
    )
    name = exp["metadata"]["name"]
    assert reason_of(exp) == ("Succeeded", "ExperimentMaxTrialsReached")
    r = await automl.request(
        "PATCH",
        f"{API}/experiments/{name}",
        json={"spec": {"maxTrialCount": 2}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    async with asyncio.timeout(60):
        while True:
            exp = await automl.get("experiments", name)
            if exp["status"].get("trialsSucceeded") == 2 and reason_of(exp)[0] == "Succeeded":
                break
            await asyncio.sleep(0.2)
    assert reason_of(exp) == ("Succeeded", "ExperimentMaxTrialsReached")
    conditions = exp["status"]["conditions"]
    assert any(c["type"] == "Restarting" for c in conditions), conditions


def _grid_seed_with_bad_last(params: list[dict], spec: dict) -> int:
    """A random_state for which grid search suggests the bad value third (offline, exact)."""
    for seed in range(200):
        spec["algorithm"]["algorithmSettings"] = [{"name": "random_state", "value": str(seed)}]
        engine = SuggestionEngine()
        rows: list[StudyRow] = []
        order: list[str] = []
        for _ in range(3):
            result = engine.suggest(spec, "x", rows, {}, {}, {}, 1)
            for s in result.new:
                s.row.trial_name = f"t{s.row.number}"
                rows.append(s.row)
                order.append(s.assignments[0]["value"])
        if order[2] == "0.1":
            return seed
    raise AssertionError("no seed found")


async def test_early_stop_medianstop(automl: AutoML) -> None:
    name = unique("median")
    params = [
        {
            "name": "q",
            "parameterType": "categorical",
            "feasibleSpace": {"list": ["0.9", "0.8", "0.1"]},
        }
    ]
    code = (
        "import sys, time; q=float(sys.argv[1]); n = 3 if q > 0.5 else 200\n"
        "for i in range(n):\n    print(f'acc={q}', flush=True); time.sleep(0.05)\n"
    )
    body = python_experiment(
        name,
        code,
        parameters=params,
        algorithm="grid",
        objective="maximize",
        metric="acc",
        parallelTrialCount=1,
        earlyStopping={
            "algorithmName": "medianstop",
            "algorithmSettings": [
                {"name": "min_trials_required", "value": "2"},
                {"name": "start_step", "value": "2"},
            ],
        },
    )
    seed = _grid_seed_with_bad_last(
        params, {**body["spec"], "algorithm": {"algorithmName": "grid", "algorithmSettings": []}}
    )
    body["spec"]["algorithm"]["algorithmSettings"] = [{"name": "random_state", "value": str(seed)}]
    await automl.create("experiments", body)
    exp = await automl.wait_finished(name, timeout=60)
    assert reason_of(exp) == ("Succeeded", "ExperimentSuggestionEndReached")
    assert exp["status"]["trialsEarlyStopped"] == 1 and exp["status"]["trialsSucceeded"] == 2
    bad = next(
        t
        for t in await automl.trials(name)
        if t["spec"]["parameterAssignments"][0]["value"] == "0.1"
    )
    assert bad["status"]["conditions"][-1]["reason"] == "TrialEarlyStopped"
    rule = bad["spec"]["earlyStoppingRules"][0]
    assert rule["comparison"] == "LESS" and abs(float(rule["value"]) - 0.85) < 1e-9
    start = bad["status"]["startTime"]
    assert start and bad["status"]["completionTime"]
    runtime = automl.app.state.ctx.runtime
    status = await runtime.status(bad["metadata"]["namespace"], f"automl-{bad['metadata']['name']}")
    assert (status.finish_time - status.start_time).total_seconds() < 8  # not the full 10 s


async def test_delete_experiment_cleans_up(automl: AutoML) -> None:
    name = unique("del")
    await automl.create(
        "experiments",
        python_experiment(
            name,
            "import time; time.sleep(30)",
            maxTrialCount=2,
            parallelTrialCount=2,
        ),
    )
    runtime = automl.app.state.ctx.runtime

    async def running() -> int:
        statuses = await runtime.list({"katib.kubeflow.org/experiment": name})
        return len([s for s in statuses if s.phase.value == "Running"])

    async with asyncio.timeout(30):
        while await running() < 2:  # noqa: ASYNC110 - polling another process's state
            await asyncio.sleep(0.1)
    r = await automl.request("DELETE", f"{API}/experiments/{name}")
    assert r.status_code == 200
    async with asyncio.timeout(30):
        while (  # noqa: ASYNC110
            await automl.request("GET", f"{API}/experiments/{name}")
        ).status_code != 404:
            await asyncio.sleep(0.1)
    assert await automl.trials(name) == []
    assert await runtime.list({"katib.kubeflow.org/experiment": name}) == []
    r = await automl.request("GET", f"{API}/suggestions/{name}")
    assert r.status_code == 404
