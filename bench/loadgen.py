"""Load generation shared by the HTTP benchmarks: wrk when installed, else ``run_python``
(httpx in this process), and their measurement record."""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class Run:
    rps: float
    p50: float  # ms
    p99: float  # ms
    requests: int


def run_wrk(
    url: str,
    seconds: float,
    concurrency: int,
    *,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
    timeout: float = 2.0,
) -> Run:
    """One wrk run (a C load generator: it leaves the cores to the servers under test).

    A request slower than ``timeout`` seconds counts as a socket error (wrk's default, 2 s).
    """
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency"]
    cmd.append(f"--timeout={max(1, round(timeout))}s")
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    if "Non-2xx" in out or "Socket errors" in out or "Requests/sec" not in out:
        raise RuntimeError(f"{url}: wrk saw errors:\n{out}")

    def number(pattern: str) -> str:
        found = re.search(pattern, out)
        if found is None:
            raise RuntimeError(f"{url}: unexpected wrk output:\n{out}")
        return found.group(1)

    def latency(label: str) -> float:
        found = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        if found is None:
            raise RuntimeError(f"{url}: no {label} latency in wrk output:\n{out}")
        value, unit = found.groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return Run(
        float(number(r"Requests/sec:\s+([\d.]+)")),
        latency("50%"),
        latency("99%"),
        int(number(r"(\d+) requests in")),
    )


async def run_python(
    send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
    seconds: float,
    concurrency: int,
) -> Run:
    """The fallback load generator: ``concurrency`` workers each ``send`` one request after
    another for ``seconds``; an answer other than 200 ends the run with an error. It shares
    the cores with the servers under test, so it understates what they can do."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await send(client)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{r.request.url}: HTTP {r.status_code} {r.text[:200]}")

        start = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), seconds + 30
        )
        elapsed = time.perf_counter() - start
    qs = statistics.quantiles(latencies, n=100)
    return Run(len(latencies) / elapsed, qs[49] * 1000, qs[98] * 1000, len(latencies))
