"""Overhead of the local runtime per trivial job, against a bare subprocess spawn.

Runs N jobs of ``true`` through LocalRuntime (apply + wait, sandbox and supervisor included)
and N plain ``asyncio.create_subprocess_exec("true")`` spawns, then reports the medians, the
added overhead and PASS/FAIL against the 50 ms target.

    .venv/bin/python bench/bench_runtime.py [--jobs 100] [--target-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.common.runtime import LocalRuntime, Phase  # noqa: E402

log = logging.getLogger("bench_runtime")


async def bench_plain(n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
        times.append(time.perf_counter() - t0)
    return times


async def bench_runtime(n: int, state_dir: Path) -> list[float]:
    runtime = LocalRuntime(state_dir)
    # Warm-up: the first apply also probes bwrap once; not part of the per-job cost.
    await runtime.apply({"namespace": "bench", "name": "warmup", "command": ["true"]})
    await runtime.wait("bench", "warmup", timeout=30)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await runtime.apply({"namespace": "bench", "name": f"job-{i}", "command": ["true"]})
        status = await runtime.wait("bench", f"job-{i}", timeout=30)
        times.append(time.perf_counter() - t0)
        if status.phase != Phase.SUCCEEDED:
            raise RuntimeError(f"job-{i} did not succeed: {status}")
    await runtime.close()
    return times


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--target-ms", type=float, default=50.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as tmp:
        plain = await bench_plain(args.jobs)
        local = await bench_runtime(args.jobs, Path(tmp))
    plain_ms = statistics.median(plain) * 1000
    local_ms = statistics.median(local) * 1000
    overhead = local_ms - plain_ms
    verdict = "PASS" if overhead < args.target_ms else "FAIL"
    p90 = statistics.quantiles(local, n=10)[-1] * 1000
    for line in (
        f"jobs per variant:           {args.jobs}",
        f"plain subprocess median:    {plain_ms:8.2f} ms",
        f"LocalRuntime median:        {local_ms:8.2f} ms   (p90 {p90:.2f} ms)",
        f"added overhead:             {overhead:8.2f} ms",
        f"ratio runtime/plain:        {local_ms / plain_ms:8.1f}x",
        f"{verdict}: overhead {'<' if verdict == 'PASS' else '>='} {args.target_ms:g} ms target",
    ):
        log.info(line)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    sys.exit(asyncio.run(main()))
