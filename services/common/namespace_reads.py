"""Reading another service's resource as a namespace's own service account.

No service reads another's tables (docs/architecture.md): a cross-service read goes through
the other service's API. This one goes through the gateway with a short-lived token for the
namespace's service account, minted with the key every service already holds for workload
tokens. So the read has exactly the authority the namespace's own workloads have: a
workflow may name a ConfigMap of its namespace, never another's, and the gateway's checks
apply as to any request.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.common.serviceaccounts import ServiceAccountTokens

TOKEN_TTL_SECONDS = 60


class NamespaceReadError(RuntimeError):
    """The read failed for a reason other than "not found"; the message says which."""


class NamespaceReader:
    """``GET`` of namespaced resources through the gateway, as the namespace's account."""

    def __init__(self, settings: Any, timeout: float = 10.0) -> None:
        self.gateway_url = str(settings.gateway_url).rstrip("/")
        self._tokens = ServiceAccountTokens(settings.serviceaccount_key_pem(), TOKEN_TTL_SECONDS)
        self._service = str(getattr(settings, "service_name", "") or "")
        self.timeout = timeout

    async def get(self, namespace: str, path: str) -> dict[str, Any] | None:
        """The resource at ``path`` (e.g. ``/api/v1/namespaces/ns/configmaps/x``), or None."""
        token = self._tokens.issue(namespace, service=self._service)
        try:
            async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
                response = await client.get(
                    self.gateway_url + path, headers={"Authorization": f"Bearer {token}"}
                )
        except httpx.HTTPError as exc:
            raise NamespaceReadError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise NamespaceReadError(
                f"cannot read {path}: the API answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        body: dict[str, Any] = response.json()
        return body

    async def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get(namespace, f"/api/v1/namespaces/{namespace}/configmaps/{name}")
