"""Two ways to reach a real pipeline service.

``pipeline``: the service alone (uvicorn in-process on a free port) on a Postgres database of
its own and the test NATS, with the local runtime (bubblewrap sandbox) in a temporary state
directory. Requests carry an identity assertion minted by a test key pair, as the gateway
would send. Used for the engine's own behaviour.

``gateway``: the whole platform (``tests.conftest.platform``: four services and the gateway as
real processes, single-user mode), reached only through the gateway, the way kfp.Client and
hera reach it. Used for the real-client tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.identity import AssertionMinter
from services.common.settings import SINGLE_USER_NAMESPACE
from services.pipeline.app import create_app
from services.pipeline.settings import Settings
from tests.conftest import InProcessService, own_service_fixture

WF_PATH = "/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows"


class WorkflowDoor:
    """Workflow calls over HTTP; subclasses say where to and with which headers."""

    url: str

    def headers(self, namespace: str) -> dict[str, str]:
        raise NotImplementedError

    def client(self, namespace: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self.headers(namespace), timeout=30)

    async def submit(self, namespace: str, workflow: dict[str, Any]) -> dict[str, Any]:
        async with self.client(namespace) as c:
            r = await c.post(WF_PATH.format(ns=namespace), json=workflow)
        assert r.status_code == 201, r.text
        return r.json()

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        async with self.client(namespace) as c:
            r = await c.get(f"{WF_PATH.format(ns=namespace)}/{name}")
        assert r.status_code == 200, r.text
        return r.json()

    async def wait(
        self,
        namespace: str,
        name: str,
        timeout: float = 60,  # noqa: ASYNC109
        phases: tuple[str, ...] = ("Succeeded", "Failed", "Error"),
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            wf = await self.get(namespace, name)
            if wf.get("status", {}).get("phase") in phases:
                return wf
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"workflow {name} still {wf.get('status', {}).get('phase')}: {wf.get('status')}"
                )
            await asyncio.sleep(0.1)

    async def run(
        self,
        namespace: str,
        workflow: dict[str, Any],
        timeout: float = 60,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        created = await self.submit(namespace, workflow)
        return await self.wait(namespace, created["metadata"]["name"], timeout)

    async def run_succeeded(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``run``, for a workflow that must succeed; the finished Workflow."""
        done = await self.run(*args, **kwargs)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        return done


@dataclass
class PipelineService(WorkflowDoor):
    """The pipeline service alone; requests carry a minted gateway assertion."""

    url: str
    minter: AssertionMinter
    app: Any
    state_dir: Path
    settings: Settings

    def headers(self, namespace: str) -> dict[str, str]:
        return self.minter.headers(namespace=namespace, role="admin")

    @property
    def runtime(self) -> Any:
        return self.app.state.ctx.runtime


@dataclass
class Gateway(WorkflowDoor):
    """The real platform's gateway in single-user mode: no credentials, one namespace."""

    url: str
    state_dir: Path
    namespace: str = SINGLE_USER_NAMESPACE

    def headers(self, namespace: str) -> dict[str, str]:
        return {}


# A database of its own, so the platform's pipeline service (on the session database)
# never reconciles this service's workflows, nor this one the platform's.
pipeline_service = own_service_fixture(
    create_app, Settings, "shipyard_test_pl", scope="session", object_store=True
)


@pytest.fixture(scope="session")
def pipeline(pipeline_service: InProcessService) -> PipelineService:
    service = pipeline_service
    return PipelineService(
        service.url, service.minter, service.app, service.state_dir, service.settings
    )


@pytest.fixture(scope="session")
def gateway(platform: Any) -> Gateway:
    return Gateway(platform.gateway_url, platform.state_dir)


@pytest.fixture
def namespace() -> str:
    """A namespace per test, so tests never see each other's workflows."""
    return f"pl-{uuid.uuid4().hex[:8]}"


def nodes_by_display(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["displayName"]: n for n in wf["status"]["nodes"].values()}


def root_result(wf: dict[str, Any]) -> Any:
    """The ``outputs.result`` of a Workflow's root node (a one-step workflow's output)."""
    return wf["status"]["nodes"][wf["metadata"]["name"]]["outputs"]["result"]


@pytest.fixture
def kfp_client(gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``kfp.Client(host=<gateway>, existing_token=...)``, as a user would make it."""
    import kfp

    # No context file from the machine running the tests: the namespace must come from the
    # gateway (single-user mode), not from a stale ~/.config/kfp/context.json.
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-context.json"))
    return kfp.Client(host=gateway.url, existing_token="any-token-single-user")


def compile_to(func: Any, path: Path) -> str:
    """Compile a kfp pipeline function to IR YAML with kfp.compiler; return the path."""
    from kfp import compiler

    compiler.Compiler().compile(func, str(path))
    return str(path)


def unique(prefix: str) -> str:
    """Names per test: every gateway test shares the single-user namespace."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A blocking client call (kfp, hera) off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)
