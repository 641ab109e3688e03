"""SIGKILL of each service in turn, then of the gateway, under the steady mix.

The supervision loop of ``shipyard up`` runs beside the platform (``Platform.supervise``
every half second), and nothing else touches it. For each of notebook, automl, pipeline,
serving and the gateway: a workflow is running its first step when the process is killed
(its whole process group, as the OOM killer or ``kill -9`` would); the gateway answers that
service's API with a ``Status`` while it is away (a client of a killed gateway sees its
connection refused); the process comes back by itself and its API answers again through the
gateway, and predictions come back from the model server.

At the end, without anyone touching the platform: every workflow Succeeded with each step
run exactly once (the ``tally`` step counts), the experiment completed with the trials it
asked for and automl applied each trial completion once, every object has the uid it had
before the kills, every prediction that came back was right, and the watch (reconnecting
from its last resourceVersion after each broken stream) saw every workflow change once and
in order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from services.common.runtime import LocalRuntime, VolumeNotFound
from tests.chaos.conftest import RECOVERY_SECONDS, ChaosPlatform
from tests.chaos.mix import (
    ARGO,
    CLAIMS,
    ISVC,
    KATIB,
    NS,
    InferenceTraffic,
    api_client,
    assert_completions_applied_once,
    assert_work_done,
    check_watch_saw_every_change,
    create_claim,
    finished_work,
    isvc_ready,
    object_uids,
    ready,
    running,
    start_experiment,
    start_sklearn_isvc,
    start_workflow,
    trials_of,
    wait_until,
    watch_caught_up,
    workflow_watcher,
)

log = logging.getLogger(__name__)

VICTIMS = ("notebook", "automl", "pipeline", "serving", "gateway")
TRIALS = 10
FIRST_STEP_SECONDS = 6


def _answers(api: httpx.Client, victim: str) -> bool:
    """The victim's API (or, for the gateway, any) answers through the gateway, and right."""
    if victim == "notebook":
        r = api.get(CLAIMS)
        return r.status_code == 200 and f"wf-{victim}-marks" in _names(r)
    if victim == "automl":
        r = api.get(f"{KATIB}/experiments/chaos-kill")
        return r.status_code == 200 and r.json()["metadata"]["name"] == "chaos-kill"
    if victim == "serving":
        return isvc_ready(api, "iris") is not None
    r = api.get(ARGO)
    return r.status_code == 200 and f"wf-{victim}" in _names(r)


def _names(r: httpx.Response) -> set[str]:
    return {item["metadata"]["name"] for item in r.json()["items"]}


def _while_away(api: httpx.Client, victim: str) -> str:
    """What a client gets from the victim's API right after the kill."""
    path = {"notebook": CLAIMS, "automl": f"{KATIB}/experiments", "serving": ISVC}.get(victim, ARGO)
    try:
        r = api.get(path, timeout=5)
    except httpx.TransportError as exc:
        return type(exc).__name__
    body = r.json()
    assert r.status_code in (502, 503) and body["kind"] == "Status", (victim, r.text)
    assert f"the {victim} service is unavailable" in body["message"], (victim, body)
    assert r.headers.get("retry-after"), r.headers
    return f"{r.status_code} {body['reason']}: {body['message']}"


def _volume(cp: ChaosPlatform, claim: str) -> Path | None:
    """The claim's data directory on this host once the runtime has made it."""
    try:
        return asyncio.run(LocalRuntime(cp.state_dir).resolve_volume(NS, claim))
    except VolumeNotFound:
        return None


def _kill(cp: ChaosPlatform, victim: str) -> tuple[int, float]:
    """SIGKILL the victim's process group; (old pid, time it was seen dead)."""
    child = cp.child(victim)
    pid = child.pid
    os.killpg(pid, signal.SIGKILL)
    wait_until(f"{victim} dead", lambda: child.exit_code() is not None, 10, every=0.01)
    return pid, time.monotonic()


