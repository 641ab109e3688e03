"""A real notebook service (uvicorn on a free port) on the test Postgres and NATS.

The resource machinery is tested through the notebook service's kinds
(PersistentVolumeClaim in the core group, Notebook in kubeflow.org), because the
official kubernetes client needs a real HTTP server to talk to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from services.common.identity import AssertionMinter
from services.notebook.app import create_app
from services.notebook.settings import Settings
from tests.conftest import free_port

NAMESPACE = "team-a"


@dataclass
class RunningService:
    url: str
    minter: AssertionMinter
    app: object
    state_dir: Path

    def headers(self, namespace: str = NAMESPACE, role: str = "admin") -> dict[str, str]:
        return self.minter.headers(namespace=namespace, role=role)


async def start_service(settings: Settings) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port,
                                           log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            return server, task
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    raise RuntimeError("service did not start")


@pytest.fixture(scope="module")
async def notebook_service(pg_url: str, nats_url: str,
                           tmp_path_factory: pytest.TempPathFactory
                           ) -> AsyncIterator[RunningService]:
    minter = AssertionMinter()
    port = free_port()
    state_dir = Path(tmp_path_factory.mktemp("state"))
    settings = Settings(database_url=pg_url, nats_url=nats_url, port=port, state_dir=state_dir,
                        gateway_public_key=minter.public_pem.decode())
    server, task = await start_service(settings)
    yield RunningService(f"http://127.0.0.1:{port}", minter, server.config.app, state_dir)
    server.should_exit = True
    await asyncio.wait_for(task, 15)
