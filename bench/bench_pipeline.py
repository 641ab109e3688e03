"""Pipeline orchestration overhead per step, beside the runtime's raw spawn cost.

Two workflows of trivial steps (``true``) run through a real pipeline service (Postgres, NATS,
local runtime with the bubblewrap sandbox): a 200-step chain and a 200-way fan-out. For each:

    overhead per step = (workflow wall time - the steps' own process time) / steps

The steps' own process time is the sum of their process lifetimes for the chain (they run one
after another) and the longest one for the fan-out (they run side by side). The runtime's raw
spawn cost is measured in the same run, beside every workflow (so both see the same machine
load), on the runtime alone: the median of ``runtime.apply`` + ``runtime.wait`` of the same
trivial step minus its own lifetime. The
table shows the overhead per step beside it as a ratio, and "added": the overhead beyond that
raw spawn cost, what the pipeline service costs on top of spawning the process. Target: under
50 ms added per step (PASS/FAIL; the exit status is 1 on a FAIL).

    .venv/bin/python bench/bench_pipeline.py [--steps 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import httpx  # noqa: E402

from services.common.runtime import LocalRuntime  # noqa: E402
from services.pipeline.app import create_app  # noqa: E402
from services.pipeline.runner import workload_name  # noqa: E402
from services.pipeline.settings import Settings  # noqa: E402
from tests.conftest import service_in_process  # noqa: E402

log = logging.getLogger("bench_pipeline")
PG_ADMIN = os.environ.get("SHIPYARD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
NS = "bench-pipeline"
TARGET_MS = 50.0


def chain(steps: int) -> dict[str, Any]:
    tasks = [
        {"name": f"s{i}", "template": "noop", **({"dependencies": [f"s{i - 1}"]} if i else {})}
        for i in range(steps)
    ]
    return _wf("chain", tasks)


def fan_out(steps: int) -> dict[str, Any]:
    return _wf("fan", [{"name": f"s{i}", "template": "noop"} for i in range(steps)])


def _wf(name: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": f"{name}-"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {"name": "main", "dag": {"tasks": tasks}},
                {"name": "noop", "container": {"image": "busybox", "command": ["true"]}},
            ],
        },
    }


async def raw_spawn_samples(runtime: LocalRuntime, samples: int) -> list[tuple[float, float]]:
    """(wall ms of apply + wait, that minus the process's own lifetime) per sample."""
    out = []
    for i in range(samples):
        name = f"raw-{uuid.uuid4().hex[:8]}-{i}"
        t0 = time.perf_counter()
        await runtime.apply({"namespace": NS, "name": name, "command": ["true"]})
        st = await runtime.wait(NS, name, timeout=30)
        wall = (time.perf_counter() - t0) * 1000
        own = (
            (st.finish_time - st.start_time).total_seconds() * 1000
            if st.start_time and st.finish_time
            else 0.0
        )
        out.append((wall, wall - own))
        await runtime.delete(NS, name)
    return out


async def run_once(
    client: httpx.AsyncClient, runtime: LocalRuntime, body: dict[str, Any], parallel: bool
) -> tuple[float, float, int]:
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows"
    t0 = time.perf_counter()
    r = await client.post(path, json=body)
    r.raise_for_status()
    name = r.json()["metadata"]["name"]
    deadline = time.monotonic() + 600
    while True:
        wf = (await client.get(f"{path}/{name}")).json()
        phase = (wf.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed", "Error"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} still {phase}")
        await asyncio.sleep(0.1)  # coarse: a poll costs the service CPU (<0.5 ms/step error)
    wall = time.perf_counter() - t0
    if phase != "Succeeded":
        raise RuntimeError(f"{name} ended {phase}: {wf['status'].get('message')}")
    pods = [n for n in wf["status"]["nodes"].values() if n["type"] == "Pod"]
    durations = []
    for node in pods:
        st = await runtime.status(NS, workload_name(wf, node))
        if st.start_time and st.finish_time:
            durations.append((st.finish_time - st.start_time).total_seconds())
    own = max(durations) if parallel else sum(durations)
    await client.delete(f"{path}/{name}")
    return wall, own, len(pods)


def report(
    out: Any,
    steps: int,
    repeat: int,
    spawn: float,
    spawn_overhead: float,
    rows: list[tuple[str, float, float]],
    samples: int,
) -> bool:
    """Print the table the issue asks for; True if a workflow missed the target."""
    out.write(
        f"pipeline orchestration overhead: {steps} trivial steps (`true`) per workflow, "
        f"median of {repeat} runs\n"
    )
    out.write(
        f"runtime raw spawn cost, measured in this run beside each workflow "
        f"(runtime.apply + runtime.wait of the same step, median of {samples}): "
        f"{spawn:.1f} ms wall, {spawn_overhead:.1f} ms beyond the process's own lifetime\n"
    )
    out.write(
        "overhead/step = (run wall time - the steps' own process time) / steps  "
        "(own time: the sum for the chain, the longest step for the fan-out)\n"
    )
    out.write(
        f"added/step    = overhead/step - the raw spawn cost above "
        f"({spawn_overhead:.1f} ms); target: added < {TARGET_MS:.0f} ms\n"
    )
    out.write(
        f"{'workflow':<9} {'steps':>5} {'wall s':>7} {'overhead ms/step':>17} "
        f"{'x raw spawn':>12} {'added ms/step':>14}  verdict\n"
    )
    failed = False
    for label, wall, overhead in rows:
        added = overhead - spawn_overhead
        verdict = "PASS" if added < TARGET_MS else "FAIL"
        failed |= verdict == "FAIL"
        out.write(
            f"{label:<9} {steps:>5} {wall:>7.2f} {overhead:>17.1f} "
            f"{overhead / spawn_overhead:>12.2f} {added:>14.1f}  {verdict}\n"
        )
    return failed


async def main(steps: int, repeat: int) -> bool:
    db = f"bench_pipeline_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{db}"')
    state = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{db}"
    try:
        async with service_in_process(
            create_app,
            Settings,
            database_url=url,
            nats_url=NATS_URL,
            state_dir=state,
            namespace=NS,
            log_level="WARNING",
            workflow_workers=2,
        ) as service:
            service.minter.signer.ttl_seconds = 3600  # the client's headers last the whole run
            runtime = LocalRuntime(state)
            spawns: list[tuple[float, float]] = []
            async with httpx.AsyncClient(
                base_url=service.url, timeout=60, headers=service.minter.headers(namespace=NS)
            ) as client:
                rows = []
                for label, body, parallel in (
                    ("chain", chain(steps), False),
                    ("fan-out", fan_out(steps), True),
                ):
                    overheads, walls = [], []
                    for _ in range(repeat):
                        # Spawn samples beside every run, so both see the same machine load.
                        spawns += await raw_spawn_samples(runtime, 8)
                        wall, own, pods = await run_once(client, runtime, body, parallel)
                        overheads.append((wall - own) / pods * 1000)
                        walls.append(wall)
                    rows.append((label, statistics.median(walls), statistics.median(overheads)))
        spawn = statistics.median(w for w, _ in spawns)
        spawn_overhead = statistics.median(o for _, o in spawns)
        failed = report(sys.stdout, steps, repeat, spawn, spawn_overhead, rows, len(spawns))
    finally:
        await LocalRuntime(state).shutdown()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
    return failed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.exit(1 if asyncio.run(main(args.steps, args.repeat)) else 0)