def test_sigkill_each_service_and_the_gateway_under_load(chaos_platform: ChaosPlatform) -> None:
    cp = chaos_platform
    api = api_client(cp.gateway)
    create_claim(api, "models")
    models = wait_until("the claim bound", lambda: _volume(cp, "models"), 30)
    start_sklearn_isvc(api, "iris", models, "models")
    start_rv, watcher = workflow_watcher(api, cp.gateway)
    traffic = InferenceTraffic(cp.gateway, "iris")
    measured: dict[str, dict[str, float | str]] = {}
    with cp.supervised() as supervisor_errors:
        watcher.start()
        try:
            start_experiment(api, "chaos-kill", trials=TRIALS, parallel=2, seconds=3)
            wait_until("iris ready", lambda: isvc_ready(api, "iris"), 120)
            traffic.start()
            wait_until("a prediction", lambda: traffic.answered(0), 30)
            wait_until("a trial", lambda: trials_of(api, "chaos-kill"), 60)
            before: dict[str, str] = {}
            for victim in VICTIMS:
                name = f"wf-{victim}"
                start_workflow(api, name, first_step_seconds=FIRST_STEP_SECONDS)
                wait_until(f"{name} running", functools.partial(running, api, name), 60)
                before.update(object_uids(api))
                old_pid, dead_at = _kill(cp, victim)
                away = _while_away(api, victim)
                child = cp.child(victim)

                def restarted(child: object = child, old_pid: int = old_pid) -> bool:
                    return child.pid != old_pid and child.exit_code() is None  # type: ignore[attr-defined]

                wait_until(f"{victim} restarted", restarted, RECOVERY_SECONDS, every=0.05)
                restarted_at = time.monotonic()
                url = cp.platform.urls[victim]  # type: ignore[attr-defined]
                wait_until(f"{victim} ready", functools.partial(ready, url), RECOVERY_SECONDS, 0.1)
                ready_at = time.monotonic()
                answers: Callable[[], bool] = functools.partial(_answers, api, victim)
                wait_until(f"{victim}'s API through the gateway", answers, RECOVERY_SECONDS, 0.1)
                api_at = time.monotonic()
                wait_until(
                    f"a prediction after {victim} came back",
                    functools.partial(traffic.answered, api_at),
                    RECOVERY_SECONDS,
                    0.1,
                )
                measured[victim] = {
                    "away": away,
                    "restarted": round(restarted_at - dead_at, 2),
                    "ready": round(ready_at - dead_at, 2),
                    "api": round(api_at - dead_at, 2),
                    "failed predictions": len(traffic.failures_between(dead_at, api_at)),
                }
                log.warning("SIGKILL %s: %s", victim, measured[victim])

            start = time.monotonic()
            done, condition = finished_work(api, [f"wf-{v}" for v in VICTIMS], "chaos-kill")
            log.warning("after the last kill, all finished in %.1f s", time.monotonic() - start)
            after = object_uids(api)
            committed = watch_caught_up(cp.query, watcher, start_rv)
        finally:
            traffic.stop()
            watcher.stop()
    assert supervisor_errors == [], supervisor_errors

    assert_work_done(api, done, condition, "chaos-kill", TRIALS)
    assert_completions_applied_once(cp.query, TRIALS)

    lost = {k: v for k, v in before.items() if after.get(k) != v}
    assert lost == {}, lost
    assert traffic.wrong_answers() == [], traffic.wrong_answers()[:3]
    assert cp.exited() == {}, {n: cp.logs(n) for n in cp.exited()}
    for victim in VICTIMS:  # restarted once, by the supervisor, which said so in its log
        assert "restart 1 after exit code -9" in cp.logs(victim, 400), cp.logs(victim)
        assert "restart 2 " not in cp.logs(victim, 400), cp.logs(victim)

    check_watch_saw_every_change(watcher, committed, list(done))
