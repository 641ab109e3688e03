"""Artifact throughput: a step's upload and download through the platform, beside boto3's way.

Issue 11's target: artifact upload and download throughput through the platform against
boto3 straight to the same store, in one run, at least 0.8x. The bench starts its own
embedded SeaweedFS (as ``shipyard up`` runs it: ``shipyard.seaweedfs.EmbeddedSeaweedFS``),
writes one random file of ``--size-mib`` MiB and, round by round (the order of the two
variants alternating each round, so both see the same machine load), moves it:

* **upload, platform**: exactly as a step uploads an ``archive: none`` output artifact:
  ``python -I -S services/pipeline/stepwrap.py PLAN -- true`` with a plan whose output
  artifact carries a presigned PUT URL from ``ArtifactRepository.upload_form`` (one
  streaming PUT, standard library only). The subprocess's wall clock
  is timed, start-up included (about 20 ms: the wrapper imports nothing but the stdlib).
* **download, platform (step)**: as a step fetches an input artifact: the same wrapper
  with a plan whose input carries a presigned GET URL (``ObjectStore.presigned_get_url``).
* **download, platform (Argo API)**: ``GET /artifact-files/{ns}/workflows/{name}/{node}/
  outputs/{artifact}`` on the pipeline service (run in this process on a SQLite database,
  with a finished Workflow whose status names the object), read by a stdlib streaming
  client in a ``python -I -S`` subprocess, as the wrapper reads. Skipped with a note if
  the service cannot start (``--no-api`` skips it).
* **peer**: boto3's ``upload_file`` / ``download_file`` with its default ``TransferConfig``
  (8 MiB parts or ranges, 10 threads), in a subprocess (boto3 is a dev dependency for this
  bench; the platform's own client is aiobotocore). The peer's clock runs around the
  transfer only (botocore's import and client creation excluded), and it sends no CRC
  trailers (boto3 >= 1.36 would), so any bias favours the peer.

The platform variants pay their subprocess's start-up and the peer does not, so small sizes
(under about 64 MiB) mostly measure that; the target is judged at the default size.
Objects are deleted after each round; the store and its data directory go at the end.
Prints MiB/s per variant (medians over rounds), the ratios platform/peer, and PASS/FAIL
against ``--target``; exit status 1 on a FAIL.

    .venv/bin/python bench/bench_artifacts.py [--size-mib 256] [--rounds 5] [--target 0.8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.objectstore import ObjectStore, S3Config  # noqa: E402
from services.pipeline.artifacts import ArtifactRepository  # noqa: E402

log = logging.getLogger("bench_artifacts")
STEPWRAP = ROOT / "services" / "pipeline" / "stepwrap.py"
MIB = 1024 * 1024
NAMESPACE = "bench"
CONCURRENCY = 10  # boto3's TransferConfig default, and its connection pool to match


# ------------------------------------------------------------------ the peer (a subprocess)
def peer_main(op: str, key: str, path: str) -> int:
    """Upload ``path`` to ``key`` or download ``key`` to ``path`` as boto3 would; print the
    transfer's seconds. Store config comes from the environment (``S3Config.env`` names)."""
    cfg = json.loads(os.environ["BENCH_S3"])
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        max_pool_connections=CONCURRENCY,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=cfg["endpoint"],
        region_name=cfg["region"],
        aws_access_key_id=cfg["access_key_id"],
        aws_secret_access_key=cfg["secret_access_key"],
        config=config,
    )
    bucket = cfg["bucket"]
    transfer = TransferConfig()  # boto3's defaults: 8 MiB parts or ranges, 10 threads
    t0 = time.perf_counter()
    if op == "upload":
        s3.upload_file(path, bucket, key, Config=transfer)
    else:
        s3.download_file(bucket, key, path, Config=transfer)
    elapsed = time.perf_counter() - t0
    which = "boto3"
    sys.stdout.write(json.dumps({"seconds": elapsed, "client": which}) + "\n")
    return 0


# ------------------------------------------------------------------ the store
@contextlib.contextmanager
def embedded_store(state: Path) -> Iterator[S3Config]:
    """A SeaweedFS as ``shipyard up`` runs it, with its bucket, stopped when the block ends."""
    from shipyard.seaweedfs import running

    with running(state) as (embedded, _pid):
        yield embedded.config


# ------------------------------------------------------------------ the variants
def run_timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def stepwrap(work: Path, plan: dict[str, Any]) -> float:
    """Run the step wrapper around ``true`` with ``plan``; its wall clock. Without a report URL
    the wrapper reports nothing: the caller checks the sizes in the store and on disk."""
    work.mkdir(parents=True, exist_ok=True)
    plan_path = work / "plan.json"
    plan_path.write_text(json.dumps({**plan, "workDir": str(work)}))
    argv = [sys.executable, "-I", "-S", str(STEPWRAP), str(plan_path), "--", "true"]
    elapsed, _ = run_timed(argv)
    return elapsed


