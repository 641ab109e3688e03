"""Runtime fixtures: the contract suite runs once per implementation listed here.

To run the suite against another implementation, add a factory to ``RUNTIME_FACTORIES``: an
async context manager that takes a scratch directory and yields a :class:`Backend`, the place
a runtime keeps its state. ``Backend.open()`` makes a Runtime on it; opening a second one is
what a restarted service does (the adoption tests do it).

``kubernetes`` runs against an emulated API server and a test-only kubelet (cluster.py); set
``SHIPYARD_TEST_KUBECONFIG`` to a kubeconfig to run it against that cluster instead.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from services.common.runtime import LocalRuntime, Runtime

from .cluster import EmulatedCluster, RealCluster, real_kubeconfig


class Backend(Protocol):
    async def open(self) -> Runtime:
        """A new Runtime on this backend's state (the first, or one after a restart)."""


class _Opened:
    """Keeps the runtimes a backend opened, to close them all at the end."""

    def __init__(self) -> None:
        self.runtimes: list[Runtime] = []

    def keep(self, runtime: Runtime) -> Runtime:
        self.runtimes.append(runtime)
        return runtime

    async def close_all(self) -> None:
        if self.runtimes:
            await self.runtimes[0].shutdown()
        for runtime in self.runtimes:
            await runtime.close()


class LocalBackend(_Opened):
    def __init__(self, state: Path) -> None:
        super().__init__()
        self.state = state

    async def open(self) -> Runtime:
        # Short restart back-off keeps the restart test fast; the contract does not fix it.
        return self.keep(LocalRuntime(self.state, backoff_base=0.1, backoff_max=1.0))


class KubernetesBackend(_Opened):
    def __init__(self, cluster: EmulatedCluster | RealCluster) -> None:
        super().__init__()
        self.cluster = cluster

    async def open(self) -> Runtime:
        if isinstance(self.cluster, EmulatedCluster):
            return self.keep(self.cluster.runtime())
        return self.keep(await self.cluster.runtime())


@contextlib.asynccontextmanager
async def local_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = LocalBackend(tmp_path / "state")
    try:
        yield backend
    finally:
        await backend.close_all()


@contextlib.asynccontextmanager
async def kubernetes_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    kubeconfig = real_kubeconfig()
    cluster: EmulatedCluster | RealCluster = (
        RealCluster(kubeconfig) if kubeconfig else EmulatedCluster(tmp_path / "node")
    )
    async with cluster:
        backend = KubernetesBackend(cluster)
        try:
            yield backend
        finally:
            await backend.close_all()


RUNTIME_FACTORIES: dict[str, Callable[[Path], Any]] = {
    "local": local_backend,
    "kubernetes": kubernetes_backend,
}


@pytest.fixture(params=sorted(RUNTIME_FACTORIES))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with RUNTIME_FACTORIES[request.param](tmp_path) as made:
        yield made


@pytest.fixture
async def runtime(backend: Backend) -> Runtime:
    return await backend.open()


@pytest.fixture
async def namespace(runtime: Runtime) -> AsyncIterator[str]:
    """A namespace of its own per test, made as a profile's is (ensure_namespace)."""
    name = f"rt-{uuid.uuid4().hex[:10]}"
    await runtime.ensure_namespace(name, "tester@example.com")
    yield name
    with contextlib.suppress(Exception):
        await runtime.delete_namespace(name)
