"""Gateway overhead: the same small request straight to a service and through the gateway.

Two comparisons, each at concurrency 1, 16 and 64 (``--concurrency``):

* a trivial stub upstream (a tiny FastAPI app: the gateway's own cost dominates), and
* the real notebook service (``python -m services.notebook`` on a fresh Postgres database
  and the NATS at 127.0.0.1:4222), reading one PersistentVolumeClaim created first. Direct
  calls carry an identity assertion signed with the gateway's key, as the gateway's do.

Bearer-token auth uses a locally signed RS256 token whose issuer (discovery + JWKS) is served
by the stub, so the gateway does real discovery, JWKS fetch and signature verification (then
its verified-token cache). The bench user is a cluster admin, so no profile setup is needed;
authorization still runs on every request.

    .venv/bin/python bench/bench_gateway.py [--seconds 4] [--concurrency 1,16,64]
        [--stacks pool,httpx,aiohttp] [--no-service]

``--stacks`` starts one gateway per HTTP client stack of its proxy (bench/gateway_stacks.py:
``pool`` is gateway/upstream.py's, the production one; ``httpx`` and ``aiohttp`` are adapters
over those libraries) and measures them in the same run, interleaved with the direct calls,
so each sees the same machine. The verdict is judged on the first stack.

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
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from loadgen import Run, run_python, run_wrk

from shipyard.ports import free_port

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


def serve_upstream(port: int, key_file: Path, delay: float = 0.0) -> None:
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
        if delay:  # a service that waits for its database before it answers
            await asyncio.sleep(delay)
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


def measure(
    url: str, headers: dict[str, str], seconds: float, concurrency: int, use_wrk: bool
) -> Run:
    """One run; a run that saw errors (a non-2xx answer, a request slower than 10 s) is
    logged and counts as 0 requests, so one failing stack does not end the comparison."""
    try:
        if use_wrk:
            return run_wrk(url, seconds, concurrency, headers=headers, timeout=10)
        return asyncio.run(run_python(lambda c: c.get(url, headers=headers), seconds, concurrency))
    except RuntimeError as exc:
        log.warning("%s", str(exc)[:600])
        return Run(0.0, float("nan"), float("nan"), 0)


@dataclass
class Comparison:
    upstream: str
    stack: str  # the gateway proxy's HTTP client stack
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


@dataclass
class Gateway:
    stack: str
    url: str
    pid: int


def compare(
    name: str,
    direct_url: str,
    direct_headers: dict[str, str],
    gateways: list[Gateway],
    path: str,
    gw_headers: dict[str, str],
    concurrencies: list[int],
    seconds: float,
    use_wrk: bool,
    rounds: int = 2,
) -> list[Comparison]:
    """Direct and gateway runs interleaved (A B C A B C), so drifting background load on a
    shared machine falls on every side alike."""
    out = []
    for conc in concurrencies:
        measure(direct_url, direct_headers, 1, conc, use_wrk)  # warm-up: pools, caches
        for gw in gateways:
            measure(gw.url + path, gw_headers, 1, conc, use_wrk)
        directs: list[Run] = []
        vias: dict[str, list[Run]] = {gw.stack: [] for gw in gateways}
        cpu = dict.fromkeys(vias, 0.0)
        for _ in range(rounds):
            directs.append(measure(direct_url, direct_headers, seconds / rounds, conc, use_wrk))
            for gw in gateways:
                cpu0 = cpu_seconds(gw.pid)
                vias[gw.stack].append(
                    measure(gw.url + path, gw_headers, seconds / rounds, conc, use_wrk)
                )
                cpu[gw.stack] += cpu_seconds(gw.pid) - cpu0
        direct = combine(directs)
        for stack, runs in vias.items():
            via = combine(runs)
            cpu_us = cpu[stack] / max(via.requests, 1) * 1e6
            out.append(Comparison(name, stack, conc, direct, via, cpu_us))
    return out


def report(results: list[Comparison], tool: str) -> bool:
    """Log the table and verdicts; True when every real-service comparison passes."""
    log.info("")
    log.info("load generator: %s; through the gateway with bearer-token (OIDC JWT) auth", tool)
    log.info(
        "%-17s %5s %-16s %9s %8s %8s %12s",
        "upstream",
        "conc",
        "path",
        "req/s",
        "p50 ms",
        "p99 ms",
        "gw CPU/req",
    )
    shown: set[tuple[str, int]] = set()
    for c in results:
        rows = [("gateway " + c.stack, c.via)]
        if (c.upstream, c.concurrency) not in shown:
            shown.add((c.upstream, c.concurrency))
            rows.insert(0, ("direct", c.direct))
        for label, run in rows:
            cpu = f"{c.gateway_cpu_us:8.0f} us" if label != "direct" and c.gateway_cpu_us else ""
            log.info(
                "%-17s %5d %-16s %9.0f %8.2f %8.2f %12s",
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
            "%-17s %-7s concurrency %2d: throughput %.2fx direct (target >= %.1fx), added p50 "
            "%.2f ms (target <= %.0f ms): %s",
            c.upstream,
            c.stack,
            c.concurrency,
            c.ratio,
            TARGET_RATIO,
            c.added_p50,
            TARGET_ADDED_P50_MS,
            "PASS" if c.passed else "FAIL",
        )
    judged = [c for c in results if c.upstream != "stub" and c.stack == results[0].stack]
    ok = bool(judged) and all(c.passed for c in judged)
    if judged:
        log.info("verdict (judged against the real service): %s", "PASS" if ok else "FAIL")
    return ok


def start_gateways(
    stacks: list[str], env: dict[str, str], procs: list[subprocess.Popen[bytes]]
) -> list[Gateway]:
    """One gateway per client stack (bench/gateway_stacks.py), started one after the other
    (each creates its tables); their processes are added to ``procs``."""
    gateways: list[Gateway] = []
    for stack in stacks:
        port = free_port()
        script = str(Path(__file__).with_name("gateway_stacks.py"))
        gw_env = dict(env, SHIPYARD_GATEWAY_PORT=str(port), SHIPYARD_GATEWAY_TLS_PORT="0")
        procs.append(subprocess.Popen([sys.executable, script, stack], cwd=ROOT, env=gw_env))
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", timeout=120, proc=procs[-1])  # a busy machine is slow
        # A stack may be named twice (two gateways on it: how much do two alike differ?).
        same = sum(gw.stack.split("#")[0] == stack for gw in gateways)
        gateways.append(Gateway(f"{stack}#{same + 1}" if same else stack, url, procs[-1].pid))
    return gateways


def bearer_token(issuer: str, key: Any) -> dict[str, str]:
    """The bench user's OIDC token (RS256, signed with the stub issuer's key)."""
    from joserfc import jwt

    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": "shipyard",
        "sub": "b",
        "email": "bench@example.com",
        "iat": now,
        "exp": now + 3600,
    }
    token = jwt.encode({"alg": "RS256", "kid": "bench"}, claims, key)
    return {"authorization": f"Bearer {token}"}


def service_assertion(private_key: Path, svc: str) -> dict[str, str]:
    """What the gateway asserts for the bench user, signed with the gateway's own key (a
    longer lifetime than the gateway's, so one assertion lasts the bench); the bench PVC is
    created with it."""
    from services.common.identity import ASSERTION_HEADER, AssertionSigner, Identity

    signer = AssertionSigner(private_key.read_bytes(), ttl_seconds=900)
    me = Identity(user="bench@example.com", namespace=NAMESPACE, role="admin", cluster_admin=True)
    assertion = {ASSERTION_HEADER: signer.sign(me)}
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "bench-pvc"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
    }
    r = httpx.post(svc + PVC_PATH.rsplit("/", 1)[0], json=claim, headers=assertion, timeout=10)
    if r.status_code != 201:
        raise RuntimeError(f"creating the bench PVC: {r.status_code} {r.text[:300]}")
    return assertion


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated")
    parser.add_argument(
        "--stacks", default="pool", help="the proxy's client stacks, comma-separated (first judged)"
    )
    parser.add_argument("--seconds", type=float, default=4, help="per measured run")
    parser.add_argument(
        "--no-service",
        action="store_true",
        help="only the stub comparison (no Postgres/NATS needed)",
    )
    parser.add_argument(
        "--stub-delay-ms", type=float, default=0.0, help="the stub waits this long per answer"
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def run_bench(args: argparse.Namespace, tmp: Path, use_wrk: bool) -> list[Comparison]:
    """Start the stub, the service and the gateways, measure, and stop them all."""
    from joserfc.jwk import RSAKey

    from services.common.identity import ensure_gateway_keys

    concurrencies = sorted({int(c) for c in args.concurrency.split(",")})
    procs: list[subprocess.Popen[bytes]] = []
    db_name = f"shipyard_bench_{uuid.uuid4().hex[:10]}"
    db_created = False
    state = tmp / "state"
    private_key, public_key = ensure_gateway_keys(state)
    oidc_key = RSAKey.generate_key(2048, parameters={"kid": "bench", "use": "sig", "alg": "RS256"})
    key_file = tmp / "oidc-key.json"
    key_file.write_text(json.dumps(oidc_key.as_dict(private=True)))
    stub_port, svc_port = free_port(), free_port()
    stub = f"http://127.0.0.1:{stub_port}"
    svc = f"http://127.0.0.1:{svc_port}"
    quiet = dict(os.environ, SHIPYARD_LOG_LEVEL="WARNING", NATS_URL=NATS_URL)
    try:
        upstream_cmd = [sys.executable, __file__, "--serve-upstream", str(stub_port)]
        upstream_cmd += ["--stub-delay-ms", str(args.stub_delay_ms)]
        procs.append(subprocess.Popen([*upstream_cmd, "--key-file", str(key_file)], cwd=ROOT))
        db_url = ""
        if not args.no_service:
            asyncio.run(_psql(f'CREATE DATABASE "{db_name}"'))
            db_created = True
            server = PG_ADMIN_DSN.rsplit("/", 1)[0]
            db_url = server.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{db_name}"
            svc_env = dict(
                quiet,
                SHIPYARD_PORT=str(svc_port),
                SHIPYARD_DATABASE_URL=db_url,
                SHIPYARD_STATE_DIR=str(tmp / "notebook"),
                SHIPYARD_GATEWAY_PUBLIC_KEY_FILE=str(public_key),
            )
            cmd = [sys.executable, "-m", "services.notebook"]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=svc_env))
        wait_http(f"{stub}/readyz", proc=procs[0])
        gw_env = dict(
            quiet,
            SHIPYARD_AUTH_MODE="oidc",
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
        )
        gateways = start_gateways(args.stacks.split(","), gw_env, procs)
        auth = bearer_token(f"{stub}/dex", oidc_key)
        timing = (concurrencies, args.seconds, use_wrk)
        results = compare("stub", stub + STUB_PATH, {}, gateways, STUB_PATH, auth, *timing)
        if not args.no_service:
            wait_http(f"{svc}/readyz", proc=procs[1])
            assertion = service_assertion(private_key, svc)
            results += compare(
                "notebook service", svc + PVC_PATH, assertion, gateways, PVC_PATH, auth, *timing
            )
        return results
    finally:
        for p in reversed(procs):  # the gateways first, then what they talk to
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if db_created:
            asyncio.run(_psql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.serve_upstream:
        serve_upstream(args.serve_upstream, args.key_file, args.stub_delay_ms / 1000)
        return 0
    use_wrk = shutil.which("wrk") is not None
    if not use_wrk:
        log.warning(
            "wrk not found (apt-get install wrk): measuring with a Python client, "
            "which shares the cores with the servers and understates the gateway"
        )
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_bench(args, Path(tmp), use_wrk)
    ok = report(results, "wrk" if use_wrk else "Python httpx client (understates the gateway)")
    log.info("bench took %.0f s", time.monotonic() - started)
    return 0 if ok or args.no_service else 1


if __name__ == "__main__":
    sys.exit(main())
