"""The gateway's address as a runtime's workloads reach it (``Runtime.workload_gateway_url``),
and the transformer's ``--predictor_host`` built from it.

Each runtime answers for its own workloads: the local one with the API address of the
sandbox's network that its supervisor relays to the gateway, the Kubernetes one with the
gateway URL its pods get; both are the ``$SHIPYARD_URL`` the workload really gets. The
serving service asks the runtime and knows nothing of a sandbox
(tests/common/test_runtime_seam.py keeps the sandbox's module out of every caller).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.common.runtime import LocalRuntime
from services.common.runtime.kubernetes import KubernetesRuntime
from services.common.runtime.sandbox import API_ADDRESS
from services.serving.components import predictor_host

from .conftest import isvc

GATEWAY = "http://10.1.2.3:8080"


def _env(namespace: str) -> dict[str, str]:
    return {"SHIPYARD_URL": GATEWAY, "SHIPYARD_NAMESPACE": namespace}


def fronted(namespace: str = "team") -> dict[str, Any]:
    obj = isvc("m", {"sklearn": {"storageUri": "pvc://c/m"}})
    obj["metadata"]["namespace"] = namespace
    obj["spec"]["transformer"] = {"containers": [{"name": "t", "image": "t:1"}]}
    return obj


def test_local_runtime_answers_its_relay_address(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path, workload_env=_env)
    host, port = API_ADDRESS
    assert runtime.workload_gateway_url("team") == f"http://{host}:{port}"
    # What a workload gets is the same address, relayed to the gateway the service names.
    env: dict[str, str] = {}
    egress = runtime._platform_env("team", env, None)
    assert env["SHIPYARD_URL"] == runtime.workload_gateway_url("team")
    assert {"listen": [host, port], "connect": ["10.1.2.3", 8080]} in egress
    assert predictor_host(runtime, "http://gateway.example:9999", fronted()) == (
        f"{host}:{port}/serving/team/m-predictor"
    )


def test_local_runtime_without_gateway_answers_none(tmp_path: Path) -> None:
    """No platform environment (a runtime built without a service's settings), or one
    without a gateway: no relay, so no address; predictor_host falls back to the service's
    own gateway URL."""
    assert LocalRuntime(tmp_path / "a").workload_gateway_url("team") is None
    bare = LocalRuntime(tmp_path / "b", workload_env=lambda ns: {"SHIPYARD_NAMESPACE": ns})
    assert bare.workload_gateway_url("team") is None
    env: dict[str, str] = {}
    assert bare._platform_env("team", env, None) == []
    assert "SHIPYARD_URL" not in env
    assert predictor_host(bare, "http://gateway.example:9999", fronted()) == (
        "gateway.example:9999/serving/team/m-predictor"
    )


def test_kubernetes_runtime_answers_its_pods_gateway_url() -> None:
    class Settings:
        gateway_url = "http://127.0.0.1:8080"  # where the service itself reaches it

    kube = KubernetesRuntime(Settings(), kube_gateway_url="http://gateway.shipyard.svc:8000")
    assert kube.workload_gateway_url("team") == "http://gateway.shipyard.svc:8000"
    assert kube.options.platform_env == {"SHIPYARD_URL": "http://gateway.shipyard.svc:8000"}
    assert predictor_host(kube, Settings.gateway_url, fronted("other")) == (
        "gateway.shipyard.svc:8000/serving/other/m-predictor"
    )
    # Without kube_gateway_url, pods get the service's own gateway URL.
    plain = KubernetesRuntime(Settings())
    assert plain.workload_gateway_url("team") == "http://127.0.0.1:8080"
    assert plain.options.platform_env == {"SHIPYARD_URL": "http://127.0.0.1:8080"}


def test_predictor_host_without_transformer_is_the_isvc_path(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path, workload_env=_env)
    obj = fronted()
    del obj["spec"]["transformer"]
    host, port = API_ADDRESS
    assert predictor_host(runtime, GATEWAY, obj) == f"{host}:{port}/serving/team/m"
