"""Load through the gateway (issue 17 item 4): 1,000 watches under writes, 10,000 objects paged.

Starts the whole platform as ``shipyard up`` does (``shipyard.up.Platform``: the gateway and
the four services as child processes, single-user mode, a fresh Postgres database on
``SHIPYARD_TEST_PG_DSN``'s server, a private nats-server and the embedded SeaweedFS), with
the gateway's per-user rate limit off (``SHIPYARD_RATE_LIMIT_PER_SECOND=0``: one bench
client is one user, and the limit's 429s would measure the limiter, not the platform). Then,
every request through the gateway:

1. **Watches under load.** ``--watches`` (1,000) ``?watch=1`` streams on one kind
   (``--kind``, default ServiceAccounts, served by the serving service), each opened from
   the resourceVersion of a list so no stream starts with a replay, and resumed from its
   last resourceVersion whenever the server ends it (as client-go's reflector does). Writes
   run open-loop for ``--write-seconds`` at each rate of ``--write-rates`` (1 and 5 per
   second; a round with fresh watches per rate): one in three creates an object, the
   others merge-patch a label of an existing one; a first round runs the first rate's
   writes with no watch open, for comparison. Reported per round: the writes' request
   latency p50/p99; the delivery latency p50/p99 (the write's response received -> the
   event with its resourceVersion read from a watch, over every watch and write); events
   lost (a write some watch never saw within ``--drain-seconds``), repeated or out of
   order; streams the server ended; the CPU the gateway and the service spent with the
   watches open and no writes; the RSS of every platform process before the watches,
   with them open, after the writes and after they closed.
2. **Paging.** ``--objects`` (10,000) ConfigMaps created ``--create-concurrency`` at a time,
   then the namespace's whole list read with ``limit`` + ``continue`` at each of
   ``--page-sizes``, ``--list-repeat`` times: the time to create them, the time per full
   listing (median), each page's latency p50/p99, and every object seen exactly once.

Targets (PASS/FAIL; the exit status is 1 on a FAIL): every watch opens (200) and no write,
list or watch answers an error (no 5xx, no 4xx, no ``ERROR`` event); no event is lost,
repeated or out of order; every object is listed exactly once. Latencies and memory are
reported, not judged: this machine (2 cores, shared) sets no meaningful absolute target.

    .venv/bin/python bench/bench_load.py [--watches 1000] [--write-rates 1,5] [--quick]

``bench/bench_soak.py`` reuses the platform and sampling helpers below.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402

from shipyard.up import Platform  # noqa: E402

PG_ADMIN = os.environ.get("SHIPYARD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
NS = "kubeflow-user-example-com"  # single-user mode's namespace
MIB = 1024 * 1024
KINDS = {
    # plural: (path prefix, the service that serves it)
    "serviceaccounts": ("/api/v1", "serving"),
    "configmaps": ("/api/v1", "automl"),
    "secrets": ("/api/v1", "serving"),
    "persistentvolumeclaims": ("/api/v1", "notebook"),
}


# --------------------------------------------------------------------------- small helpers


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks; NaN if
    there are no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def fmt_ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.1f} ms"


def log(line: str) -> None:
    """A progress line with the wall-clock time (the bench runs for a long time)."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def kind_path(plural: str) -> str:
    prefix, _ = KINDS[plural]
    return f"{prefix}/namespaces/{NS}/{plural}"


def object_body(plural: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    kind = {
        "serviceaccounts": "ServiceAccount",
        "configmaps": "ConfigMap",
        "secrets": "Secret",
        "persistentvolumeclaims": "PersistentVolumeClaim",
    }[plural]
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels or {"bench": "load"}},
    }
    if plural == "configmaps":
        body["data"] = {"key": name}
    elif plural == "secrets":
        body["stringData"] = {"key": name}
    elif plural == "persistentvolumeclaims":
        body["spec"] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Mi"}},
        }
    return body


# --------------------------------------------------------------------- the platform itself


class _Terminated(Exception):
    """SIGTERM, raised in the main thread so every ``finally`` below runs."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(signal.Signals(signum).name)


def processes_of(state_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line or environment names ``state_dir``: the platform's
    children and the workloads' supervisors (each in a session of its own)."""
    found = []
    needle = str(state_dir)
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            if needle in cmd or p.environ().get("SHIPYARD_STATE_DIR") == needle:
                found.append(p)
    return found


