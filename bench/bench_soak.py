"""Soak (issue 17 item 4): a steady mix through the gateway, every platform process sampled.

Starts the whole platform as ``shipyard up`` does (``bench_load.running_platform``: a fresh
Postgres database, a private nats-server, the embedded SeaweedFS, single-user mode, the
gateway's settings as shipped) and runs, for ``--soak-minutes`` (30 in ``make bench``):

- a two-step workflow (``echo`` then ``echo``, sandboxed steps) every ``--workflow-every``
  seconds (20), deleted once it has finished;
- a small Katib experiment (random search, 2 trials of a Python one-liner that prints its
  loss) every ``--experiment-every`` seconds (180), deleted once it has succeeded;
- watches held open on workflows, experiments, trials and ConfigMaps, resumed from their
  last resourceVersion whenever the server ends one (as client-go's reflector does);
- API reads, one every ``--read-every`` seconds (1), round-robin over lists and gets of
  every service and the gateway's discovery.

Every ``--sample-seconds`` (30) it samples the RSS and open file descriptors of every
platform process (the gateway, the four services, the object store and NATS, each with the
rest of its process group) and of the workloads' supervisors (each in a session of its own,
with their sandboxed workload), and prints a progress line. At the end, a table per
process: start, end, max, and growth (the median of the last quarter of the samples minus
the median of the first quarter).

Bounds (PASS/FAIL; the exit status is 1 on a FAIL): for each long-lived process, RSS growth
at most 25 % of its first quarter's median (or 8 MiB, whichever is larger: NATS starts at
about 13 MiB, and a Go runtime's heap goal alone moves by more than 25 % of that) and at
most 64 MiB, and open fds growth at most 16; no workload supervisor
left once the mix has drained; zero error responses (any 5xx or 4xx, an ``ERROR`` watch
event, a watch that could not be resumed); every workflow Succeeded and every experiment
Succeeded; the workflow watch saw each workflow created and deleted.

    .venv/bin/python bench/bench_soak.py [--soak-minutes 30] [--samples-csv FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.specs

import httpx  # noqa: E402
import psutil  # noqa: E402
from bench_load import (  # noqa: E402
    MIB,
    NS,
    ProcSample,
    WatchStream,
    log,
    running_platform,
    sample_process,
)

from shipyard.up import Platform  # noqa: E402
from tests.specs import python_experiment  # noqa: E402

ARGO = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows"
KATIB = f"/apis/kubeflow.org/v1beta1/namespaces/{NS}"
FINISHED = ("Succeeded", "Failed", "Error")
RSS_GROWTH_FRACTION = 0.25
RSS_GROWTH_FLOOR = 8 * MIB  # below this, growth passes whatever its share (small Go processes)
RSS_GROWTH_BYTES = 64 * MIB
FDS_GROWTH = 16
SUPERVISORS = "workload supervisors"
READS = (
    ARGO,
    f"{KATIB}/experiments",
    f"{KATIB}/trials",
    f"/api/v1/namespaces/{NS}/configmaps",
    f"/api/v1/namespaces/{NS}/serviceaccounts",
    f"/api/v1/namespaces/{NS}/persistentvolumeclaims",
    f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks",
    f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices",
    f"/apis/v2beta1/runs?namespace={NS}",
    "/apis/kubeflow.org/v1/profiles",
    "/openapi/pipeline.json",
)


def two_step_workflow(name: str) -> dict[str, Any]:
    def echo(step: str) -> dict[str, Any]:
        return {"name": step, "container": {"image": "alpine", "command": ["echo", step]}}

    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "labels": {"bench": "soak"}},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {
                    "name": "main",
                    "steps": [
                        [{"name": "first", "template": "first"}],
                        [{"name": "second", "template": "second"}],
                    ],
                },
                echo("first"),
                echo("second"),
            ],
        },
    }


def fast_experiment(name: str) -> dict[str, Any]:
    """Random search over one parameter; each trial prints its loss at once."""
    code = "import sys; print(f'loss={float(sys.argv[1]):.5f}')"
    return python_experiment(
        name, code, labels={"bench": "soak"}, maxTrialCount=2, parallelTrialCount=2
    )


def experiment_outcome(obj: dict[str, Any]) -> str | None:
    """ "Succeeded" or "Failed: reason" once the experiment has finished, None before."""
    for c in reversed((obj.get("status") or {}).get("conditions") or []):
        if c.get("status") == "True" and c.get("type") in ("Succeeded", "Failed"):
            return str(c["type"]) if c["type"] == "Succeeded" else f"Failed: {c.get('reason')}"
    return None


def growth(values: list[float]) -> float:
    """Median of the last quarter of the samples minus the median of the first quarter."""
    if not values:
        return 0.0
    q = max(1, len(values) // 4)
    return statistics.median(values[-q:]) - statistics.median(values[:q])


def supervisors_of(state_dir: Path) -> list[psutil.Process]:
    """The runtime's workload supervisors (``supervisor.py <workload dir>`` under the state)."""
    found = []
    needle = str(state_dir)
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(a.endswith("supervisor.py") for a in cmd) and any(needle in a for a in cmd):
            found.append(p)
    return found