def peer(op: str, key: str, path: Path, cfg: S3Config) -> tuple[float, str]:
    env = dict(os.environ, BENCH_S3=json.dumps(cfg.__dict__))
    argv = [sys.executable, str(Path(__file__).resolve()), "--peer", op, key, str(path)]
    _, out = run_timed(argv, env)
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["seconds"]), str(result["client"])


def api_download(url: str, headers: dict[str, str], dest: Path) -> float:
    """Stream ``url`` to ``dest`` as the step wrapper streams a download (standard library,
    ``python -I -S``, 1 MiB copies); the subprocess's wall clock. (httpx's ``iter_raw``
    reached only about 35 MiB/s here: the client, not the service, was the bottleneck.)"""
    code = (
        "import json, shutil, sys, urllib.request\n"
        "req = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[2]))\n"
        "with urllib.request.urlopen(req, timeout=60) as r, open(sys.argv[3], 'wb') as f:\n"
        "    shutil.copyfileobj(r, f, 1024 * 1024)\n"
    )
    argv = [sys.executable, "-I", "-S", "-c", code, url, json.dumps(headers), str(dest)]
    elapsed, _ = run_timed(argv)
    return elapsed


def check_size(path: Path, size: int) -> None:
    if path.stat().st_size != size:
        raise RuntimeError(f"{path}: {path.stat().st_size} bytes, expected {size}")
    path.unlink()


# ------------------------------------------------------------------ the Argo artifact API
@contextlib.asynccontextmanager
async def pipeline_service(cfg: S3Config, state: Path) -> AsyncIterator[Any]:
    """The pipeline service in this process (SQLite, NATS from ``NATS_URL``), on a free port."""
    import uvicorn

    from services.common.identity import AssertionMinter
    from services.pipeline.app import create_app
    from services.pipeline.settings import Settings
    from shipyard.up import free_port

    minter = AssertionMinter()
    port = free_port()
    settings = Settings(
        nats_url=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        port=port,
        state_dir=state,
        gateway_public_key=minter.public_pem.decode(),
        log_level="WARNING",
        s3_endpoint=cfg.endpoint,
        s3_access_key_id=cfg.access_key_id,
        s3_secret_access_key=cfg.secret_access_key,
        s3_region=cfg.region,
        s3_bucket=cfg.bucket,
    )
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError("the pipeline service did not start")
            await asyncio.sleep(0.05)
        app.state.bench_url = f"http://127.0.0.1:{port}"
        app.state.bench_minter = minter  # assertions live 60 s: one per request
        yield app
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


async def finished_workflow(app: Any, name: str, key: str, bucket: str) -> str:
    """A Succeeded Workflow whose one node has output artifact ``data`` at ``key``; its
    ``/artifact-files`` path. Written as the step collector would (one transaction)."""
    from services.pipeline.models import WORKFLOW

    ctx = app.state.ctx
    wf = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {
            "entrypoint": "main",
            "templates": [{"name": "main", "container": {"image": "a", "command": ["true"]}}],
        },
    }
    art = {"name": "data", "s3": {"bucket": bucket, "key": key}, "archive": {"none": {}}}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    node = {
        "id": "node-0",
        "name": "node-0",
        "displayName": "node-0",
        "type": "Pod",
        "phase": "Succeeded",
        "outputs": {"artifacts": [art]},
    }
    status = {"phase": "Succeeded", "startedAt": now, "finishedAt": now, "nodes": {"node-0": node}}
    async with ctx.db.transaction() as s:
        await ctx.store.create(WORKFLOW, NAMESPACE, wf, session=s)
        await ctx.store.update_status(WORKFLOW, NAMESPACE, name, status, session=s)
    return f"/artifact-files/{NAMESPACE}/workflows/{name}/node-0/outputs/data"


# ------------------------------------------------------------------ the bench
def make_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 8 * MIB)
            f.write(os.urandom(n))
            left -= n


