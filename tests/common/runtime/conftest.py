"""Runtime fixtures: the contract suite runs once per implementation listed here.

To run the suite against another implementation, add a factory to ``RUNTIME_FACTORIES``:
an async context manager that yields a ready Runtime (and cleans up after itself).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.common.runtime import LocalRuntime, Runtime


@contextlib.asynccontextmanager
async def local_runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    # Short restart back-off keeps the restart test fast; the contract does not fix its length.
    runtime = LocalRuntime(tmp_path / "state", backoff_base=0.1, backoff_max=1.0)
    try:
        yield runtime
    finally:
        await runtime.shutdown()


RUNTIME_FACTORIES: dict[str, Callable[[Path], Any]] = {
    "local": local_runtime,
    # "kubernetes": kubernetes_runtime,  # when services/common/runtime/kubernetes.py exists
}


@pytest.fixture(params=sorted(RUNTIME_FACTORIES))
async def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    async with RUNTIME_FACTORIES[request.param](tmp_path) as rt:
        yield rt


@pytest.fixture
def namespace() -> str:
    """A namespace of its own per test, so tests never see each other's workloads."""
    return f"rt-{uuid.uuid4().hex[:10]}"
