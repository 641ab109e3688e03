"""resumePolicy FromVolume: a completed experiment restarts and continues where it stopped.

Real automl service, real trials (local runtime). As Katib's, the Suggestion of a FromVolume
experiment succeeds when the experiment does ("suggestion volume is not deleted, can be
restarted") and its volume (Katib's PVC name ``<experiment>-<algorithm>``) is kept while the
experiment exists; raising maxTrialCount restarts it, and the grid search goes on from the
study kept in Postgres (no assignment repeats). The volume goes with the experiment. Never:
the Suggestion "can't be restarted" and a raised maxTrialCount starts nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.automl.conftest import API, AutoML, python_experiment, reason_of, unique

VALUES = [str(v) for v in range(1, 7)]
PARAM = [{"name": "n", "parameterType": "categorical", "feasibleSpace": {"list": VALUES}}]
CODE = "import sys; print(f'loss={int(sys.argv[1]) / 10}')"


async def _raise_max(automl: AutoML, name: str, count: int) -> None:
    r = await automl.request(
        "PATCH",
        f"{API}/experiments/{name}",
        json={"spec": {"maxTrialCount": count}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text


def _suggestion_state(suggestion: dict[str, Any]) -> tuple[str, str, str]:
    last = [c for c in suggestion["status"]["conditions"] if c["status"] == "True"][-1]
    return last["type"], last["reason"], last["message"]


async def _suggestion(automl: AutoML, name: str, ctype: str) -> dict[str, Any]:
    """The Suggestion once its latest True condition is ``ctype`` (it follows the experiment
    at a later reconcile)."""
    async with asyncio.timeout(30):
        while True:
            suggestion = await automl.get("suggestions", name)
            if _suggestion_state(suggestion)[0] == ctype:
                return suggestion
            await asyncio.sleep(0.2)


async def test_from_volume_restarts_and_continues(automl: AutoML) -> None:
    runtime = automl.app.state.ctx.runtime
    exp = await automl.run_experiment(
        "fromvol",
        CODE,
        parameters=PARAM,
        algorithm="grid",
        maxTrialCount=2,
        parallelTrialCount=1,
        resumePolicy="FromVolume",
    )
    name = exp["metadata"]["name"]
    namespace = exp["metadata"]["namespace"]
    assert reason_of(exp) == ("Succeeded", "ExperimentMaxTrialsReached")
    suggestion = await _suggestion(automl, name, "Succeeded")
    assert _suggestion_state(suggestion) == (
        "Succeeded",
        "Experiment is succeeded",
        "Suggestion is succeeded, suggestion volume is not deleted, can be restarted",
    )
    assert suggestion["spec"]["resumePolicy"] == "FromVolume"
    assert await runtime.volume_exists(namespace, f"{name}-grid")

    await _raise_max(automl, name, 4)
    async with asyncio.timeout(60):
        while True:
            exp = await automl.get("experiments", name)
            if exp["status"].get("trialsSucceeded") == 4 and reason_of(exp)[0] == "Succeeded":
                break
            await asyncio.sleep(0.2)
    assert any(c["type"] == "Restarting" for c in exp["status"]["conditions"])
    trials = await automl.trials(name)
    assigned = [t["spec"]["parameterAssignments"][0]["value"] for t in trials]
    assert len(assigned) == 4 and len(set(assigned)) == 4, assigned  # the grid went on
    suggestion = await _suggestion(automl, name, "Succeeded")
    assert suggestion["status"]["suggestionCount"] == 4
    running = next(c for c in suggestion["status"]["conditions"] if c["type"] == "Running")
    assert running["status"] == "False"  # it ran again, then succeeded again

    r = await automl.request("DELETE", f"{API}/experiments/{name}")
    assert r.status_code == 200, r.text
    async with asyncio.timeout(30):
        while (  # noqa: ASYNC110
            await automl.request("GET", f"{API}/experiments/{name}")
        ).status_code != 404:
            await asyncio.sleep(0.1)
    assert not await runtime.volume_exists(namespace, f"{name}-grid")


async def test_never_does_not_restart(automl: AutoML) -> None:
    name = unique("never")
    await automl.create(
        "experiments",
        python_experiment(
            name, CODE, parameters=PARAM, algorithm="grid", maxTrialCount=1, parallelTrialCount=1
        ),
    )
    exp = await automl.wait_finished(name)
    assert reason_of(exp) == ("Succeeded", "ExperimentMaxTrialsReached")
    suggestion = await _suggestion(automl, name, "Succeeded")
    assert _suggestion_state(suggestion)[2] == "Suggestion is succeeded, can't be restarted"
    assert not await automl.app.state.ctx.runtime.volume_exists(
        exp["metadata"]["namespace"], f"{name}-grid"
    )
    await _raise_max(automl, name, 2)
    await asyncio.sleep(2)  # a restart would have made a trial by now (trials start in ms)
    exp = await automl.get("experiments", name)
    assert exp["status"]["trials"] == 1 and reason_of(exp)[0] == "Succeeded"
    assert len(await automl.trials(name)) == 1
