"""The local runtime gives every workload with a token the standard in-cluster layout:
``KUBERNETES_SERVICE_*``, ``ca.crt`` beside the token, the ``kubernetes`` Service names and
kfp's ``ml-pipeline`` name in /etc/hosts, relayed to the gateway's TLS and HTTP ports.

Stand-in "gateway" listeners on the host (stdlib servers) answer with what they saw, so the
test shows exactly which relay a connection took, and that TLS was verified inside the
sandbox with ``ca.crt`` alone.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.certs import ensure_api_certificate, read_ca_certificate
from services.common.runtime import LocalRuntime
from services.common.runtime.incluster import InClusterAPI

SCRIPT = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
def get(url, **kw):
    return urllib.request.urlopen(url, timeout=10, **kw).read().decode()
print(json.dumps({
    "by_ip": get(f"https://{host}:{port}/api/v1", context=ctx),
    "by_name": get("https://kubernetes.default.svc/apis", context=ctx),
    "pipelines": get("http://ml-pipeline.kubeflow.svc.cluster.local:8888/apis/v2beta1/runs"),
    "files": sorted(os.listdir(sa)),
    "namespace": open(sa + "/namespace").read(),
    "same_token": open(sa + "/token").read() == open(os.environ["KF_PIPELINES_SA_TOKEN_PATH"])
    .read(),
    "env": {k: v for k, v in os.environ.items() if k.startswith(("KUBERNETES_", "KF_"))},
}))
"""


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers ``<listener> <path>``."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = f"{self.server.label} {self.path}".encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def listener(label: str, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.label = label  # type: ignore[attr-defined]
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


async def test_job_reaches_api_over_verified_tls_and_pipelines_by_name(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    cert = ensure_api_certificate(keys, ["127.0.0.2"])
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert.cert, cert.key)
    with listener("tls", tls) as tls_port, listener("http") as http_port:
        in_cluster = InClusterAPI("127.0.0.1", http_port, tls_port, read_ca_certificate(keys))
        runtime = LocalRuntime(
            tmp_path / "state",
            workload_tokens=lambda ns, binding: f"token-of-{ns}",
            in_cluster=in_cluster,
        )
        try:
            await runtime.apply(
                {"namespace": "team-a", "name": "probe", "command": ["python3", "-c", SCRIPT]}
            )
            status = await runtime.wait("team-a", "probe", timeout=60)
            out = "\n".join([line async for line in runtime.logs("team-a", "probe")])
            assert status.phase.value == "Succeeded", out
        finally:
            await runtime.shutdown()
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["by_ip"] == "tls /api/v1"
    assert seen["by_name"] == "tls /apis"
    assert seen["pipelines"] == "http /apis/v2beta1/runs"
    assert seen["files"] == ["ca.crt", "namespace", "token"]
    assert seen["namespace"] == "team-a" and seen["same_token"] is True
    assert seen["env"] == {
        "KUBERNETES_SERVICE_HOST": "127.0.0.2",
        "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        "KUBERNETES_PORT": "tcp://127.0.0.2:443",
        "KUBERNETES_PORT_443_TCP": "tcp://127.0.0.2:443",
        "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        "KUBERNETES_PORT_443_TCP_PORT": "443",
        "KUBERNETES_PORT_443_TCP_ADDR": "127.0.0.2",
        "KF_PIPELINES_SA_TOKEN_PATH": "/var/run/secrets/kubeflow/pipelines/token",
    }


def test_server_on_8888_keeps_its_port() -> None:
    """A server listening on 8888 itself gets no pipelines relay (they would collide)."""
    api = InClusterAPI("127.0.0.1", 8080, 8443, b"")
    listens = [tuple(r["listen"]) for r in api.egress(8888)]
    assert listens == [("127.0.0.2", 443)]
    assert [tuple(r["listen"]) for r in api.egress(8080)] == [
        ("127.0.0.2", 443),
        ("127.0.0.4", 8888),
    ]


async def test_no_in_cluster_layout_without_a_token(tmp_path: Path) -> None:
    """No token, no API to call: a runtime without workload tokens adds none of it."""
    runtime = LocalRuntime(tmp_path / "state", in_cluster=InClusterAPI("127.0.0.1", 1, 2, b""))
    assert runtime.in_cluster is None


NONROOT_RUNNER = """
import asyncio, sys
from services.common.runtime import LocalRuntime
from services.common.runtime.incluster import InClusterAPI

async def main(state, tls_port, http_port, ca_pem, script):
    api = InClusterAPI("127.0.0.1", int(http_port), int(tls_port), ca_pem.encode())
    rt = LocalRuntime(state, workload_tokens=lambda ns, b: "t", in_cluster=api)
    await rt.apply({"namespace": "team-a", "name": "probe", "command": ["python3", "-c", script]})
    status = await rt.wait("team-a", "probe", timeout=60)
    print(status.phase.value, status.message)
    print("\\n".join([line async for line in rt.logs("team-a", "probe")]))
    await rt.shutdown()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become uid 10001")
def test_unprivileged_platform_relays_port_443(tmp_path: Path) -> None:
    """A platform that is not root (the container image's uid) still listens on the
    sandbox's port 443: its network agent holds every capability in the sandbox's own user
    namespace, none on the host."""
    from tests.security.conftest import run_as_platform_user

    keys = tmp_path / "keys"
    cert = ensure_api_certificate(keys, ["127.0.0.2"])
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert.cert, cert.key)
    with listener("tls", tls) as tls_port, listener("http") as http_port:
        done = run_as_platform_user(
            NONROOT_RUNNER,
            "/tmp/nonroot-incluster/state",
            str(tls_port),
            str(http_port),
            read_ca_certificate(keys).decode(),
            SCRIPT,
        )
    assert done.stdout.startswith("Succeeded"), done.stdout
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert (seen["by_ip"], seen["by_name"]) == ("tls /api/v1", "tls /apis")
    assert seen["pipelines"] == "http /apis/v2beta1/runs"


def test_in_cluster_config_from_a_service_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A service's runtime relays to the gateway's host and ports and mounts the CA's
    certificate; where the CA can be neither read nor made, workloads go without the layout
    (and the log says why) rather than the service failing to start."""
    from services.common.runtime.config import RuntimeSettings, workload_in_cluster
    from services.common.settings import ServiceSettings

    monkeypatch.setenv("SHIPYARD_GATEWAY_TLS_PORT", "9443")
    settings = ServiceSettings(state_dir=tmp_path, gateway_url="http://10.1.2.3:8080")
    api = workload_in_cluster(settings, RuntimeSettings())
    assert api is not None
    assert (api.gateway_host, api.http_port, api.tls_port) == ("10.1.2.3", 8080, 9443)
    assert api.ca_pem == read_ca_certificate(tmp_path / "keys")

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    broken = ServiceSettings(state_dir=not_a_dir, gateway_url="http://10.1.2.3:8080")
    assert workload_in_cluster(broken, RuntimeSettings()) is None
    assert "no in-cluster Kubernetes config" in caplog.text
    monkeypatch.setenv("SHIPYARD_GATEWAY_TLS_PORT", "0")
    assert workload_in_cluster(settings, RuntimeSettings()) is None
