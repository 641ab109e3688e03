"""Cost of the local runtime's sandbox per trivial job, beside a raw spawn and today's sandbox.

Four variants run N jobs of ``true`` each, interleaved round by round so that all of them see
the same machine load:

* **raw spawn**: a bare ``asyncio.create_subprocess_exec("true")``;
* **baseline**: the local runtime as it was before the hostile-tenant sandbox (git commit
  ``BASELINE_COMMIT``: bubblewrap over a read-only host, shared network, the service's uid),
  extracted from git history into a temporary directory and run from there;
* **before the seam**: the local runtime just before the runtime seam stopped leaking the host
  (git commit ``SEAM_COMMIT``: issue 12 added ``files``, ``read_file`` and the registry);
* **sandboxed**: today's LocalRuntime (a uid per namespace, no capabilities, seccomp, a
  minimal filesystem, its own network namespace with the API forwarded by the supervisor).

Each job is ``runtime.apply`` + ``runtime.wait``. The added cost of a variant is its median
minus the raw spawn's. Targets: the sandbox's added cost stays within 10 ms of the baseline's
(issue 10), and today's is not worse than before the seam, within ``--seam-target-ms`` of
noise (issue 12). PASS/FAIL; the exit status is 1 on a FAIL.

    .venv/bin/python bench/bench_runtime.py [--jobs 100] [--target-ms 10] [--seam-target-ms 2]
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
SEAM_COMMIT = "3142902"
API_URL = "http://127.0.0.1:9"  # the sandbox forwards the API; nothing needs to answer here


def load_runtime_of(commit: str, into: Path) -> Any:
    """The LocalRuntime class of ``commit``, imported from a copy of its package."""
    name = f"runtime_{commit}"
    package = into / name
    package.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "services/common/runtime"],
        capture_output=True,
        check=True,
    )
    extracted = into / f"extract-{commit}"
    extracted.mkdir()
    subprocess.run(["tar", "-x", "-C", str(extracted)], input=archive.stdout, check=True)
    source = extracted / "services" / "common" / "runtime"
    for path in source.iterdir():
        if path.suffix == ".py" and path.name not in ("__init__.py", "config.py"):
            path.rename(package / path.name)
    (package / "__init__.py").write_text("")
    if str(into) not in sys.path:
        sys.path.insert(0, str(into))
    return importlib.import_module(f"{name}.local").LocalRuntime


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
    parser.add_argument("--seam-target-ms", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as tmp:
        base = Path(tmp)
        code = base / "code"
        code.mkdir()
        baseline = load_runtime_of(BASELINE_COMMIT, code)(base / "baseline", workload_env=env)

        def token(namespace: str, binding: str) -> str:
            return "token"

        before_seam = load_runtime_of(SEAM_COMMIT, code)(
            base / "seam", workload_env=env, workload_tokens=token
        )
        sandboxed = LocalRuntime(base / "sandboxed", workload_env=env, workload_tokens=token)
        runtimes = (baseline, before_seam, sandboxed)
        for runtime in runtimes:  # the first apply probes bubblewrap once
            await one_job(runtime, "warmup")
        raw: list[float] = []
        old: list[float] = []
        seam: list[float] = []
        new: list[float] = []
        for i in range(args.jobs):
            raw.append(await one_raw())
            old.append(await one_job(baseline, f"job-{i}"))
            # Alternate which goes first: the one after a fresh spawn may be favoured.
            pair = [(seam, before_seam), (new, sandboxed)]
            for times, runtime in pair if i % 2 else pair[::-1]:
                times.append(await one_job(runtime, f"job-{i}"))
            if (i + 1) % 20 == 0:
                log.info("  %d/%d rounds", i + 1, args.jobs)
        for runtime in runtimes:
            await runtime.close()
    raw_ms, old_ms, seam_ms, new_ms = (statistics.median(x) * 1000 for x in (raw, old, seam, new))
    old_added, seam_added, new_added = old_ms - raw_ms, seam_ms - raw_ms, new_ms - raw_ms
    delta = new_added - old_added
    seam_delta = new_added - seam_added
    verdict = "PASS" if delta <= args.target_ms else "FAIL"
    seam_verdict = "PASS" if seam_delta <= args.seam_target_ms else "FAIL"
    p90 = statistics.quantiles(new, n=10)[-1] * 1000
    for line in (
        f"trivial jobs (`true`) per variant: {args.jobs}, interleaved",
        f"{'variant':<34}{'median':>10}{'added':>10}{'ratio':>8}",
        f"{'raw spawn (create_subprocess_exec)':<34}{raw_ms:>8.2f}ms{'':>10}{1.0:>7.1f}x",
        f"{'baseline sandbox (' + BASELINE_COMMIT + ')':<34}{old_ms:>8.2f}ms"
        f"{old_added:>8.2f}ms{old_ms / raw_ms:>7.1f}x",
        f"{'before the seam (' + SEAM_COMMIT + ')':<34}{seam_ms:>8.2f}ms"
        f"{seam_added:>8.2f}ms{seam_ms / raw_ms:>7.1f}x",
        f"{'hostile-tenant sandbox (today)':<34}{new_ms:>8.2f}ms"
        f"{new_added:>8.2f}ms{new_ms / raw_ms:>7.1f}x   (p90 {p90:.2f} ms)",
        f"sandbox cost beyond the baseline: {delta:+.2f} ms per job "
        f"(ratio today/baseline {new_ms / old_ms:.2f}x)",
        f"{verdict}: {'within' if verdict == 'PASS' else 'more than'} "
        f"{args.target_ms:g} ms of the baseline's added cost",
        f"today against before the seam: {seam_delta:+.2f} ms per job "
        f"(ratio today/before {new_ms / seam_ms:.2f}x)",
        f"{seam_verdict}: {'within' if seam_verdict == 'PASS' else 'more than'} "
        f"{args.seam_target_ms:g} ms of the cost before the seam",
    ):
        log.info(line)
    return 0 if verdict == seam_verdict == "PASS" else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    sys.exit(asyncio.run(main()))