def sample_supervisors(state_dir: Path) -> tuple[int, ProcSample]:
    """How many supervisors are alive, and the RSS and fds of them and their workloads."""
    sups = supervisors_of(state_dir)
    rss = fds = members = 0
    for sup in sups:
        with contextlib.suppress(psutil.Error):
            for p in [sup, *sup.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
                    fds += p.num_fds()
                    members += 1
    return len(sups), ProcSample(rss, fds, members)


@dataclass
class Soak:
    """The mix's running tallies."""

    api: httpx.AsyncClient
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    workflows_created: list[str] = field(default_factory=list)
    workflows_ok: int = 0
    workflows_failed: list[str] = field(default_factory=list)
    workflow_seconds: list[float] = field(default_factory=list)
    experiments_created: int = 0
    experiments_ok: int = 0
    experiments_failed: list[str] = field(default_factory=list)
    experiment_seconds: list[float] = field(default_factory=list)
    reads: int = 0
    running: set[str] = field(default_factory=set)  # workflows and experiments in flight

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """One request; anything but a 2xx is recorded as an error (None on no answer)."""
        self.requests += 1
        try:
            r = await self.api.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.errors.append(f"{method} {path}: {exc!r}")
            return None
        if not 200 <= r.status_code < 300:
            self.errors.append(f"{method} {path}: HTTP {r.status_code} {r.text[:300]}")
        return r

    async def run_workflow(self, name: str, give_up_after: float) -> None:
        self.running.add(name)
        try:
            t0 = time.monotonic()
            r = await self.call("POST", ARGO, json=two_step_workflow(name))
            if r is None or r.status_code != 201:
                self.workflows_failed.append(f"{name}: not created")
                return
            self.workflows_created.append(name)
            phase = ""
            while time.monotonic() - t0 < give_up_after:
                await asyncio.sleep(2)
                got = await self.call("GET", f"{ARGO}/{name}")
                if got is not None and got.status_code == 200:
                    status = got.json().get("status") or {}
                    phase = status.get("phase") or ""
                    if phase in FINISHED:
                        if phase == "Succeeded":
                            self.workflows_ok += 1
                            self.workflow_seconds.append(time.monotonic() - t0)
                        else:
                            self.workflows_failed.append(f"{name}: {phase} {status.get('message')}")
                        break
            else:
                self.workflows_failed.append(
                    f"{name}: still {phase or 'pending'} after {give_up_after} s"
                )
            await self.call("DELETE", f"{ARGO}/{name}")
        finally:
            self.running.discard(name)

    async def run_experiment(self, name: str, give_up_after: float) -> None:
        self.running.add(name)
        try:
            t0 = time.monotonic()
            r = await self.call("POST", f"{KATIB}/experiments", json=fast_experiment(name))
            if r is None or r.status_code != 201:
                self.experiments_failed.append(f"{name}: not created")
                return
            self.experiments_created += 1
            outcome = None
            while time.monotonic() - t0 < give_up_after:
                await asyncio.sleep(3)
                got = await self.call("GET", f"{KATIB}/experiments/{name}")
                if got is not None and got.status_code == 200:
                    outcome = experiment_outcome(got.json())
                    if outcome:
                        break
            if outcome == "Succeeded":
                self.experiments_ok += 1
                self.experiment_seconds.append(time.monotonic() - t0)
            else:
                self.experiments_failed.append(
                    f"{name}: {outcome or f'not done in {give_up_after} s'}"
                )
            await self.call("DELETE", f"{KATIB}/experiments/{name}")
        finally:
            self.running.discard(name)


async def every(seconds: float, until: float, action: Any) -> None:
    """Call ``action(i)`` every ``seconds`` until the monotonic time ``until``."""
    start = time.monotonic()
    for i in itertools.count():
        due = start + i * seconds
        if due >= until:
            return
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        action(i)


@dataclass
class Samples:
    """Time series per process: elapsed seconds, RSS bytes and open fds."""

    t: list[float] = field(default_factory=list)
    rss: dict[str, list[float]] = field(default_factory=dict)
    fds: dict[str, list[float]] = field(default_factory=dict)
    supervisors: list[int] = field(default_factory=list)

    def add(self, elapsed: float, name: str, sample: ProcSample | None) -> None:
        if sample is not None:
            self.rss.setdefault(name, []).append(sample.rss)
            self.fds.setdefault(name, []).append(sample.fds)


def take_sample(platform: Platform, samples: Samples, elapsed: float) -> None:
    samples.t.append(elapsed)
    for child in platform.all_children:
        samples.add(elapsed, child.name, sample_process(platform, child.name))
    count, sup = sample_supervisors(platform.state_dir)
    samples.supervisors.append(count)
    samples.add(elapsed, SUPERVISORS, sup)


@dataclass
class SoakResult:
    mix: Soak
    samples: Samples
    problems: list[str]
    watched: dict[str, tuple[int, int]]  # kind -> (events, resumes)


async def soak(platform: Platform, args: argparse.Namespace) -> SoakResult:
    samples = Samples()
    problems: list[str] = []
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=60, limits=limits) as api:
        mix = Soak(api)
        watches: dict[str, WatchStream] = {}
        for label, path in (
            ("workflows", ARGO),
            ("experiments", f"{KATIB}/experiments"),
            ("trials", f"{KATIB}/trials"),
            ("configmaps", f"/api/v1/namespaces/{NS}/configmaps"),
        ):
            r = await mix.call("GET", path)
            rv = r.json()["metadata"]["resourceVersion"] if r is not None else "0"
            watches[label] = WatchStream(platform.gateway_url, path, rv)
            if not await watches[label].open():
                problems.append(f"watch on {label} did not open")
        readers = [asyncio.create_task(w.run()) for w in watches.values() if w.status == 200]
        tasks: set[asyncio.Task[None]] = set()

        def spawn(coro: Any) -> None:
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        tag = uuid.uuid4().hex[:4]
        t0 = time.monotonic()
        until = t0 + args.soak_minutes * 60
        take_sample(platform, samples, 0.0)

        def read(i: int) -> None:
            mix.reads += 1
            spawn(_discard(mix.call("GET", READS[i % len(READS)])))

        def sample(i: int) -> None:
            elapsed = time.monotonic() - t0
            if i:
                take_sample(platform, samples, elapsed)
            events = sum(len(w.rvs) for w in watches.values())
            resumes = sum(w.resumes for w in watches.values())
            rss = " ".join(
                f"{n} {v[-1] / MIB:.0f}" for n, v in samples.rss.items() if n != SUPERVISORS
            )
            log(
                f"soak {elapsed / 60:4.1f}/{args.soak_minutes:g} min: workflows "
                f"{mix.workflows_ok} ok {len(mix.workflows_failed)} failed, experiments "
                f"{mix.experiments_ok} ok {len(mix.experiments_failed)} failed, "
                f"{len(mix.running)} running, {mix.requests} requests, {events} watch events "
                f"({resumes} resumes), errors {len(mix.errors)} | RSS MiB {rss} | "
                f"supervisors {samples.supervisors[-1]}"
            )

        loops = [
            every(
                args.workflow_every,
                until,
                lambda i: spawn(mix.run_workflow(f"soak-{tag}-wf-{i}", args.workflow_timeout)),
            ),
            every(
                args.experiment_every,
                until,
                lambda i: spawn(mix.run_experiment(f"soak-{tag}-exp-{i}", args.workflow_timeout)),
            ),
            every(args.read_every, until, read),
            every(args.sample_seconds, until, sample),
        ]
        await asyncio.gather(*loops)
        log(f"soak: mix stopped; waiting for {len(tasks)} requests and runs to finish")
        if tasks:
            await asyncio.wait(tasks, timeout=args.workflow_timeout + 30)
        # Workloads end with their workflows and experiments: wait for the supervisors to go.
        for _ in range(60):
            if not supervisors_of(platform.state_dir):
                break
            await asyncio.sleep(1)
        await asyncio.sleep(3)  # the last DELETED events
        take_sample(platform, samples, time.monotonic() - t0)
        for w in watches.values():
            w.close()
        await asyncio.gather(*readers, return_exceptions=True)
    wf = watches["workflows"]
    for name in mix.workflows_created:
        seen = {t for t, n in zip(wf.types, wf.names, strict=True) if n == name}
        if not {"ADDED", "DELETED"} <= seen:
            problems.append(f"the workflow watch saw {sorted(seen)} of {name}")
    for label, w in watches.items():
        problems += [f"watch on {label}: {e}" for e in w.errors]
        if w.ended and not w.closed:
            problems.append(f"watch on {label} ended and could not be resumed")
    watched = {label: (len(w.rvs), w.resumes) for label, w in watches.items()}
    return SoakResult(mix, samples, problems, watched)


