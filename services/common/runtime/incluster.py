"""The standard in-cluster Kubernetes layout inside a local workload.

A pod finds its API server through ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``
and ``/var/run/secrets/kubernetes.io/serviceaccount/{token,namespace,ca.crt}``, and speaks
HTTPS to it, verified with ``ca.crt``. A Kubeflow notebook also finds the pipelines API at
``ml-pipeline.kubeflow.svc.cluster.local:8888`` (plain HTTP) with the token at
``/var/run/secrets/kubeflow/pipelines/token``. So, in every sandbox:

* ``KUBERNETES_SERVICE_HOST`` is the sandbox's API address (``sandbox.API_ADDRESS``'s IP) and
  the port 443. The supervisor relays that address to the gateway's TLS listener for
  workloads, which presents a certificate of the platform's own CA (services/common/certs.py)
  naming that IP and ``kubernetes.default.svc`` and its kin. TLS ends in the gateway, not in
  the relay: the supervisor stays a byte pipe (no key, no ``ssl`` import on every job start),
  and the workload still reaches nothing but the gateway.
* ``/etc/hosts`` maps the ``kubernetes`` Service names to that address, and
  ``ml-pipeline.kubeflow...`` to :data:`PIPELINES_ALIAS`, whose port 8888 is relayed to the
  gateway's plain HTTP port (the KFP API is served there).
* The identity directory (token, namespace) gains ``ca.crt``, and is mounted a second time
  at the pipelines token's place (``KF_PIPELINES_SA_TOKEN_PATH`` says where, as Kubeflow's
  PodDefault does).

On Kubernetes the cluster gives pods this layout itself (for its own API server).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .sandbox import API_ADDRESS

#: The port the API answers on inside a sandbox, as the ``kubernetes`` Service's. Workloads
#: run without privileges, so no server of theirs can take it from the relay.
API_TLS_PORT = 443
#: Where ``ml-pipeline.kubeflow.svc.cluster.local`` resolves inside a sandbox.
PIPELINES_ALIAS = "127.0.0.4"
PIPELINES_PORT = 8888
PIPELINES_NAMES = (
    "ml-pipeline.kubeflow",
    "ml-pipeline.kubeflow.svc",
    "ml-pipeline.kubeflow.svc.cluster.local",
)
KUBERNETES_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
PIPELINES_TOKEN_DIR = "/var/run/secrets/kubeflow/pipelines"


@dataclass(frozen=True)
class InClusterAPI:
    """Where the gateway's two listeners are (from the host), and the CA's certificate."""

    gateway_host: str
    http_port: int
    tls_port: int
    ca_pem: bytes

    @staticmethod
    def hosts() -> dict[str, str]:
        """``/etc/hosts`` entries every sandbox gets (name -> address)."""
        host = API_ADDRESS[0]
        return {
            **{name: host for name in KUBERNETES_NAMES},
            **{name: PIPELINES_ALIAS for name in PIPELINES_NAMES},
        }

    def env(self) -> dict[str, str]:
        """The variables a pod has for the ``kubernetes`` Service, and the pipelines token."""
        host, port = API_ADDRESS[0], API_TLS_PORT
        return {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
            f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
            "KF_PIPELINES_SA_TOKEN_PATH": f"{PIPELINES_TOKEN_DIR}/token",
        }

    def egress(self, server_port: int | None) -> list[dict[str, Any]]:
        """The relays: the API's TLS port to the gateway's TLS listener, and the pipelines
        address to its HTTP port (left out for a server that itself listens on 8888, where
        the two would collide on the sandbox's 0.0.0.0)."""
        relays: list[dict[str, Any]] = [
            {
                "listen": [API_ADDRESS[0], API_TLS_PORT],
                "connect": [self.gateway_host, self.tls_port],
            }
        ]
        if server_port != PIPELINES_PORT:
            relays.append(
                {
                    "listen": [PIPELINES_ALIAS, PIPELINES_PORT],
                    "connect": [self.gateway_host, self.http_port],
                }
            )
        return relays
