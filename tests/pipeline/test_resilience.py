"""SIGKILL of a real pipeline-service process mid-run, then a restart: the run resumes, no
finished step runs again, and the step that was running is re-adopted (not restarted)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.identity import AssertionMinter
from services.common.runtime import LocalRuntime
from tests import specs
from tests.conftest import free_port, fresh_database

ROOT = Path(__file__).resolve().parents[2]
NS = "pl-resilience"


@pytest.fixture
def fresh_db() -> Iterator[str]:
    """A database of its own: no other pipeline service may reconcile these workflows."""
    with fresh_database("shipyard_test_pl") as url:
        yield url


class ServiceProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.pipeline"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def wait_until(client: httpx.AsyncClient, path: str, check: Any, timeout: float) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = await client.get(path)
            if r.status_code == 200:
                last = r.json()
                if check(last):
                    return last
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met in {timeout}s; last: {last}")


async def test_kill_service_mid_run_resumes_without_rerun(
    fresh_db: str, nats_url: str, tmp_path: Path
) -> None:
    minter = AssertionMinter()
    port = free_port()
    state = tmp_path / "state"
    env = {
        **os.environ,
        "SHIPYARD_DATABASE_URL": fresh_db,
        "NATS_URL": nats_url,
        "SHIPYARD_PORT": str(port),
        "SHIPYARD_STATE_DIR": str(state),
        "SHIPYARD_GATEWAY_PUBLIC_KEY": minter.public_pem.decode(),
        "SHIPYARD_LOG_LEVEL": "WARNING",
    }
    runtime = LocalRuntime(state)
    await runtime.create_volume(NS, "marks")
    marks = await runtime.resolve_volume(NS, "marks")
    service = ServiceProcess(env, tmp_path / "service.log")
    service.start()

    wf = specs.counted_workflow("survivor", "marks", {"a": "", "b": "sleep 3", "c": ""}, dag=True)
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows"
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=minter.headers(namespace=NS), timeout=10
        ) as c:
            await wait_until(c, "/healthz", lambda body: True, 30)
            r = await c.post(path, json=wf)
            assert r.status_code == 201, r.text

            def b_running(obj: dict[str, Any]) -> bool:
                nodes = (obj.get("status") or {}).get("nodes") or {}
                return any(
                    n["displayName"] == "b" and n["phase"] == "Running" for n in nodes.values()
                )

            await wait_until(c, f"{path}/survivor", b_running, 30)
            service.kill()
            await asyncio.sleep(0.5)
            service.start()
            done = await wait_until(
                c,
                f"{path}/survivor",
                lambda o: (o.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Error"),
                60,
            )
        assert done["status"]["phase"] == "Succeeded", done["status"]
        for name in ("a", "b", "c"):
            assert (marks / name).read_text().splitlines() == ["ran"], name
    finally:
        service.stop()
        await runtime.shutdown()
