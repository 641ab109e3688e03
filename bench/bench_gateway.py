"""Gateway overhead: the same small request straight to a service and through the gateway.

Two comparisons, each at concurrency 1 and 16 (``--concurrency``):

* a trivial stub upstream (a tiny FastAPI app: the gateway's own cost dominates), and
* the real notebook service (``python -m services.notebook`` on a fresh Postgres database
  and the NATS at 127.0.0.1:4222), reading one PersistentVolumeClaim created first. Direct
  calls carry an identity assertion signed with the gateway's key, as the gateway's do.

Bearer-token auth uses a locally signed RS256 token whose issuer (discovery + JWKS) is served
by the stub, so the gateway does real discovery, JWKS fetch and signature verification (then
its verified-token cache). The bench user is a cluster admin, so no profile setup is needed;
authorization still runs on every request.

    .venv/bin/python bench/bench_gateway.py [--seconds 4] [--concurrency 16] [--no-service]

Load comes from wrk when it is installed (a C load generator that leaves the cores to the
servers), else from a Python client with a warning. Prints req/s, p50/p99, the gateway's CPU
per request, the ratios and PASS/FAIL against the targets (>= 0.6x throughput, <= 2 ms added
p50); the verdict that counts is the one against the real service. Everything listens on
127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from loadgen import Run, run_wrk

log = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]
STUB_PATH = "/apis/kubeflow.org/v1beta1/namespaces/bench/experiments"  # automl -> the stub
NAMESPACE = "bench"
PVC_PATH = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/bench-pvc"  # notebook
PG_ADMIN_DSN = os.environ.get(
    "SHIPYARD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
TARGET_RATIO, TARGET_ADDED_P50_MS = 0.6, 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_upstream(port: int, key_file: Path) -> None:
    """The stub service and the token issuer in one small process."""
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

    @app.get(STUB_PATH)
    async def experiments() -> dict:
        return {"kind": "ExperimentList", "items": []}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_http(url: str, timeout: float = 30, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def _psql(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc; 0 where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def run_load(url: str, headers: dict[str, str], seconds: float, concurrency: int) -> Run:
    """The fallback load generator: it shares the cores with the servers, so it understates."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.get(url, headers=headers)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{url}: HTTP {r.status_code} {r.text[:200]}")

        start = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), seconds + 30
        )
        elapsed = time.perf_counter() - start
    qs = statistics.quantiles(latencies, n=100)
    return Run(len(latencies) / elapsed, qs[49] * 1000, qs[98] * 1000, len(latencies))


def measure(
    url: str, headers: dict[str, str], seconds: float, concurrency: int, use_wrk: bool
) -> Run:
    if use_wrk:
        return run_wrk(url, seconds, concurrency, headers=headers)
    return asyncio.run(run_load(url, headers, seconds, concurrency))


@dataclass
class Comparison:
    upstream: str
    concurrency: int
    direct: Run
    via: Run
    gateway_cpu_us: float  # gateway CPU per proxied request

    @property
    def ratio(self) -> float:
        return self.via.rps / self.direct.rps

    @property
    def added_p50(self) -> float:
        return self.via.p50 - self.direct.p50

    @property
    def passed(self) -> bool:
        return self.ratio >= TARGET_RATIO and self.added_p50 <= TARGET_ADDED_P50_MS


def combine(runs: list[Run]) -> Run:
    """Runs of equal length as one: mean req/s, median p50, worst p99."""
    return Run(
        statistics.fmean(r.rps for r in runs),
        statistics.median(r.p50 for r in runs),
        max(r.p99 for r in runs),
        sum(r.requests for r in runs),
    )


