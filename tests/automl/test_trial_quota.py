"""A trial whose claim (a File collector's metrics volume) is over its namespace's quota, on
the real automl service and local runtime: it waits, saying so in its Created condition, and
runs once there is room; one that can never fit fails, in the API server's words."""

from __future__ import annotations

import asyncio
from typing import Any

from services.automl.trial_runs import WAITING_FOR_ROOM, metrics_claim
from services.common.runtime import LocalRuntime
from tests.automl.conftest import NAMESPACE, AutoML, python_experiment, reason_of, unique

PARAM = [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "1", "max": "2"}}]
WRITES_METRICS = (
    "import os; os.makedirs('/var/log/katib', exist_ok=True); "
    "open('/var/log/katib/metrics.log','w').write('loss=0.3\\n')"
)


#: One trial, whose File collector needs a claim for its metrics file.
ONE_FILE_TRIAL: dict[str, Any] = {
    "parameters": PARAM,
    "maxTrialCount": 1,
    "parallelTrialCount": 1,
    "metricsCollectorSpec": {"collector": {"kind": "File"}},
}


async def _start(automl: AutoML) -> str:
    name = unique("quota")
    await automl.create("experiments", python_experiment(name, WRITES_METRICS, **ONE_FILE_TRIAL))
    return name


def _created(trial: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in trial["status"]["conditions"] if c["type"] == "Created")


async def test_a_trials_claim_waits_for_room_or_fails_when_it_never_fits(automl: AutoML) -> None:
    runtime = LocalRuntime(automl.state_dir)
    try:
        await runtime.create_volume(NAMESPACE, "quota-filler")  # one claim always there
        await runtime.ensure_namespace(
            NAMESPACE, "user@example.com", {"persistentvolumeclaims": "1"}
        )
        name = await _start(automl)
        async with asyncio.timeout(30):
            while True:
                trials = await automl.trials(name)
                if trials and WAITING_FOR_ROOM in _created(trials[0]).get("message", ""):
                    break
                await asyncio.sleep(0.2)
        message = _created(trials[0])["message"]
        claim = metrics_claim(trials[0]["metadata"]["name"])
        assert message.startswith(f'{WAITING_FOR_ROOM}persistentvolumeclaims "{claim}"'), message
        assert "exceeded quota: kf-resource-quota, requested: persistentvolumeclaims=1" in message
        assert not any(c["type"] == "Running" for c in trials[0]["status"]["conditions"])

        await runtime.ensure_namespace(NAMESPACE, "user@example.com")  # room: the quota is gone
        exp = await automl.wait_finished(name, timeout=60)
        assert reason_of(exp)[0] == "Succeeded", exp["status"]
        (trial,) = await automl.trials(name)
        assert _created(trial)["message"] == "Trial is created"

        await runtime.ensure_namespace(
            NAMESPACE, "user@example.com", {"persistentvolumeclaims": "0"}
        )
        never = await _start(automl)
        await automl.wait_finished(never, timeout=60)
        (trial,) = await automl.trials(never)
        failed = trial["status"]["conditions"][-1]
        assert failed["type"] == "Failed", trial["status"]
        assert failed["message"].startswith(
            f'Trial cannot run: persistentvolumeclaims "{metrics_claim(trial["metadata"]["name"])}"'
        ), failed
        assert "limited: persistentvolumeclaims=0" in failed["message"], failed
    finally:
        await runtime.ensure_namespace(NAMESPACE, "user@example.com")
        await runtime.delete_volume(NAMESPACE, "quota-filler")
        await runtime.close()