async def _discard(coro: Any) -> None:
    await coro


def report(result: SoakResult, args: argparse.Namespace) -> list[str]:
    mix, samples = result.mix, result.samples
    failures: list[str] = []
    print()
    print(
        f"== soak: {args.soak_minutes:g} min, {len(samples.t)} samples "
        f"every ~{args.sample_seconds:g} s"
    )
    wf_p50 = statistics.median(mix.workflow_seconds) if mix.workflow_seconds else float("nan")
    ex_p50 = statistics.median(mix.experiment_seconds) if mix.experiment_seconds else float("nan")
    print(
        f"workflows    {len(mix.workflows_created)} created, {mix.workflows_ok} Succeeded "
        f"(median {wf_p50:.1f} s from create), {len(mix.workflows_failed)} failed"
    )
    print(
        f"experiments  {mix.experiments_created} created, {mix.experiments_ok} Succeeded "
        f"(median {ex_p50:.1f} s), {len(mix.experiments_failed)} failed"
    )
    watched = ", ".join(f"{k} {n} events/{r} resumes" for k, (n, r) in result.watched.items())
    print(f"watches      {watched}")
    print(f"requests     {mix.requests} ({mix.reads} reads), error responses {len(mix.errors)}")
    print(
        f"bound        RSS growth <= {RSS_GROWTH_FRACTION:.0%} (or {RSS_GROWTH_FLOOR // MIB} MiB "
        f"if larger) and <= {RSS_GROWTH_BYTES // MIB} MiB, fds growth <= {FDS_GROWTH} "
        "(growth: median of the last quarter of the samples minus the first quarter's)"
    )
    head = (
        f"{'process':<22}{'RSS MiB start':>14}{'end':>7}{'max':>7}{'growth':>14}"
        f"{'fds start':>11}{'end':>6}{'max':>6}{'growth':>8}  verdict"
    )
    print(head)
    for name, rss in samples.rss.items():
        fds = samples.fds[name]
        g_rss, g_fds = growth(rss), growth(fds)
        first_q = statistics.median(rss[: max(1, len(rss) // 4)])
        pct = g_rss / first_q if first_q else 0.0
        if name == SUPERVISORS:
            verdict = "(transient; see below)"
        else:
            allowed = min(max(RSS_GROWTH_FRACTION * first_q, RSS_GROWTH_FLOOR), RSS_GROWTH_BYTES)
            ok = g_rss <= allowed and g_fds <= FDS_GROWTH
            verdict = "PASS" if ok else "FAIL"
            if not ok:
                failures.append(
                    f"{name}: RSS growth {g_rss / MIB:+.1f} MiB ({pct:+.0%}), fds {g_fds:+.0f}"
                )
        print(
            f"{name:<22}{rss[0] / MIB:>14.1f}{rss[-1] / MIB:>7.1f}{max(rss) / MIB:>7.1f}"
            f"{g_rss / MIB:>+8.1f} {pct:>+5.0%}{fds[0]:>11.0f}{fds[-1]:>6.0f}{max(fds):>6.0f}"
            f"{g_fds:>+8.0f}  {verdict}"
        )
    sup = samples.supervisors
    print(
        f"{SUPERVISORS}: at most {max(sup)} alive at a sample, {sup[-1]} left after the mix "
        "drained (bound: 0)"
    )
    if sup[-1]:
        failures.append(f"{sup[-1]} workload supervisors left after the mix drained")
    if mix.errors:
        failures.append(f"{len(mix.errors)} error responses; first: {mix.errors[0]}")
    if mix.workflows_failed:
        failures.append(f"{len(mix.workflows_failed)} workflows failed: {mix.workflows_failed[0]}")
    if mix.experiments_failed:
        failures.append(
            f"{len(mix.experiments_failed)} experiments failed: {mix.experiments_failed[0]}"
        )
    failures += result.problems
    return failures


def write_csv(path: Path, samples: Samples) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        names = list(samples.rss)
        out.writerow(["seconds", *(f"{n} rss MiB" for n in names), *(f"{n} fds" for n in names)])
        for i, t in enumerate(samples.t):
            row: list[Any] = [f"{t:.0f}"]
            row += [
                f"{samples.rss[n][i] / MIB:.1f}" if i < len(samples.rss[n]) else "" for n in names
            ]
            row += [f"{samples.fds[n][i]:.0f}" if i < len(samples.fds[n]) else "" for n in names]
            out.writerow(row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak-minutes", type=float, default=30.0)
    parser.add_argument("--sample-seconds", type=float, default=30.0)
    parser.add_argument("--workflow-every", type=float, default=20.0)
    parser.add_argument("--experiment-every", type=float, default=180.0)
    parser.add_argument("--read-every", type=float, default=1.0)
    parser.add_argument("--workflow-timeout", type=float, default=300.0)
    parser.add_argument("--samples-csv", type=Path, help="also write the samples here")
    parser.add_argument("--logs-to", type=Path, help="keep the platform's logs here")
    args = parser.parse_args()
    started = time.monotonic()
    with running_platform("soak", logs_to=args.logs_to) as platform:
        result = asyncio.run(soak(platform, args))
    failures = report(result, args)
    if args.samples_csv:
        write_csv(args.samples_csv, result.samples)
    print()
    print(
        f"soak bench took {time.monotonic() - started:.0f} s; machine: {os.cpu_count()} cores, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    for f in failures[:20]:
        print(f"FAIL: {f}")
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more")
    print("FAIL" if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
