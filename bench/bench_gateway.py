"""Gateway overhead: the same small request straight to an upstream and through the gateway.

Bearer-token auth uses a locally signed RS256 token whose issuer (discovery + JWKS) is served
over HTTP by this script's upstream process, so the gateway does real discovery, JWKS fetch
and signature verification (then its verified-token cache). The bench user is a cluster
admin so no profile setup is needed; authorization still runs on every request.

    .venv/bin/python bench/bench_gateway.py [--requests 3000] [--concurrency 16]

Prints requests/s and p50/p99 for both, and the ratios (target: >= 0.6x throughput,
<= 2 ms added p50). Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]
PATH = "/apis/kubeflow.org/v1/namespaces/bench/notebooks"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_upstream(port: int, key_file: Path) -> None:
    """The upstream service and the token issuer in one small process."""
    import uvicorn
    from fastapi import FastAPI
    from joserfc.jwk import RSAKey

    key = RSAKey.import_key(json.loads(key_file.read_text()))
    issuer = f"http://127.0.0.1:{port}/dex"
    app = FastAPI()

    @app.get("/dex/.well-known/openid-configuration")
    async def discovery() -> dict:
        return {"issuer": issuer, "jwks_uri": f"{issuer}/keys"}

    @app.get("/dex/keys")
    async def keys() -> dict:
        return {"keys": [key.as_dict(private=False)]}

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"ready": True}

    @app.get(PATH)
    async def notebooks() -> dict:
        return {"kind": "NotebookList", "items": []}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def run_load(url: str, headers: dict[str, str], total: int,
                   concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = total
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        for _ in range(50):  # warm-up
            (await client.get(url, headers=headers)).raise_for_status()

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                r = await client.get(url, headers=headers)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{url}: HTTP {r.status_code} {r.text[:200]}")

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 300)
        elapsed = time.perf_counter() - start
    return total / elapsed, latencies


def run_wrk(url: str, headers: dict[str, str], seconds: int,
            concurrency: int) -> tuple[float, float, float]:
    """(req/s, p50 ms, p99 ms) measured by wrk, a C load generator that costs the machine
    far less than a Python client, so the two servers get the cores."""
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", url]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def latency(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    if "Non-2xx" in out:
        raise RuntimeError(f"{url}: wrk saw non-2xx responses:\n{out}")
    return rps, latency("50%"), latency("99%")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.serve_upstream:
        serve_upstream(args.serve_upstream, args.key_file)
        return 0

    from joserfc import jwt
    from joserfc.jwk import RSAKey

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        key = RSAKey.generate_key(2048, parameters={"kid": "bench", "use": "sig", "alg": "RS256"})
        key_file = Path(tmp) / "key.json"
        key_file.write_text(json.dumps(key.as_dict(private=True)))
        up_port, gw_port = free_port(), free_port()
        up = f"http://127.0.0.1:{up_port}"
        try:
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--serve-upstream", str(up_port),
                 "--key-file", str(key_file)], cwd=ROOT))
            wait_http(f"{up}/readyz")
            env = dict(os.environ, SHIPYARD_AUTH_MODE="oidc", SHIPYARD_GATEWAY_PORT=str(gw_port),
                       SHIPYARD_STATE_DIR=str(Path(tmp) / "state"), SHIPYARD_DATABASE_URL="",
                       SHIPYARD_OIDC_ISSUER=f"{up}/dex", SHIPYARD_OIDC_CLIENT_ID="shipyard",
                       SHIPYARD_COOKIE_SECRET="bench-cookie-secret-0123456789",
                       SHIPYARD_CLUSTER_ADMINS="bench@example.com",
                       SHIPYARD_NOTEBOOK_URL=up, SHIPYARD_AUTOML_URL=up,
                       SHIPYARD_PIPELINE_URL=up, SHIPYARD_SERVING_URL=up,
                       SHIPYARD_RATE_LIMIT_PER_SECOND="0", SHIPYARD_LOG_LEVEL="WARNING")
            procs.append(subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env))
            wait_http(f"http://127.0.0.1:{gw_port}/healthz")
            now = int(time.time())
            token = jwt.encode({"alg": "RS256", "kid": "bench"},
                               {"iss": f"{up}/dex", "aud": "shipyard", "sub": "b",
                                "email": "bench@example.com", "iat": now, "exp": now + 3600},
                               key)
            gw_url, auth = f"http://127.0.0.1:{gw_port}{PATH}", {
                "authorization": f"Bearer {token}"}
            if shutil.which("wrk"):
                results = []
                for conc in sorted({1, args.concurrency}):
                    run_wrk(gw_url, auth, 1, conc)  # warm-up: JWKS fetch, connection pools
                    results.append((conc, run_wrk(up + PATH, {}, args.seconds, conc),
                                    run_wrk(gw_url, auth, args.seconds, conc)))
                report_wrk(results)
                return 0
            log.info("wrk not found (apt-get install wrk): measuring with a Python client, "
                     "which shares the cores with the servers and understates the gateway")
            direct = asyncio.run(run_load(up + PATH, {}, args.requests, args.concurrency))
            via = asyncio.run(run_load(gw_url, auth, args.requests, args.concurrency))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=10)
    (d_rps, d_lat), (g_rps, g_lat) = direct, via
    log.info("concurrency %d, %d requests each", args.concurrency, args.requests)
    log.info("direct : %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms", d_rps, pct(d_lat, 50),
             pct(d_lat, 99))
    log.info("gateway: %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms", g_rps, pct(g_lat, 50),
             pct(g_lat, 99))
    log.info("throughput ratio %.2fx (target >= 0.6x), added p50 %.2f ms (target <= 2 ms)",
             g_rps / d_rps, pct(g_lat, 50) - pct(d_lat, 50))
    return 0


def report_wrk(results: list[tuple[int, tuple[float, float, float],
                                  tuple[float, float, float]]]) -> None:
    log.info("load generator: wrk, bearer-token auth through the gateway")
    log.info("%5s %-8s %10s %9s %9s", "conc", "path", "req/s", "p50 ms", "p99 ms")
    for conc, direct, via in results:
        for label, (rps, p50, p99) in (("direct", direct), ("gateway", via)):
            log.info("%5d %-8s %10.0f %9.2f %9.2f", conc, label, rps, p50, p99)
        ratio, added = via[0] / direct[0], via[1] - direct[1]
        verdict = "PASS" if ratio >= 0.6 and added <= 2.0 else "FAIL"
        log.info("      concurrency %d: throughput %.2fx direct (target >= 0.6x), added p50 "
                 "%.2f ms (target <= 2 ms): %s", conc, ratio, added, verdict)


if __name__ == "__main__":
    sys.exit(main())
