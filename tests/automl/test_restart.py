"""SIGKILL the automl service mid-experiment and restart it: no trial lost, no limit exceeded.

The service runs as a real process (``python -m services.automl``) on its own fresh Postgres
database and state directory; trials are real sandboxed processes that outlive it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.common.identity import AssertionMinter
from services.common.runtime import LocalRuntime
from tests.automl.conftest import API, NAMESPACE, max_overlap, python_experiment
from tests.conftest import PG_ADMIN_DSN, _psql, free_port


@pytest.fixture
def fresh_db() -> Iterator[str]:
    name = f"shipyard_automl_restart_{uuid.uuid4().hex[:8]}"
    _psql(PG_ADMIN_DSN, f'CREATE DATABASE "{name}"')
    yield (
        PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        + f"/{name}"
    )
    _psql(PG_ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.automl"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )


async def _ready(url: str) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(60):
        while True:
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


async def test_restart_after_sigkill_keeps_limits(
    fresh_db: str, nats_url: str, tmp_path: Path
) -> None:
    minter = AssertionMinter()
    port = free_port()
    env = {
        **os.environ,
        "SHIPYARD_DATABASE_URL": fresh_db,
        "NATS_URL": nats_url,
        "SHIPYARD_PORT": str(port),
        "SHIPYARD_STATE_DIR": str(tmp_path),
        "SHIPYARD_GATEWAY_PUBLIC_KEY": minter.public_pem.decode(),
        "SHIPYARD_RESYNC_SECONDS": "1",
        "SHIPYARD_LOG_LEVEL": "WARNING",
        "SHIPYARD_EVENTS_DURABLE": f"automl-restart-{uuid.uuid4().hex[:8]}",
    }
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "automl.log"
    proc = _start(env, log)
    headers = minter.headers(namespace=NAMESPACE, role="admin")
    name = "restart-exp"
    code = "import sys, time; time.sleep(0.7); print(f'loss={float(sys.argv[1]):.5f}')"
    body = python_experiment(
        name,
        code,
        maxTrialCount=7,
        parallelTrialCount=2,
    )
    try:
        await _ready(url)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            assert (await client.post(f"{API}/experiments", json=body)).status_code == 201
            for kill_after in (2, 4):
                async with asyncio.timeout(60):
                    while True:
                        items = (await client.get(f"{API}/trials")).json()["items"]
                        if len(items) >= kill_after:
                            break
                        await asyncio.sleep(0.05)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                await asyncio.sleep(1.0)  # trials finish while the service is down
                proc = _start(env, log)
                await _ready(url)
            async with asyncio.timeout(90):
                while True:
                    exp = (await client.get(f"{API}/experiments/{name}")).json()
                    done = [
                        c
                        for c in exp.get("status", {}).get("conditions", [])
                        if c["type"] == "Succeeded" and c["status"] == "True"
                    ]
                    if done:
                        break
                    await asyncio.sleep(0.2)
            trials = (await client.get(f"{API}/trials")).json()["items"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert done[0]["reason"] == "ExperimentMaxTrialsReached", log.read_text()[-3000:]
    assert len(trials) == 7
    assert exp["status"]["trialsSucceeded"] == 7
    runtime = LocalRuntime(tmp_path)
    statuses = await runtime.list({"katib.kubeflow.org/experiment": name})
    await runtime.close()
    assert len(statuses) == 7
    spans = []
    for s in statuses:
        assert s.start_time is not None and s.finish_time is not None
        spans.append((s.start_time.timestamp(), s.finish_time.timestamp()))
    assert max_overlap(spans) <= 2