@contextlib.contextmanager
def running_platform(
    label: str,
    env: dict[str, str] | None = None,
    log_level: str = "INFO",
    logs_to: Path | None = None,
    **platform_args: Any,
) -> Iterator[Platform]:
    """The whole platform on a fresh database, a private NATS and the embedded SeaweedFS.

    Whatever happens (an exception, Ctrl-C, SIGTERM), the platform is stopped, its
    workloads too, the database dropped and the state directory removed (its ``logs``
    copied to ``logs_to`` first, if given); a process still running after that is killed
    by pid and named on stderr.
    """
    db = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{db}"'))
    state = Path(tempfile.mkdtemp(prefix=f"bench-{label}-")).resolve()
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{db}"
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    platform = Platform(
        state / "state",
        database_url=url,
        nats_url=None,  # a private nats-server: streams on a shared one are shared too
        ports=Platform.free_ports(),
        auth_mode="single-user",
        log_level=log_level,
        ready_timeout=120,
        **platform_args,
    )
    try:
        started = time.monotonic()
        platform.start(env=env)
        log(
            f"platform up in {time.monotonic() - started:.1f} s at {platform.gateway_url} "
            f"(database {db}, state {state})"
        )
        yield platform
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup is bounded; let it run
        try:
            platform.stop()
            asyncio.run(_stop_workloads(platform.state_dir))
        finally:
            left = processes_of(state)
            for p in left:
                sys.stderr.write(f"LEFTOVER process killed: {p.pid} {' '.join(p.cmdline())}\n")
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(left, timeout=5)
            with contextlib.suppress(Exception):
                asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            if logs_to is not None:
                import shutil

                shutil.copytree(platform.state_dir / "logs", logs_to, dirs_exist_ok=True)
            _remove_tree(state)
            signal.signal(signal.SIGTERM, previous)
            log("platform stopped, database dropped" + (" (leftovers killed)" if left else ""))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _stop_workloads(state_dir: Path) -> None:
    """Stop any workload the services left running (they outlive their service by design)."""
    from services.common.runtime import LocalRuntime

    if (state_dir / "runtime").is_dir():
        await LocalRuntime(state_dir).shutdown()


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------- process measurements


@dataclass
class ProcSample:
    rss: int  # bytes, the leader plus the rest of its process group
    fds: int
    members: int


def platform_processes(platform: Platform) -> dict[str, int]:
    """Name -> pid of every long-lived platform process (gateway, services, s3, nats)."""
    return {c.name: c.pid for c in platform.all_children if c.pid is not None}


def sample_process(platform: Platform, name: str) -> ProcSample | None:
    """RSS and open fds of a platform process and the rest of its process group."""
    child = next((c for c in platform.all_children if c.name == name), None)
    if child is None:
        return None
    rss = fds = members = 0
    for p in child.group_members():
        with contextlib.suppress(psutil.Error):
            rss += p.memory_info().rss
            fds += p.num_fds()
            members += 1
    return ProcSample(rss, fds, members) if members else None


def cpu_seconds(platform: Platform, names: Sequence[str]) -> dict[str, float]:
    out = {}
    for name in names:
        child = next((c for c in platform.all_children if c.name == name), None)
        total = 0.0
        for p in child.group_members() if child else []:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        out[name] = total
    return out


# ------------------------------------------------------------------------ watch streams


