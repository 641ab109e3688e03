"""Workload identity on Kubernetes: a pod's projected service-account token, checked by the
cluster itself (``TokenReview``).

With ``SHIPYARD_RUNTIME=kubernetes`` a workload's token is not the platform's: the kubelet
projects one the API server signed, bound to the pod, for the audience
``SHIPYARD_KUBE_TOKEN_AUDIENCE`` (``shipyard``), and rotates it in place. The gateway does not
hold the cluster's signing keys; it asks the API server, as Kubernetes' own aggregated servers
do: a ``TokenReview`` with our audience answers whether the token is genuine, unexpired, meant
for us, and still bound to a live pod (a deleted pod's token fails the review). Only a
namespace's ``default-editor`` account is accepted (the account the runtime runs workloads
as); it gets what a platform-issued token gets: edit on its own namespace.

Answers are cached for ``CACHE_SECONDS`` (by the token's SHA-256, never the token itself), so
a workload's burst of calls costs one review; a token stops working at most that long after
its pod is gone. The API server is reached with the gateway pod's own service-account token
(RBAC: ``create`` on ``tokenreviews``, in the chart).
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.common.serviceaccounts import DEFAULT_SA, namespace_of

from .upstream import control_client

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CACHE_SECONDS = 10.0
CACHE_MAX = 10_000
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


class KubeTokenError(Exception):
    """The token is not a live workload's (the message says why, without the token)."""


@dataclass(frozen=True)
class KubeAPI:
    """Where the API server is and how the gateway authenticates to it."""

    url: str
    token_file: Path
    ca_file: Path | None

    @classmethod
    def in_cluster(cls) -> KubeAPI:
        """The standard in-cluster layout (``KUBERNETES_SERVICE_HOST`` and the token files)."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeTokenError(
                "SHIPYARD_RUNTIME=kubernetes: the gateway is not running in a cluster "
                "(KUBERNETES_SERVICE_HOST is unset), so it cannot review workload tokens; "
                "set SHIPYARD_KUBE_API_URL and SHIPYARD_KUBE_API_TOKEN_FILE"
            )
        if ":" in host:
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", SA_DIR / "token", SA_DIR / "ca.crt")


class KubeTokenReview:
    """Verifies projected service-account tokens with the API server's ``TokenReview``."""

    def __init__(self, api: KubeAPI, audience: str, issuer: str) -> None:
        self.api, self.audience, self.issuer = api, audience, issuer
        verify: ssl.SSLContext | bool = True
        if api.ca_file is not None and api.url.startswith("https://"):
            verify = ssl.create_default_context(cafile=str(api.ca_file))
        self.http = control_client(5.0, base_url=api.url, verify=verify)
        self._cache: OrderedDict[str, tuple[float, str, str]] = OrderedDict()

    async def close(self) -> None:
        await self.http.aclose()

    async def review(self, token: str) -> tuple[str, str]:
        """(subject, namespace) of a live workload's token; KubeTokenError otherwise."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        subject, namespace = await self._ask(token)
        self._cache[digest] = (now + CACHE_SECONDS, subject, namespace)
        self._cache.move_to_end(digest)
        while len(self._cache) > CACHE_MAX:
            self._cache.popitem(last=False)
        return subject, namespace

    async def _ask(self, token: str) -> tuple[str, str]:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        try:
            own = self.api.token_file.read_text().strip()  # re-read: it rotates
            r = await self.http.post(
                TOKEN_REVIEWS, json=body, headers={"Authorization": f"Bearer {own}"}
            )
        except (OSError, httpx.HTTPError) as exc:
            log.warning("cannot review a workload token with the API server: %s", exc)
            raise KubeTokenError("the cluster could not be asked about this token") from None
        if r.status_code != 201 and r.status_code != 200:
            log.warning("TokenReview answered %s: %s", r.status_code, r.text[:300])
            raise KubeTokenError("the cluster could not be asked about this token")
        status = (r.json() or {}).get("status") or {}
        if not status.get("authenticated"):
            raise KubeTokenError(
                f"the cluster did not accept this token: {status.get('error') or 'not valid'}"
            )
        audiences = status.get("audiences")
        if audiences is not None and self.audience not in audiences:
            raise KubeTokenError(f"the token is not meant for audience {self.audience!r}")
        subject = str((status.get("user") or {}).get("username") or "")
        namespace = namespace_of(subject)
        if namespace is None or not subject.endswith(f":{DEFAULT_SA}"):
            raise KubeTokenError(
                f"{subject or 'this account'} may not call shipyard: only a namespace's "
                f"{DEFAULT_SA} service account is accepted"
            )
        return subject, namespace
