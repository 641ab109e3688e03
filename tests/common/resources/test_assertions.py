"""A request without a valid gateway assertion reaches no service handler (401)."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from services.common.identity import ASSERTION_HEADER, AssertionMinter, AssertionSigner, Identity
from tests.common.resources.conftest import NAMESPACE, RunningService

PATH = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"


def tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"], claims["ns"] = "admin", "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def cases(svc: RunningService) -> dict[str, dict[str, str]]:
    valid = svc.headers()[ASSERTION_HEADER]
    expired = AssertionSigner(svc.minter.private_pem).sign(
        Identity("user@example.com", namespace=NAMESPACE, role="admin"), now=time.time() - 3600
    )
    return {
        "missing": {},
        "garbage": {ASSERTION_HEADER: "not-a-jwt"},
        "expired": {ASSERTION_HEADER: expired},
        "wrong key": AssertionMinter().headers(namespace=NAMESPACE),
        "tampered": {ASSERTION_HEADER: tamper(valid)},
        "bare user header": {"kubeflow-userid": "user@example.com"},
    }


@pytest.mark.parametrize(
    "case", ["missing", "garbage", "expired", "wrong key", "tampered", "bare user header"]
)
async def test_request_without_valid_assertion_rejected(
    widget_service: RunningService, case: str
) -> None:
    headers = cases(widget_service)[case]
    async with httpx.AsyncClient(base_url=widget_service.url) as http:
        for method in ("GET", "POST", "DELETE"):
            r = await http.request(
                method,
                PATH if method != "DELETE" else f"{PATH}/x",
                headers=headers,
                json={"metadata": {"name": "sneaky"}},
            )
            assert r.status_code == 401, (case, method, r.text)
            assert r.json()["reason"] == "Unauthorized"
        # Nothing was created by the rejected POSTs.
        listed = await http.get(PATH, headers=widget_service.headers())
        assert "sneaky" not in [i["metadata"]["name"] for i in listed.json()["items"]]


async def test_assertion_for_other_namespace_forbidden(widget_service: RunningService) -> None:
    async with httpx.AsyncClient(base_url=widget_service.url) as http:
        r = await http.get(PATH, headers=widget_service.headers(namespace="team-b"))
        assert r.status_code == 403
        assert "team-a" in r.json()["message"]


async def test_view_role_cannot_write(widget_service: RunningService) -> None:
    async with httpx.AsyncClient(base_url=widget_service.url) as http:
        headers = widget_service.headers(role="view")
        assert (await http.get(PATH, headers=headers)).status_code == 200
        r = await http.post(PATH, headers=headers, json={"metadata": {"name": "v"}, "spec": {}})
        assert r.status_code == 403


async def test_health_endpoints_are_public(widget_service: RunningService) -> None:
    async with httpx.AsyncClient(base_url=widget_service.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {
            "database": True,
            "nats": True,
        }
        metrics = await http.get("/metrics")
        assert "shipyard_http_requests_total" in metrics.text