class WatchStream:
    """A watch of one kind through the gateway that resumes like client-go's reflector.

    Each stream is a ``?watch=1`` request over a plain HTTP/1.1 connection: a raw asyncio
    reader rather than httpx, because a thousand of these share two cores with the
    platform and reading chunked lines is all a watch needs. When the server ends a stream
    (a watch may end at any time), it is opened again from the last resourceVersion seen,
    and ``resumes`` counts that. Records the resourceVersion of every event and the time
    its chunk arrived; anything else (a non-200 answer, an ``ERROR`` event, a broken
    stream) goes to ``errors``.
    """

    def __init__(
        self, base_url: str, path: str, resource_version: str, open_timeout: float = 60
    ) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = path
        self.start_rv = resource_version
        self.open_timeout = open_timeout
        self.status = 0
        self.rvs: array[int] = array("q")
        self.times: array[float] = array("d")
        self.types: list[str] = []
        self.names: list[str] = []
        self.errors: list[str] = []
        self.resumes = 0
        self.ended = False  # no longer watching (closed, or could not resume)
        self._closing = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def last_rv(self) -> int:
        return self.rvs[-1] if self.rvs else 0

    @property
    def closed(self) -> bool:
        """True once ``close`` was called (an ended stream that is not closed gave up)."""
        return self._closing

    async def open(self) -> bool:
        """Connect and read the response head; False (recorded in ``errors``) unless 200."""
        rv = str(self.last_rv) if self.rvs else self.start_rv
        target = f"{self.path}?watch=1&resourceVersion={rv}"
        try:
            async with asyncio.timeout(self.open_timeout):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                self._writer.write(
                    f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    "Accept: application/json\r\n\r\n".encode()
                )
                head = await self._reader.readuntil(b"\r\n\r\n")
                self.status = int(head.split(b" ", 2)[1])
                if self.status != 200:
                    body = await self._reader.read(4096)
                    self.errors.append(f"HTTP {self.status}: {body[:300]!r}")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.status = 0
            self.errors.append(f"watch did not open: {exc!r}")
        if self.status != 200:
            self._drop()
            return False
        return True

    async def run(self, resume_attempts: int = 30) -> None:
        """Read events until ``close``; after the server ends a stream, watch again from the
        last resourceVersion, retrying a refused resume with back-off (1 s, then up to 8 s)
        ``resume_attempts`` times before giving up (``ended`` while not ``closed``)."""
        try:
            while not self._closing:
                await self._read_stream()
                self._drop()
                if self._closing:
                    break
                self.resumes += 1
                for attempt in range(resume_attempts):
                    if await self.open() or self._closing:
                        break
                    await asyncio.sleep(min(8.0, 2.0**attempt))
                else:
                    break
        finally:
            self.ended = True

    async def _read_stream(self) -> None:
        assert self._reader is not None
        reader = self._reader
        buf = b""
        try:
            while True:
                size_line = await reader.readline()
                if not size_line:
                    return
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    return
                chunk = await reader.readexactly(size + 2)
                now = time.perf_counter()
                buf += chunk[:-2]
                while (nl := buf.find(b"\n")) >= 0:
                    line, buf = buf[:nl], buf[nl + 1 :]
                    if line.strip():
                        self._event(line, now)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if not self._closing:
                self.errors.append(f"stream broke: {exc!r}")

    def _event(self, line: bytes, now: float) -> None:
        event = json.loads(line)
        if event.get("type") == "ERROR":
            self.errors.append(f"ERROR event: {event.get('object')}")
            return
        meta = event["object"]["metadata"]
        self.rvs.append(int(meta["resourceVersion"]))
        self.times.append(now)
        self.types.append(event["type"])
        self.names.append(meta["name"])

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        """Stop watching (the task running ``run`` ends)."""
        self._closing = True
        self._drop()


# ------------------------------------------------------------------ part 1: the watches


@dataclass
class Write:
    kind: str  # "create" or "update"
    sent: float
    acked: float = 0.0
    status: int = 0
    rv: int = 0
    error: str = ""


@dataclass
class WatchResult:
    watches: int
    opened: int
    open_seconds: float
    writes: list[Write]
    write_seconds: float
    delivery: list[float]  # seconds, every (watch, write) pair seen
    lost: int
    repeated: int
    unordered: int
    stream_errors: list[str]
    resumes: int  # streams the server ended, resumed from their last resourceVersion
    idle_cpu: dict[str, float]  # percent of one core, watches open and no writes
    idle_seconds: float
    rss: dict[str, dict[str, ProcSample | None]]  # moment -> process -> sample
    drained_seconds: float

    @property
    def failed_writes(self) -> list[Write]:
        return [w for w in self.writes if not 200 <= w.status < 300]


def snapshot(platform: Platform) -> dict[str, ProcSample | None]:
    return {name: sample_process(platform, name) for name in platform_processes(platform)}


