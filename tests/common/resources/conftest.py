"""Real services (uvicorn on a free port) on the test Postgres and NATS.

``widget_service`` serves test-only kinds with no controllers (see widgets.py): the
resource machinery is tested through it, over HTTP, because the official kubernetes
client needs a real server. ``notebook_service`` is the real notebook service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from services.common.identity import AssertionMinter
from services.common.settings import ServiceSettings
from services.notebook.app import create_app
from services.notebook.settings import Settings
from tests.common.resources import widgets
from tests.conftest import free_port, fresh_database, serve_app

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
    return await serve_app(create_app(settings), settings.port)


@pytest.fixture(scope="module")
def notebook_db() -> Iterator[str]:
    """Its own database: the platform's notebook service must not reconcile these objects."""
    with fresh_database("shipyard_test_nb") as url:
        yield url


@pytest.fixture(scope="module")
async def notebook_service(
    notebook_db: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningService]:
    minter = AssertionMinter()
    port = free_port()
    state_dir = Path(tmp_path_factory.mktemp("state"))
    settings = Settings(
        database_url=notebook_db,
        nats_url=nats_url,
        port=port,
        state_dir=state_dir,
        gateway_public_key=minter.public_pem.decode(),
    )
    server, task = await start_service(settings)
    yield RunningService(f"http://127.0.0.1:{port}", minter, server.config.app, state_dir)
    server.should_exit = True
    await asyncio.wait_for(task, 15)


@pytest.fixture(scope="module")
async def widget_service(
    pg_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningService]:
    minter = AssertionMinter()
    port = free_port()
    state_dir = Path(tmp_path_factory.mktemp("widgets"))
    settings = ServiceSettings(
        service_name="widgets",
        database_url=pg_url,
        nats_url=nats_url,
        port=port,
        state_dir=state_dir,
        gateway_public_key=minter.public_pem.decode(),
    )
    server, task = await serve_app(widgets.create_app(settings), port)
    yield RunningService(f"http://127.0.0.1:{port}", minter, server.config.app, state_dir)
    server.should_exit = True
    await asyncio.wait_for(task, 15)