async def bench(
    args: argparse.Namespace, base: Path, cfg: S3Config
) -> tuple[dict[str, list[float]], str]:
    """Seconds per variant and round, and which client the peer used."""
    size = args.size_mib * MIB
    source = base / "source.bin"
    make_file(source, size)
    times: dict[str, list[float]] = {
        "up_platform": [],
        "up_peer": [],
        "down_step": [],
        "down_api": [],
        "down_peer": [],
    }
    peer_client = ""
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(ObjectStore(cfg))

        async def opened() -> ObjectStore:
            return store

        repo = ArtifactRepository(opened)
        app = None
        if not args.no_api:
            try:
                app = await stack.enter_async_context(pipeline_service(cfg, base / "pipeline"))
            except Exception as exc:  # noqa: BLE001 - the API variant is optional
                log.warning("the Argo artifact API variant is skipped: %s", exc)
        for i in range(args.rounds):
            prefix = ArtifactRepository.step_prefix(NAMESPACE, f"bench-{i}", "pod")
            ours, theirs = f"{prefix}/data", f"{prefix}/peer"
            form = await repo.upload_form(ours, 3600)
            output = {"name": "data", "path": str(source), "key": ours, "archive": "none"}
            plan: dict[str, Any] = {"outputArtifacts": [{**output, "upload": form}]}
            work = base / f"round-{i}"

            def up_platform(w: Path = work / "up", p: dict[str, Any] = plan) -> None:
                times["up_platform"].append(stepwrap(w, p))

            def up_peer(k: str = theirs) -> None:
                nonlocal peer_client
                seconds, peer_client = peer("upload", k, source, cfg)
                times["up_peer"].append(seconds)

            await alternate(i, up_platform, up_peer)
            for key in (ours, theirs):
                if (await store.head(key)).size != size:
                    raise RuntimeError(f"{key}: wrong size in the store")

            url = await store.presigned_get_url(ours, 3600)
            dest = work / "in.bin"
            down_plan: dict[str, Any] = {
                "inputs": [
                    {"name": "data", "path": str(dest), "objects": [{"url": url, "rel": ""}]}
                ]
            }

            def down_step(
                w: Path = work / "down", p: dict[str, Any] = down_plan, d: Path = dest
            ) -> None:
                times["down_step"].append(stepwrap(w, p))
                check_size(d, size)

            def down_peer(k: str = theirs, d: Path = work / "peer.bin") -> None:
                times["down_peer"].append(peer("download", k, d, cfg)[0])
                check_size(d, size)

            downloads: list[Callable[[], None]] = [down_step, down_peer]
            if app is not None:
                path = await finished_workflow(app, f"bench-{i}", ours, cfg.bucket)

                def down_api(
                    u: str = app.state.bench_url + path, d: Path = work / "api.bin"
                ) -> None:
                    headers = app.state.bench_minter.headers(namespace=NAMESPACE)
                    times["down_api"].append(api_download(u, headers, d))
                    check_size(d, size)

                downloads.insert(1, down_api)
            await alternate(i, *downloads)
            for key in (ours, theirs):
                await store.delete(key)
            log.info("  round %d/%d done", i + 1, args.rounds)
    return times, peer_client


async def alternate(i: int, *variants: Callable[[], None]) -> None:
    """Run the variants one after another, in reverse order on odd rounds, off the loop
    (the pipeline service answers on this loop while a subprocess downloads from it)."""
    order = variants if i % 2 == 0 else variants[::-1]
    for variant in order:
        await asyncio.to_thread(variant)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--no-api", action="store_true", help="skip the Argo artifact API")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-artifacts-") as tmp:
        base = Path(tmp)
        with embedded_store(base / "store") as cfg:
            times, client = await bench(args, base, cfg)
    peer_name = "boto3" if client == "boto3" else "boto3-like botocore (s3transfer)"
    mibs = {k: args.size_mib / statistics.median(v) for k, v in times.items() if v}
    up_ratio = mibs["up_platform"] / mibs["up_peer"]
    down_ratio = mibs["down_step"] / mibs["down_peer"]
    labels = {
        "up_platform": "upload: stepwrap presigned PUT",
        "up_peer": f"upload: {peer_name}",
        "down_step": "download: stepwrap presigned GET",
        "down_api": "download: Argo /artifact-files API",
        "down_peer": f"download: {peer_name}",
    }
    lines = [
        f"{args.size_mib} MiB object, {args.rounds} rounds, interleaved; medians",
        f"{'variant':<58}{'MiB/s':>9}{'median s':>10}",
    ]
    for name, label in labels.items():
        if name in mibs:
            lines.append(f"{label:<58}{mibs[name]:>9.1f}{statistics.median(times[name]):>10.2f}")
    checks = [("upload", up_ratio), ("download (step)", down_ratio)]
    if "down_api" in mibs:
        checks.append(("download (Argo API)", mibs["down_api"] / mibs["down_peer"]))
    else:
        lines.append("download through the Argo artifact API: skipped")
    failed = False
    for what, ratio in checks:
        ok = ratio >= args.target
        failed |= not ok
        lines.append(
            f"{what}: platform/peer {ratio:.2f}x  {'PASS' if ok else 'FAIL'} "
            f"(target >= {args.target:g}x)"
        )
    lines.append("FAIL" if failed else "PASS")
    for line in lines:
        log.info(line)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--peer":
        sys.exit(peer_main(sys.argv[2], sys.argv[3], sys.argv[4]))
    # The pipeline service's start-up (migrations, NATS) logs at INFO: only the bench's lines.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    log.setLevel(logging.INFO)
    sys.exit(asyncio.run(main()))