async def run_watches(
    platform: Platform,
    *,
    plural: str,
    watches: int,
    write_rate: float,
    write_seconds: float,
    drain_seconds: float,
    idle_seconds: float,
    seed_objects: int = 100,
    prefix: str = "load",
) -> WatchResult:
    gw = platform.gateway_url
    path = kind_path(plural)
    service = KINDS[plural][1]
    rng = random.Random(17)
    rss: dict[str, dict[str, ProcSample | None]] = {"before": snapshot(platform)}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=gw, timeout=60, limits=limits) as api:
        names = [f"{prefix}-seed-{i}" for i in range(seed_objects)]
        seeded = await _create_many(api, path, plural, names, concurrency=16)
        failed = [f"HTTP {status}: {text}" for _, status, text in seeded if status != 201]
        if failed:
            raise RuntimeError(f"{len(failed)} of the objects to update not created: {failed[0]}")
        listed = await api.get(path, params={"limit": 1})
        listed.raise_for_status()
        start_rv = listed.json()["metadata"]["resourceVersion"]
        log(
            f"watches: {seed_objects} {plural} to update; "
            f"opening {watches} watches from rv {start_rv}"
        )

        streams = [WatchStream(gw, path, start_rv) for _ in range(watches)]
        gate = asyncio.Semaphore(64)

        async def open_one(s: WatchStream) -> None:
            async with gate:
                await s.open()

        t0 = time.perf_counter()
        await asyncio.gather(*(open_one(s) for s in streams))
        open_seconds = time.perf_counter() - t0
        live = [s for s in streams if s.status == 200]
        readers = [asyncio.create_task(s.run()) for s in live]
        log(f"watches: {len(live)}/{watches} open in {open_seconds:.1f} s")
        try:
            # Idle: what a thousand open watches cost with nothing happening.
            await asyncio.sleep(2)
            cpu0 = cpu_seconds(platform, ["gateway", service])
            t_idle = time.perf_counter()
            await asyncio.sleep(idle_seconds if watches else 1)
            cpu1 = cpu_seconds(platform, ["gateway", service])
            idle_elapsed = time.perf_counter() - t_idle
            idle_cpu = {n: (cpu1[n] - cpu0[n]) / idle_elapsed * 100 for n in cpu0}
            rss["watches open"] = snapshot(platform)
            log(
                "watches: idle for "
                f"{idle_elapsed:.0f} s: "
                + ", ".join(f"{n} {v:.0f}% of a core" for n, v in idle_cpu.items())
            )

            writes = await _write_load(
                api, path, plural, names, rng, write_rate, write_seconds, prefix
            )
            write_elapsed = writes[-1].acked - writes[0].sent if writes else 0.0
            acked = [w for w in writes if w.rv]
            last = max((w.rv for w in acked), default=0)
            t_drain = time.perf_counter()
            deadline = t_drain + drain_seconds
            next_note = t_drain + 10
            while time.perf_counter() < deadline:
                behind = [s for s in live if s.last_rv < last and not s.ended]
                if not behind:
                    break
                if time.perf_counter() > next_note:
                    next_note += 10
                    log(f"watches: {len(behind)} still behind rv {last}")
                await asyncio.sleep(0.2)
            drained = time.perf_counter() - t_drain
            rss["after writes"] = snapshot(platform)
        finally:
            for s in live:
                s.close()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    await asyncio.sleep(3)  # let the platform notice the closed streams
    rss["watches closed"] = snapshot(platform)

    ack_at = {w.rv: w.acked for w in acked}
    wanted = set(ack_at)
    delivery: list[float] = []
    lost = repeated = unordered = 0
    for s in live:
        seen: set[int] = set()
        previous = 0
        for rv, t in zip(s.rvs, s.times, strict=True):
            if rv in seen:
                repeated += 1
            elif rv < previous:
                unordered += 1
            seen.add(rv)
            previous = max(previous, rv)
            if rv in ack_at:
                delivery.append(t - ack_at[rv])
        lost += len(wanted - seen)
    lost += len(wanted) * (watches - len(live))
    errors = [e for s in streams for e in s.errors]
    return WatchResult(
        watches=watches,
        opened=len(live),
        open_seconds=open_seconds,
        writes=writes,
        write_seconds=write_elapsed,
        delivery=delivery,
        lost=lost,
        repeated=repeated,
        unordered=unordered,
        stream_errors=errors,
        resumes=sum(s.resumes for s in live),
        idle_cpu=idle_cpu,
        idle_seconds=idle_elapsed,
        rss=rss,
        drained_seconds=drained,
    )


async def _create_many(
    api: httpx.AsyncClient, path: str, plural: str, names: Sequence[str], concurrency: int
) -> list[tuple[float, int, str]]:
    """Create the objects ``concurrency`` at a time: (latency, status, error text) each."""
    out: list[tuple[float, int, str]] = []
    # No write goes first alone: concurrent first writes of a fresh database once got a
    # wrong 409 (the resourceVersion counter's row; fixed in 5cb5600), and this keeps it so.
    it = iter(names)

    async def worker() -> None:
        for name in it:
            t0 = time.perf_counter()
            try:
                r = await api.post(path, json=object_body(plural, name))
                status, text = r.status_code, "" if r.status_code == 201 else r.text[:300]
            except httpx.HTTPError as exc:
                status, text = 0, repr(exc)
            out.append((time.perf_counter() - t0, status, text))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


