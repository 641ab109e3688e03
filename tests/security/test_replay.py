"""What tenant code can get hold of opens no service: every service answers 401 to it.

A notebook (or model server) receives, from the gateway, the visitor's ordinary cookies, its
own Jupyter token and the request's other headers; never the session cookie, a bearer token
or an identity assertion (tests/gateway/test_tenant_isolation.py proves that at the gateway).
Here each of the real platform's four services, reached straight on its port as a workload
on the host would, is handed that and more, including an expired assertion and one signed
with a key of the tenant's own, and must refuse it all: only a live assertion signed by the
gateway opens a service.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.common.identity import AssertionSigner, Identity, generate_keypair
from services.common.settings import SINGLE_USER
from services.common.settings import SINGLE_USER_NAMESPACE as NS

SERVICES = {
    "notebook": f"/api/v1/namespaces/{NS}/persistentvolumeclaims",
    "automl": f"/apis/kubeflow.org/v1beta1/namespaces/{NS}/experiments",
    "pipeline": f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows",
    "serving": f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices",
}


def forged_assertions(platform: Any) -> dict[str, str]:
    """An assertion signed by a key the tenant made, and a genuine but expired one."""
    visitor = Identity(user=SINGLE_USER, role="admin", namespace=NS, cluster_admin=True)
    own_private, _ = generate_keypair()
    genuine = (platform.state_dir / "keys" / "gateway.key").read_bytes()
    return {
        "own key": AssertionSigner(own_private).sign(visitor),
        "expired": AssertionSigner(genuine, ttl_seconds=60).sign(visitor, now=0),
    }


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_what_tenant_code_holds_opens_no_service(platform: Any, service: str) -> None:
    url = platform.urls[service] + SERVICES[service]
    received = {  # what a notebook is handed by the gateway, plus what it could make up
        "Authorization": "token 0123456789abcdef",
        "Cookie": "_xsrf=2|abc; username-127-0-0-1-8888=xyz",
        "kubeflow-userid": SINGLE_USER,
        "X-Forwarded-For": "127.0.0.1",
    }
    attempts = [received] + [
        {**received, "X-Shipyard-Identity": token} for token in forged_assertions(platform).values()
    ]
    for headers in attempts:
        r = httpx.get(url, headers=headers, timeout=10)
        assert r.status_code == 401, (service, headers.keys(), r.text)
        body = r.json()
        assert body["kind"] == "Status" and body["code"] == 401, body
        assert "assertion" in body["message"], body
    # Control: through the gateway, the same list works (single-user mode), so the 401s above
    # are the services' refusals, not a dead service.
    through = httpx.get(platform.gateway_url + SERVICES[service], timeout=10)
    assert through.status_code == 200, through.text
