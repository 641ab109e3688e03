"""Culling: a real notebook service with a small idle limit stops a real, idle Jupyter server.

The service runs in-process on its own database (two notebook services on one database
would both run every notebook), with the gateway's identity assertions minted by the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.notebook.app import create_app
from services.notebook.culling import last_activity
from services.notebook.settings import Settings
from tests import specs
from tests.conftest import InProcessService, own_service_fixture

NAMESPACE = "cull-test"
NOTEBOOKS = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/notebooks"
IDLE_SECONDS = 3


notebook_service = own_service_fixture(
    create_app,
    Settings,
    "shipyard_cull",
    namespace=NAMESPACE,
    notebook_cull_idle_seconds=IDLE_SECONDS,
    notebook_cull_check_period_seconds=0.5,
)


@pytest.fixture(scope="module")
async def culling_service(
    notebook_service: InProcessService,
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=notebook_service.url, timeout=20, headers=notebook_service.headers()
    ) as http:
        yield http


async def poll(http: httpx.AsyncClient, name: str, want: Any, within: float = 30) -> dict:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        nb = (await http.get(f"{NOTEBOOKS}/{name}")).json()
        if want(nb):
            return nb
        await asyncio.sleep(0.1)
    raise AssertionError(f"notebook {name} never reached the expected state: {nb}")


def is_ready(nb: dict) -> bool:
    return (nb.get("status") or {}).get("readyReplicas") == 1


@pytest.mark.timeout(90)
async def test_cull_idle_notebook_then_restart_fresh(culling_service: httpx.AsyncClient) -> None:
    http = culling_service
    body = specs.notebook("idle", "x")
    assert (await http.post(NOTEBOOKS, json=body)).status_code == 201
    nb = await poll(http, "idle", is_ready)
    started = time.monotonic()
    nb = await poll(
        http,
        "idle",
        lambda nb: "kubeflow-resource-stopped" in (nb["metadata"].get("annotations") or {}),
        within=IDLE_SECONDS + 15,
    )
    assert time.monotonic() - started >= IDLE_SECONDS - 1  # not culled before its time
    nb = await poll(
        http,
        "idle",
        lambda nb: (
            (nb.get("status") or {}).get("readyReplicas") == 0 and "endpoint" not in nb["status"]
        ),
    )
    culled_activity = nb["metadata"]["annotations"]["notebooks.kubeflow.org/last-activity"]

    # Starting it again resets the idle clock (kubeflow#6648): it is not culled at once.
    await asyncio.sleep(1.1)  # the annotation keeps whole seconds
    start = {"metadata": {"annotations": {"kubeflow-resource-stopped": None}}}
    assert (
        await http.patch(
            f"{NOTEBOOKS}/idle",
            json=start,
            headers={"content-type": "application/merge-patch+json"},
        )
    ).is_success
    nb = await poll(http, "idle", is_ready)
    assert nb["metadata"]["annotations"]["notebooks.kubeflow.org/last-activity"] > culled_activity
    await asyncio.sleep(1.0)
    nb = (await http.get(f"{NOTEBOOKS}/idle")).json()
    assert "kubeflow-resource-stopped" not in nb["metadata"]["annotations"]
    assert (await http.delete(f"{NOTEBOOKS}/idle")).status_code == 200
    await poll(http, "idle", lambda nb: nb.get("code") == 404)


def test_last_activity_counts_terminals_and_busy_kernels() -> None:
    """kubeflow#6920: a terminal in use is activity; a busy kernel is activity now."""
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    old, recent = "2026-01-01T10:00:00.000000Z", "2026-01-01T11:59:00.123456Z"
    idle_kernel = {"execution_state": "idle", "last_activity": old}
    assert last_activity([idle_kernel], [{"name": "1", "last_activity": recent}], now) == (
        now - timedelta(seconds=59, microseconds=876544)
    )
    assert last_activity([idle_kernel], [], now) == now - timedelta(hours=2)
    assert last_activity([{**idle_kernel, "execution_state": "busy"}], [], now) == now
    assert last_activity([], [], now) is None
