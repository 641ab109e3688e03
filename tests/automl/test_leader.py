"""Two automl replicas on one database: only the lock holder creates trials.

Both replicas are real services (uvicorn, own database for this test, shared NATS and
runtime state dir, as two replicas on one machine). Mid-experiment the leader gives up the
lock (its lock session closes, as it does when the process is SIGKILLed; the service itself
stays up so that its running trials keep running) and the standby must take over, adopt the
running trials, and finish without exceeding maxTrialCount or parallelTrialCount.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.automl.settings import Settings
from services.common.identity import AssertionMinter
from services.common.leader import NotLeader
from services.common.runtime import LocalRuntime
from tests.automl.conftest import (
    API,
    NAMESPACE,
    max_overlap,
    python_experiment,
    start_automl,
    unique,
)
from tests.conftest import free_port, fresh_database

SLOW_TRIAL = "import sys, time; time.sleep(0.4); print(f'loss={float(sys.argv[1]):.4f}')"


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database("shipyard_leader") as url:
        yield url


async def _wait_for(predicate: Any, timeout: float = 20) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls another component's flag
            await asyncio.sleep(0.05)


async def test_two_replicas_one_leader_takes_over(
    database: str, nats_url: str, tmp_path: Path
) -> None:
    minter = AssertionMinter()
    durable = f"automl-leader-{uuid.uuid4().hex[:8]}"
    replicas = []
    for _ in range(2):
        settings = Settings(
            database_url=database,
            nats_url=nats_url,
            port=free_port(),
            state_dir=tmp_path,
            gateway_public_key=minter.public_pem.decode(),
            resync_seconds=5,
            events_durable=durable,
        )
        replicas.append((settings, *await start_automl(settings)))
    elections = [app.state.ctx.leader for _, _, _, app in replicas]
    await _wait_for(lambda: any(e.is_leader for e in elections))
    await asyncio.sleep(1.5)  # a standby retries every second: it must still not lead
    assert sum(e.is_leader for e in elections) == 1
    leader = next(i for i, e in enumerate(elections) if e.is_leader)
    standby = 1 - leader
    standby_db = replicas[standby][3].state.ctx.db
    async with standby_db.transaction() as s:
        with pytest.raises(NotLeader):
            await elections[standby].fence(s)

    name = unique("leader")
    body = python_experiment(
        name,
        SLOW_TRIAL,
        maxTrialCount=8,
        parallelTrialCount=2,
        maxFailedTrialCount=8,
    )
    headers = minter.headers(namespace=NAMESPACE, role="admin")
    url = f"http://127.0.0.1:{replicas[standby][0].port}"
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        r = await client.post(f"{API}/experiments", json=body)  # any replica serves the API
        assert r.status_code == 201, r.text

        async def trial_count() -> int:
            r = await client.get(f"{API}/trials", params={"labelSelector": f"experiment={name}"})
            return len(r.json()["items"])

        async with asyncio.timeout(30):
            while await trial_count() < 3:  # noqa: ASYNC110 - polls the API
                await asyncio.sleep(0.1)
        # The leader loses the lock (as when its database session dies); its service and
        # runtime stay up, so its running trials keep running and must be adopted.
        await elections[leader].stop()
        assert not elections[leader].is_leader
        await _wait_for(lambda: elections[standby].is_leader)

        async with asyncio.timeout(60):
            while True:
                exp = (await client.get(f"{API}/experiments/{name}")).json()
                done = [
                    c
                    for c in exp.get("status", {}).get("conditions", [])
                    if c["type"] in ("Succeeded", "Failed") and c["status"] == "True"
                ]
                if done:
                    break
                await asyncio.sleep(0.2)
        assert done[0]["reason"] == "ExperimentMaxTrialsReached", exp["status"]
        assert await trial_count() == 8
        trials = (
            await client.get(f"{API}/trials", params={"labelSelector": f"experiment={name}"})
        ).json()["items"]
        failed = [
            t["status"]["conditions"][-1]["message"]
            for t in trials
            if t["status"]["conditions"][-1]["type"] != "Succeeded"
        ]
        assert exp["status"]["trialsSucceeded"] == 8, failed

    runtime = LocalRuntime(tmp_path)
    statuses = await runtime.list({"katib.kubeflow.org/experiment": name})
    await runtime.close()
    intervals = [
        (s.start_time.timestamp(), s.finish_time.timestamp())
        for s in statuses
        if s.start_time and s.finish_time
    ]
    assert len(statuses) == 8
    assert max_overlap(intervals) <= 2

    for _, server, task, _ in replicas:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
