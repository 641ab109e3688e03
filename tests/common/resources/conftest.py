"""Real services (uvicorn on a free port) on the test Postgres and NATS.

``widget_service`` serves test-only kinds with no controllers (see widgets.py): the
resource machinery is tested through it, over HTTP, because the official kubernetes
client needs a real server. ``notebook_service`` is the real notebook service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.settings import ServiceSettings
from services.notebook.app import create_app
from services.notebook.settings import Settings
from tests.common.resources import widgets
from tests.conftest import InProcessService, own_service_fixture, service_in_process

NAMESPACE = "team-a"

# The in-process service these tests get (url, minter, app, state_dir, headers()).
RunningService = InProcessService


# Its own database: the platform's notebook service must not reconcile these objects.
notebook_service = own_service_fixture(
    create_app, Settings, "shipyard_test_nb", namespace=NAMESPACE
)


@pytest.fixture(scope="module")
async def widget_service(
    pg_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningService]:
    async with service_in_process(
        widgets.create_app,
        ServiceSettings,
        service_name="widgets",
        database_url=pg_url,
        nats_url=nats_url,
        state_dir=Path(tmp_path_factory.mktemp("widgets")),
        namespace=NAMESPACE,
    ) as service:
        yield service