def compare(
    name: str,
    direct_url: str,
    direct_headers: dict[str, str],
    gw_url: str,
    gw_headers: dict[str, str],
    gw_pid: int,
    concurrencies: list[int],
    seconds: float,
    use_wrk: bool,
    rounds: int = 2,
) -> list[Comparison]:
    """Direct and gateway runs interleaved (A B A B), so drifting background load on a
    shared machine falls on both sides alike."""
    out = []
    for conc in concurrencies:
        measure(direct_url, direct_headers, 1, conc, use_wrk)  # warm-up: pools, caches
        measure(gw_url, gw_headers, 1, conc, use_wrk)
        directs, vias, cpu = [], [], 0.0
        for _ in range(rounds):
            directs.append(measure(direct_url, direct_headers, seconds / rounds, conc, use_wrk))
            cpu0 = cpu_seconds(gw_pid)
            vias.append(measure(gw_url, gw_headers, seconds / rounds, conc, use_wrk))
            cpu += cpu_seconds(gw_pid) - cpu0
        via = combine(vias)
        out.append(Comparison(name, conc, combine(directs), via, cpu / max(via.requests, 1) * 1e6))
    return out


def report(results: list[Comparison], tool: str) -> bool:
    """Log the table and verdicts; True when every real-service comparison passes."""
    log.info("")
    log.info("load generator: %s; through the gateway with bearer-token (OIDC JWT) auth", tool)
    log.info(
        "%-17s %5s %-8s %9s %8s %8s %12s",
        "upstream",
        "conc",
        "path",
        "req/s",
        "p50 ms",
        "p99 ms",
        "gw CPU/req",
    )
    for c in results:
        for label, run in (("direct", c.direct), ("gateway", c.via)):
            cpu = f"{c.gateway_cpu_us:8.0f} us" if label == "gateway" and c.gateway_cpu_us else ""
            log.info(
                "%-17s %5d %-8s %9.0f %8.2f %8.2f %12s",
                c.upstream,
                c.concurrency,
                label,
                run.rps,
                run.p50,
                run.p99,
                cpu,
            )
    log.info("")
    for c in results:
        log.info(
            "%-17s concurrency %2d: throughput %.2fx direct (target >= %.1fx), added p50 "
            "%.2f ms (target <= %.0f ms): %s",
            c.upstream,
            c.concurrency,
            c.ratio,
            TARGET_RATIO,
            c.added_p50,
            TARGET_ADDED_P50_MS,
            "PASS" if c.passed else "FAIL",
        )
    judged = [c for c in results if c.upstream != "stub"]
    ok = bool(judged) and all(c.passed for c in judged)
    if judged:
        log.info("verdict (judged against the real service): %s", "PASS" if ok else "FAIL")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4, help="per measured run")
    parser.add_argument(
        "--no-service",
        action="store_true",
        help="only the stub comparison (no Postgres/NATS needed)",
    )
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

    from services.common.identity import (
        ASSERTION_HEADER,
        AssertionSigner,
        Identity,
        ensure_gateway_keys,
    )

    use_wrk = shutil.which("wrk") is not None
    if not use_wrk:
        log.warning(
            "wrk not found (apt-get install wrk): measuring with a Python client, "
            "which shares the cores with the servers and understates the gateway"
        )
    concurrencies = sorted({1, args.concurrency})
    procs: list[subprocess.Popen[bytes]] = []
    db_name = f"shipyard_bench_{uuid.uuid4().hex[:10]}"
    db_created = False
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        private_key, public_key = ensure_gateway_keys(state)
        oidc_key = RSAKey.generate_key(
            2048, parameters={"kid": "bench", "use": "sig", "alg": "RS256"}
        )
        key_file = Path(tmp) / "oidc-key.json"
        key_file.write_text(json.dumps(oidc_key.as_dict(private=True)))
        stub_port, svc_port, gw_port = free_port(), free_port(), free_port()
        stub = f"http://127.0.0.1:{stub_port}"
        svc = f"http://127.0.0.1:{svc_port}"
        gw = f"http://127.0.0.1:{gw_port}"
        quiet = dict(os.environ, SHIPYARD_LOG_LEVEL="WARNING", NATS_URL=NATS_URL)
        try:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--serve-upstream",
                        str(stub_port),
                        "--key-file",
                        str(key_file),
                    ],
                    cwd=ROOT,
                )
            )
            db_url = ""
            if not args.no_service:
                asyncio.run(_psql(f'CREATE DATABASE "{db_name}"'))
                db_created = True
                db_url = (
                    PG_ADMIN_DSN.rsplit("/", 1)[0].replace(
                        "postgresql://", "postgresql+asyncpg://", 1
                    )
                    + f"/{db_name}"
                )
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "services.notebook"],
                        cwd=ROOT,
                        env=dict(
                            quiet,
                            SHIPYARD_PORT=str(svc_port),
                            SHIPYARD_DATABASE_URL=db_url,
                            SHIPYARD_STATE_DIR=str(Path(tmp) / "notebook"),
                            SHIPYARD_GATEWAY_PUBLIC_KEY_FILE=str(public_key),
                        ),
                    )
                )
            wait_http(f"{stub}/readyz", proc=procs[0])
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gateway"],
                    cwd=ROOT,
                    env=dict(
                        quiet,
                        SHIPYARD_AUTH_MODE="oidc",
                        SHIPYARD_GATEWAY_PORT=str(gw_port),
                        SHIPYARD_STATE_DIR=str(state),
                        SHIPYARD_DATABASE_URL=db_url,
                        SHIPYARD_GATEWAY_PRIVATE_KEY_FILE=str(private_key),
                        SHIPYARD_GATEWAY_PUBLIC_KEY_FILE=str(public_key),
                        SHIPYARD_OIDC_ISSUER=f"{stub}/dex",
                        SHIPYARD_OIDC_CLIENT_ID="shipyard",
                        SHIPYARD_COOKIE_SECRET="bench-cookie-secret-0123456789",
                        SHIPYARD_CLUSTER_ADMINS="bench@example.com",
                        SHIPYARD_NOTEBOOK_URL=svc if not args.no_service else stub,
                        SHIPYARD_AUTOML_URL=stub,
                        SHIPYARD_PIPELINE_URL=stub,
                        SHIPYARD_SERVING_URL=stub,
                        SHIPYARD_RATE_LIMIT_PER_SECOND="0",
                    ),
                )
            )
            gw_proc = procs[-1]
            wait_http(f"{gw}/healthz", proc=gw_proc)
            now = int(time.time())
            token = jwt.encode(
                {"alg": "RS256", "kid": "bench"},
                {
                    "iss": f"{stub}/dex",
                    "aud": "shipyard",
                    "sub": "b",
                    "email": "bench@example.com",
                    "iat": now,
                    "exp": now + 3600,
                },
                oidc_key,
            )
            auth = {"authorization": f"Bearer {token}"}
            results = compare(
                "stub",
                stub + STUB_PATH,
                {},
                gw + STUB_PATH,
                auth,
                gw_proc.pid,
                concurrencies,
                args.seconds,
                use_wrk,
            )
            if not args.no_service:
                wait_http(f"{svc}/readyz", proc=procs[1])
                # What the gateway asserts for this user, signed with the gateway's own key
                # (a longer lifetime than the gateway's, so one assertion lasts the bench).
                signer = AssertionSigner(private_key.read_bytes(), ttl_seconds=900)
                assertion = {
                    ASSERTION_HEADER: signer.sign(
                        Identity(
                            user="bench@example.com",
                            namespace=NAMESPACE,
                            role="admin",
                            cluster_admin=True,
                        )
                    )
                }
                claim = {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "bench-pvc"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "64Mi"}},
                    },
                }
                r = httpx.post(
                    svc + PVC_PATH.rsplit("/", 1)[0], json=claim, headers=assertion, timeout=10
                )
                if r.status_code != 201:
                    raise RuntimeError(f"creating the bench PVC: {r.status_code} {r.text[:300]}")
                results += compare(
                    "notebook service",
                    svc + PVC_PATH,
                    assertion,
                    gw + PVC_PATH,
                    auth,
                    gw_proc.pid,
                    concurrencies,
                    args.seconds,
                    use_wrk,
                )
        finally:
            for p in reversed(procs):  # the gateway first, then what it talks to
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
            if db_created:
                asyncio.run(_psql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
    ok = report(results, "wrk" if use_wrk else "Python httpx client (understates the gateway)")
    log.info("bench took %.0f s", time.monotonic() - started)
    return 0 if ok or args.no_service else 1


if __name__ == "__main__":
    sys.exit(main())
