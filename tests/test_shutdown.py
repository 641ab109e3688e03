"""An orderly platform stop (what Ctrl-C on `make up` does) ends the platform's workloads."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from services.common.runtime import LocalRuntime, WorkloadStatus
from services.common.settings import SINGLE_USER_NAMESPACE as NS
from tests import specs
from tests.conftest import RunningSeaweedFS, running_platform

WORKFLOW = specs.workflow(
    "long-sleep",
    [{"name": "main", "container": {"image": "busybox", "command": ["sleep", "300"]}}],
)


def test_platform_stop_ends_workloads(
    own_db: str, nats_url: str, seaweedfs: RunningSeaweedFS, tmp_path: Path
) -> None:
    runtime = LocalRuntime(tmp_path / "state")
    with running_platform(
        tmp_path / "state", database_url=own_db, nats_url=nats_url, s3=seaweedfs.config
    ) as platform:
        url = f"{platform.gateway_url}/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows"
        assert httpx.post(url, json=WORKFLOW, timeout=10).status_code == 201
        deadline = time.monotonic() + 60
        running: list[WorkloadStatus] = []
        while time.monotonic() < deadline and not running:
            running = [
                s
                for s in asyncio.run(runtime.list({"shipyard.io/service": "pipeline"}))
                if s.phase == "Running"
            ]
            time.sleep(0.2)
        assert running, "the workflow's step never started"
    statuses = asyncio.run(runtime.list({"shipyard.io/service": "pipeline"}))
    assert statuses and all(s.finished for s in statuses), statuses
