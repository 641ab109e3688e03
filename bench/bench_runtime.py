"""Cost of the local runtime's sandbox per trivial job, beside a raw spawn and today's sandbox.

Three variants run N jobs of ``true`` each, interleaved round by round so that all three see
the same machine load:

* **raw spawn**: a bare ``asyncio.create_subprocess_exec("true")``;
* **baseline**: the local runtime as it was before the hostile-tenant sandbox (git commit
  ``BASELINE_COMMIT``: bubblewrap over a read-only host, shared network, the service's uid),
  extracted from git history into a temporary directory and run from there;
* **sandboxed**: today's LocalRuntime (a uid per namespace, no capabilities, seccomp, a
  minimal filesystem, its own network namespace with the API forwarded by the supervisor).

Each job is ``runtime.apply`` + ``runtime.wait``. The added cost of a variant is its median
minus the raw spawn's. Target (issue 10): the sandbox's added cost stays within 10 ms of the
baseline's. PASS/FAIL; the exit status is 1 on a FAIL.

    .venv/bin/python bench/bench_runtime.py [--jobs 100] [--target-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.runtime import LocalRuntime, Phase  # noqa: E402

log = logging.getLogger("bench_runtime")
BASELINE_COMMIT = "c8a7a00"
API_URL = "http://127.0.0.1:9"  # the sandbox forwards the API; nothing needs to answer here


def load_baseline(into: Path) -> Any:
    """The LocalRuntime class of ``BASELINE_COMMIT``, imported from a copy of its package."""
    package = into / "baseline_runtime"
    package.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", BASELINE_COMMIT, "services/common/runtime"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    source = into / "services" / "common" / "runtime"
    for path in source.iterdir():
        if path.suffix == ".py" and path.name not in ("__init__.py", "config.py"):
            path.rename(package / path.name)
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(into))
    return importlib.import_module("baseline_runtime.local").LocalRuntime


async def one_raw() -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    return time.perf_counter() - t0


async def one_job(runtime: Any, name: str) -> float:
    t0 = time.perf_counter()
    await runtime.apply({"namespace": "bench", "name": name, "command": ["true"]})
    status = await runtime.wait("bench", name, timeout=30)
    elapsed = time.perf_counter() - t0
    if status.phase != Phase.SUCCEEDED and str(status.phase) != "Succeeded":
        raise RuntimeError(f"{name} did not succeed: {status}")
    return elapsed


def env(namespace: str) -> dict[str, str]:
    return {"SHIPYARD_URL": API_URL, "SHIPYARD_NAMESPACE": namespace}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--target-ms", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as tmp:
        base = Path(tmp)
        baseline_cls = load_baseline(base / "code")
        baseline = baseline_cls(base / "baseline", workload_env=env)
        sandboxed = LocalRuntime(
            base / "sandboxed", workload_env=env, workload_tokens=lambda ns, b: "token"
        )
        for runtime in (baseline, sandboxed):  # the first apply probes bubblewrap once
            await one_job(runtime, "warmup")
        raw: list[float] = []
        old: list[float] = []
        new: list[float] = []
        for i in range(args.jobs):
            raw.append(await one_raw())
            old.append(await one_job(baseline, f"job-{i}"))
            new.append(await one_job(sandboxed, f"job-{i}"))
            if (i + 1) % 20 == 0:
                log.info("  %d/%d rounds", i + 1, args.jobs)
        await baseline.close()
        await sandboxed.close()
    raw_ms, old_ms, new_ms = (statistics.median(x) * 1000 for x in (raw, old, new))
    old_added, new_added = old_ms - raw_ms, new_ms - raw_ms
    delta = new_added - old_added
    verdict = "PASS" if delta <= args.target_ms else "FAIL"
    p90 = statistics.quantiles(new, n=10)[-1] * 1000
    for line in (
        f"trivial jobs (`true`) per variant: {args.jobs}, interleaved",
        f"{'variant':<34}{'median':>10}{'added':>10}{'ratio':>8}",
        f"{'raw spawn (create_subprocess_exec)':<34}{raw_ms:>8.2f}ms{'':>10}{1.0:>7.1f}x",
        f"{'baseline sandbox (' + BASELINE_COMMIT + ')':<34}{old_ms:>8.2f}ms"
        f"{old_added:>8.2f}ms{old_ms / raw_ms:>7.1f}x",
        f"{'hostile-tenant sandbox (today)':<34}{new_ms:>8.2f}ms"
        f"{new_added:>8.2f}ms{new_ms / raw_ms:>7.1f}x   (p90 {p90:.2f} ms)",
        f"sandbox cost beyond the baseline: {delta:+.2f} ms per job "
        f"(ratio today/baseline {new_ms / old_ms:.2f}x)",
        f"{verdict}: {'within' if verdict == 'PASS' else 'more than'} "
        f"{args.target_ms:g} ms of the baseline's added cost",
    ):
        log.info(line)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    sys.exit(asyncio.run(main()))