async def _write_load(
    api: httpx.AsyncClient,
    path: str,
    plural: str,
    names: list[str],
    rng: random.Random,
    rate: float,
    seconds: float,
    prefix: str,
) -> list[Write]:
    """Open-loop writes: one every 1/rate s, whatever the previous one is doing."""
    total = max(1, int(rate * seconds))
    writes: list[Write] = []
    tasks = []
    existing = list(names)
    loop_start = time.perf_counter()
    log(f"watches: {total} writes at {rate:g}/s ({seconds:g} s), one in three a create")

    async def one(i: int, w: Write) -> None:
        try:
            if w.kind == "create":
                name = f"{prefix}-w{i}"
                r = await api.post(path, json=object_body(plural, name))
                if r.status_code == 201:
                    existing.append(name)
            else:
                target = rng.choice(existing)
                r = await api.patch(
                    f"{path}/{target}",
                    json={"metadata": {"labels": {"write": str(i)}}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
            w.acked, w.status = time.perf_counter(), r.status_code
            if 200 <= r.status_code < 300:
                w.rv = int(r.json()["metadata"]["resourceVersion"])
            else:
                w.error = r.text[:300]
        except httpx.HTTPError as exc:
            w.acked, w.error = time.perf_counter(), repr(exc)

    for i in range(total):
        due = loop_start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        w = Write("create" if i % 3 == 0 else "update", time.perf_counter())
        writes.append(w)
        tasks.append(asyncio.create_task(one(i, w)))
        if i and i % max(1, int(rate * 10)) == 0:
            done = sum(1 for x in writes if x.acked)
            log(f"watches: {i}/{total} writes sent, {done} answered")
    await asyncio.gather(*tasks)
    return writes


# ------------------------------------------------------------------- part 2: the paging


@dataclass
class PagingResult:
    objects: int
    created: int
    create_seconds: float
    create_latency: list[float]
    create_errors: list[str]
    listings: dict[int, list[float]] = field(default_factory=dict)  # page size -> seconds each
    pages: dict[int, list[float]] = field(default_factory=dict)  # page size -> page latencies
    exactly_once: dict[int, bool] = field(default_factory=dict)
    list_errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def run_paging(
    platform: Platform,
    *,
    objects: int,
    concurrency: int,
    page_sizes: Sequence[int],
    repeat: int,
) -> PagingResult:
    plural = "configmaps"
    path = kind_path(plural)
    names = [f"page-{i:05d}" for i in range(objects)]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=60, limits=limits) as api:
        log(f"paging: creating {objects} {plural}, {concurrency} at a time")
        t0 = time.perf_counter()
        progress = asyncio.create_task(_count_progress(api, path, objects))
        try:
            made = await _create_many(api, path, plural, names, concurrency)
        finally:
            progress.cancel()
        create_seconds = time.perf_counter() - t0
        errors = [f"HTTP {s}: {t}" for _, s, t in made if s != 201]
        result = PagingResult(
            objects=objects,
            created=sum(1 for _, s, _ in made if s == 201),
            create_seconds=create_seconds,
            create_latency=[lat for lat, s, _ in made if s == 201],
            create_errors=errors,
        )
        log(
            f"paging: {result.created} created in {create_seconds:.1f} s "
            f"({result.created / create_seconds:.0f}/s)"
        )
        expected = set(names)
        for size in page_sizes:
            for round_ in range(repeat):
                seen: list[str] = []
                t_list = time.perf_counter()
                token: str | None = None
                while True:
                    params: dict[str, str | int] = {"limit": size}
                    if token:
                        params["continue"] = token
                    t_page = time.perf_counter()
                    r = await api.get(path, params=params)
                    result.pages.setdefault(size, []).append(time.perf_counter() - t_page)
                    if r.status_code != 200:
                        result.list_errors.append(f"HTTP {r.status_code}: {r.text[:300]}")
                        break
                    page = r.json()
                    if len(page["items"]) > size:
                        result.problems.append(
                            f"limit={size}: a page of {len(page['items'])} items"
                        )
                    seen += [item["metadata"]["name"] for item in page["items"]]
                    token = page["metadata"].get("continue")
                    if not token:
                        break
                result.listings.setdefault(size, []).append(time.perf_counter() - t_list)
                once = len(seen) == len(set(seen)) and set(seen) == expected
                if not once:
                    dup = len(seen) - len(set(seen))
                    result.problems.append(
                        f"limit={size} round {round_ + 1}: {len(seen)} items, {dup} repeated, "
                        f"{len(expected - set(seen))} missing, {len(set(seen) - expected)} extra"
                    )
                result.exactly_once[size] = result.exactly_once.get(size, True) and once
            log(
                f"paging: limit={size}: full listing {statistics.median(result.listings[size]):.2f}"
                f" s (median of {repeat}), {len(result.pages[size])} pages"
            )
    return result


async def _count_progress(api: httpx.AsyncClient, path: str, total: int) -> None:
    """Log how many objects exist every 10 s while they are created."""
    while True:
        await asyncio.sleep(10)
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            n, token = 0, None
            while True:
                r = await api.get(
                    path, params={"limit": 5000, **({"continue": token} if token else {})}
                )
                page = r.json()
                n += len(page["items"])
                token = page["metadata"].get("continue")
                if not token:
                    break
            log(f"paging: {n}/{total} created")


# ------------------------------------------------------------------------------ report


def mib(sample: ProcSample | None) -> str:
    return "-" if sample is None else f"{sample.rss / MIB:.0f}"


def report_watches(r: WatchResult, plural: str, rate: float) -> list[str]:
    """Print part 1; return the failures."""
    failures = []
    lat = [w.acked - w.sent for w in r.writes if 200 <= w.status < 300]
    creates = [w.acked - w.sent for w in r.writes if w.kind == "create" and w.rv]
    updates = [w.acked - w.sent for w in r.writes if w.kind == "update" and w.rv]
    print()
    print(f"== 1. {r.watches} watches on {plural} through the gateway, writes at {rate:g}/s")
    print(f"watches open           {r.opened}/{r.watches} in {r.open_seconds:.1f} s")
    idle = ", ".join(f"{n} {v:.0f}%" for n, v in r.idle_cpu.items())
    print(f"CPU, watches idle      {idle} of one core (over {r.idle_seconds:.0f} s, no writes)")
    print(
        f"writes                 {len(r.writes)} in {r.write_seconds:.1f} s "
        f"({len(r.writes) / max(r.write_seconds, 1e-9):.1f}/s), {len(r.failed_writes)} failed"
    )
    print(
        f"write latency          p50 {fmt_ms(percentile(lat, 50))}, "
        f"p99 {fmt_ms(percentile(lat, 99))}"
    )
    print(
        f"  create / update p50  {fmt_ms(percentile(creates, 50))} / "
        f"{fmt_ms(percentile(updates, 50))}; p99 {fmt_ms(percentile(creates, 99))} / "
        f"{fmt_ms(percentile(updates, 99))}"
    )
    print(
        f"delivery latency       p50 {fmt_ms(percentile(r.delivery, 50))}, "
        f"p99 {fmt_ms(percentile(r.delivery, 99))}, "
        f"max {fmt_ms(max(r.delivery, default=float('nan')))}"
        f" ({len(r.delivery)} deliveries; response received -> event read)"
    )
    print(f"caught up              {r.drained_seconds:.1f} s after the last write was answered")
    print(f"events lost            {r.lost}  (repeated {r.repeated}, out of order {r.unordered})")
    print(
        f"stream errors          {len(r.stream_errors)}; streams ended by the server and "
        f"resumed: {r.resumes}"
    )
    moments = list(r.rss)
    print("RSS MiB                " + "".join(f"{m:>16}" for m in moments))
    for name in r.rss[moments[0]]:
        print(f"  {name:<21}" + "".join(f"{mib(r.rss[m].get(name)):>16}" for m in moments))
    if r.opened < r.watches:
        failures.append(f"{r.watches - r.opened} watches did not open")
    if r.failed_writes:
        codes = sorted({w.status for w in r.failed_writes})
        failures.append(
            f"{len(r.failed_writes)} writes failed (status {codes}): {r.failed_writes[0].error}"
        )
    if r.lost or r.repeated or r.unordered:
        failures.append(f"events lost {r.lost}, repeated {r.repeated}, out of order {r.unordered}")
    if r.stream_errors:
        failures.append(f"{len(r.stream_errors)} stream errors, first: {r.stream_errors[0]}")
    return failures


def report_paging(r: PagingResult) -> list[str]:
    failures = []
    print()
    print(f"== 2. {r.objects} ConfigMaps listed with limit + continue")
    print(
        f"create                 {r.created}/{r.objects} in {r.create_seconds:.1f} s "
        f"({r.created / max(r.create_seconds, 1e-9):.0f}/s); request p50 "
        f"{fmt_ms(percentile(r.create_latency, 50))}, "
        f"p99 {fmt_ms(percentile(r.create_latency, 99))}"
    )
    print(
        f"{'limit':>6} {'pages':>6} {'listing s (median)':>19} {'page p50':>10} "
        f"{'page p99':>10}  exactly once"
    )
    for size, times in r.listings.items():
        pages = r.pages[size]
        print(
            f"{size:>6} {len(pages) // len(times):>6} {statistics.median(times):>19.2f} "
            f"{percentile(pages, 50) * 1000:>8.1f}ms {percentile(pages, 99) * 1000:>8.1f}ms  "
            f"{'yes' if r.exactly_once.get(size) else 'NO'}"
        )
    if r.create_errors:
        failures.append(f"{len(r.create_errors)} creates failed, first: {r.create_errors[0]}")
    if r.list_errors:
        failures.append(f"{len(r.list_errors)} list requests failed, first: {r.list_errors[0]}")
    failures += r.problems
    return failures


# -------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=1000)
    parser.add_argument("--kind", choices=sorted(KINDS), default="serviceaccounts")
    parser.add_argument(
        "--write-rates",
        default="1,5",
        help="writes per second; each rate is a round of its own with fresh watches",
    )
    parser.add_argument("--write-seconds", type=float, default=60.0)
    parser.add_argument("--drain-seconds", type=float, default=120.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--create-concurrency", type=int, default=16)
    parser.add_argument("--page-sizes", default="100,500")
    parser.add_argument("--list-repeat", type=int, default=3)
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first, the first rate's writes with no watch open",
    )
    parser.add_argument("--logs-to", type=Path, help="keep the platform's logs here")
    parser.add_argument("--skip-watches", action="store_true")
    parser.add_argument("--skip-paging", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 50 watches, 10 s of writes, 500 objects"
    )
    args = parser.parse_args()
    if args.quick:
        args.watches, args.write_seconds, args.objects, args.write_rates = 50, 10.0, 500, "5"
        args.drain_seconds, args.idle_seconds, args.list_repeat = 30.0, 3.0, 1
    sizes = [int(s) for s in args.page_sizes.split(",") if s.strip()]
    rates = [float(r) for r in args.write_rates.split(",") if r.strip()]
    failures: list[str] = []
    started = time.monotonic()
    with running_platform(
        "load", env={"SHIPYARD_RATE_LIMIT_PER_SECOND": "0"}, logs_to=args.logs_to
    ) as platform:
        rounds: list[tuple[float, WatchResult]] = []
        # A first round without watches: what the same writes cost on their own.
        plan = [(rates[0], 0)] if rates and args.baseline else []
        plan += [(rate, args.watches) for rate in rates]
        for i, (rate, watches) in enumerate(plan if not args.skip_watches else []):
            result = asyncio.run(
                run_watches(
                    platform,
                    plural=args.kind,
                    watches=watches,
                    write_rate=rate,
                    write_seconds=args.write_seconds,
                    drain_seconds=args.drain_seconds,
                    idle_seconds=args.idle_seconds,
                    prefix=f"r{i}",
                )
            )
            rounds.append((rate, result))
        if not args.skip_paging:
            paging = asyncio.run(
                run_paging(
                    platform,
                    objects=args.objects,
                    concurrency=args.create_concurrency,
                    page_sizes=sizes,
                    repeat=args.list_repeat,
                )
            )
    for rate, result in rounds:
        failures += [f"{rate:g} writes/s: {f}" for f in report_watches(result, args.kind, rate)]
    if not args.skip_paging:
        failures += report_paging(paging)
    print()
    print(
        f"load bench took {time.monotonic() - started:.0f} s; machine: {os.cpu_count()} cores, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        "targets: every watch opens, no error response (5xx or 4xx) or ERROR event, no event "
        "lost/repeated/out of order, every object listed exactly once"
    )
    for f in failures:
        print(f"FAIL: {f}")
    print("FAIL" if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
