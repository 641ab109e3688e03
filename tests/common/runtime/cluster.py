"""Where the Kubernetes runtime's tests run: an emulated cluster, or a real one if given.

There is no kube-apiserver on these machines. :class:`EmulatedCluster` is kmock's
``KubernetesEmulator`` (extended in ``apiserver.py``) on a local port, with the test-only
kubelet of ``kubelet.py`` running its pods through the LocalRuntime. :class:`RealCluster`
is any cluster a kubeconfig names (``SHIPYARD_TEST_KUBECONFIG``); see test_kubernetes.py
for how to run the suite that way.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import kmock
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration

from services.common.runtime.kubernetes import KubernetesRuntime

from .apiserver import ApiServer
from .kubelet import Kubelet

#: A kubeconfig: run the Kubernetes tests against that cluster instead of the emulator.
REAL_CLUSTER_ENV = "SHIPYARD_TEST_KUBECONFIG"


class EmulatedCluster:
    """An emulated API server and one emulated node; ``runtime()`` makes runtimes on it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.server = ApiServer()
        self._http = kmock.Server(self.server)
        self.kubelet: Kubelet | None = None
        self._clients: list[ApiClient] = []

    @property
    def url(self) -> str:
        return str(self._http.url).rstrip("/")

    async def __aenter__(self) -> EmulatedCluster:
        await self.server.__aenter__()
        await self._http.__aenter__()
        self.kubelet = Kubelet(self.server, self.url, self.state_dir)
        await self.kubelet.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for client in self._clients:
            await client.close()
        if self.kubelet is not None:
            await self.kubelet.close()
        await self._http.__aexit__(exc_type, exc, tb)
        await self.server.__aexit__(exc_type, exc, tb)

    async def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST an object to the emulated API server, as any other client of it would."""
        async with aiohttp.ClientSession(self.url) as session:
            async with session.post(collection, json=body) as response:
                response.raise_for_status()
                return dict(await response.json())

    async def create_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None:
        await self.create(
            f"/api/v1/namespaces/{namespace}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data},
        )

    async def create_foreign_pod(self, namespace: str, name: str) -> None:
        """A pod shipyard did not make (no labels of ours), held back so it never runs."""
        await self.create(
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": "someone-else"}},
                "spec": {
                    "schedulingGates": [{"name": "example.com/not-yet"}],
                    "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
                },
            },
        )

    def api_client(self) -> ApiClient:
        client = ApiClient(Configuration(host=self.url))
        self._clients.append(client)
        return client

    def runtime(self, **settings: Any) -> KubernetesRuntime:
        """A runtime on this cluster (another one = the service restarted)."""
        assert self.kubelet is not None
        settings.setdefault("platform_image", "ghcr.io/shipyard/shipyard:test")
        return KubernetesRuntime(
            api_client=self.api_client(), endpoint_for=self.kubelet.resolve_service, **settings
        )


class RealCluster:
    """A cluster named by a kubeconfig. Servers are reached at their Service DNS names, so
    the tests that call a server must run inside the cluster's network."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self._clients: list[ApiClient] = []

    async def __aenter__(self) -> RealCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients:
            await client.close()

    async def api_client(self) -> ApiClient:
        configuration = Configuration()
        await config.load_kube_config(
            config_file=self.kubeconfig, client_configuration=configuration
        )
        client = ApiClient(configuration)
        self._clients.append(client)
        return client

    async def runtime(self, **settings: Any) -> KubernetesRuntime:
        return KubernetesRuntime(api_client=await self.api_client(), **settings)


def real_kubeconfig() -> str | None:
    return os.environ.get(REAL_CLUSTER_ENV) or None
