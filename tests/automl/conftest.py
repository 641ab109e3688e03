"""A real automl service (uvicorn on a free port) on the test Postgres and NATS, local runtime.

Trials run as real sandboxed processes through the local runtime. Requests carry an identity
assertion minted with the test key (``AssertionMinter``), as the gateway would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.automl.app import create_app
from services.automl.settings import Settings
from services.common.identity import AssertionMinter
from tests import specs
from tests.conftest import InProcessService, free_port, serve_app, service_in_process

NAMESPACE = "kubeflow-user-example-com"
ROOT = Path(__file__).resolve().parents[2]
API = f"/apis/kubeflow.org/v1beta1/namespaces/{NAMESPACE}"


@dataclass
class AutoML:
    url: str
    minter: AssertionMinter
    client: httpx.AsyncClient
    app: Any
    state_dir: Path

    @classmethod
    @contextlib.asynccontextmanager
    async def client_of(cls, service: InProcessService) -> AsyncIterator[AutoML]:
        """The automl ``service`` (running in this loop), with a client of its own."""
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            yield cls(service.url, service.minter, client, service.app, service.state_dir)

    def headers(self, namespace: str = NAMESPACE) -> dict[str, str]:
        return self.minter.headers(namespace=namespace, role="admin")

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        r = await self.request("POST", f"{API}/{plural}", json=obj)
        assert r.status_code == 201, r.text
        return r.json()

    async def get(self, plural: str, name: str) -> dict[str, Any]:
        r = await self.request("GET", f"{API}/{plural}/{name}")
        assert r.status_code == 200, r.text
        return r.json()

    async def trials(self, experiment: str) -> list[dict[str, Any]]:
        r = await self.request(
            "GET", f"{API}/trials", params={"labelSelector": f"experiment={experiment}"}
        )
        assert r.status_code == 200, r.text
        return r.json()["items"]

    async def run_experiment(self, prefix: str, code: str, **options: Any) -> dict[str, Any]:
        """Create a ``python_experiment`` named ``prefix``-<random> whose trials run ``code``;
        the experiment once finished (its name in ``metadata.name``)."""
        name = unique(prefix)
        await self.create("experiments", python_experiment(name, code, **options))
        return await self.wait_finished(name)

    async def wait_finished(self, name: str, timeout: float = 90) -> dict[str, Any]:  # noqa: ASYNC109
        """Wait until the experiment is Succeeded or Failed; return it."""
        async with asyncio.timeout(timeout):
            while True:
                exp = await self.get("experiments", name)
                types = {
                    c["type"]
                    for c in exp.get("status", {}).get("conditions", [])
                    if c["status"] == "True"
                }
                if types & {"Succeeded", "Failed"}:
                    return exp
                await asyncio.sleep(0.2)


def reason_of(exp: dict[str, Any]) -> tuple[str, str]:
    last = [c for c in exp["status"]["conditions"] if c["status"] == "True"][-1]
    return last["type"], last["reason"]


def seed_experiment(name: str = "random-example") -> dict[str, Any]:
    """The seed experiment from examples/, as a user applies it."""
    obj = yaml.safe_load((ROOT / "examples" / "automl" / "random-example.yaml").read_text())
    obj["metadata"]["name"] = name
    return obj


def python_experiment(name: str, code: str, **options: Any) -> dict[str, Any]:
    """An experiment whose trial runs ``python -c code`` with each parameter as an argument
    (tests/specs.py)."""
    return specs.python_experiment(name, code, **options)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """How many of the (start, end) ``intervals`` overlap at the most."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, delta in points:
        cur += delta
        best = max(best, cur)
    return best


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def start_automl(settings: Settings) -> tuple[Any, asyncio.Task[None], Any]:
    """An automl service on ``settings.port`` (tests that run several replicas use it)."""
    app = create_app(settings)
    server, task = await serve_app(app, settings.port)
    return server, task, app


@pytest.fixture(scope="package")
def automl_db() -> Iterator[str]:
    """This package's own database: automl services on one database are replicas of one
    deployment (one leads, see services/automl/leader.py), so the service under test must
    not share ``pg_url`` with the platform's automl service."""
    from tests.conftest import fresh_database

    with fresh_database("shipyard_automl") as url:
        yield url


@pytest.fixture(scope="package")
async def automl(
    automl_db: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AutoML]:
    port = free_port()
    state_dir = Path(tmp_path_factory.mktemp("automl-state"))
    async with service_in_process(
        create_app,
        Settings,
        database_url=automl_db,
        nats_url=nats_url,
        state_dir=state_dir,
        namespace=NAMESPACE,
        port=port,
        # No gateway here: the sandbox's one egress (the API) leads to the service itself,
        # which takes a trial's pushed metrics on its trial token alone.
        gateway_url=f"http://127.0.0.1:{port}",
        resync_seconds=5,
        events_durable=f"automl-test-{uuid.uuid4().hex[:8]}",
    ) as service:
        async with AutoML.client_of(service) as automl:
            yield automl
    runtime_dir = state_dir / "runtime"
    if runtime_dir.exists():  # stop any trial a failing test left running
        from services.common.runtime import LocalRuntime

        rt = LocalRuntime(state_dir)
        await rt.stop_all()
        await rt.close()


def assert_invalid(r: httpx.Response, field: str, text: str) -> None:
    """``r`` is a 422 Kubernetes Status (reason Invalid) with a cause at ``field`` whose
    message holds ``text``."""
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid", body
    causes = body["details"]["causes"]
    assert any(c["field"] == field and text in c["message"] for c in causes), causes
