"""A small JSON client for the Kubernetes REST API, on kubernetes-asyncio's ``ApiClient``.

The runtime speaks to a handful of paths (pods, their log and status, services, secrets,
PVCs, and a profile's objects) and keeps every object as the plain dict the API returns:
the manifests it sends are dicts too (``k8s_manifests``), so nothing goes through the
generated model classes and no field is lost in a round trip. ``ApiClient`` still does what
it is good at: the kubeconfig or in-cluster configuration, TLS, and the bearer token, which
it re-reads as a projected token rotates.

Every call has a timeout; streams (watches, followed logs) have a connect timeout and are
bounded by the server's own ``timeoutSeconds`` or by the caller.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp

from .errors import RuntimeBackendError

log = logging.getLogger(__name__)

#: Seconds one ordinary API request may take.
REQUEST_TIMEOUT = 30.0
#: Seconds to open a stream (a watch, a followed log).
CONNECT_TIMEOUT = 30.0
MERGE_PATCH = "application/merge-patch+json"
#: Bytes of one streamed line (a watch event holds one whole object: at most ~1.5 MiB).
MAX_LINE = 8 * 1024 * 1024

Query = Sequence[tuple[str, str | int]] | None


class KubeApiError(RuntimeBackendError):
    """The API server answered with an error status (``status``: the HTTP code)."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.message = message


async def build_api_client(kube_config: str | None) -> Any:
    """A kubernetes-asyncio ``ApiClient`` from a kubeconfig file, or the in-cluster config
    (the pod's service-account token and CA) when ``kube_config`` is None."""
    from kubernetes_asyncio import config
    from kubernetes_asyncio.client import ApiClient, Configuration

    configuration = Configuration()
    if kube_config:
        await config.load_kube_config(config_file=kube_config, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    return ApiClient(configuration)


def _message(body: bytes) -> str:
    """The ``message`` of a ``Status`` error body, else the body's start."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300].decode(errors="replace")
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])[:500]
    return body[:300].decode(errors="replace")


class KubeApi:
    """JSON in, JSON out: ``get``/``create``/``patch``/``delete``, ``text`` and ``lines``."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    async def _send(
        self,
        method: str,
        path: str,
        query: Query,
        body: Any,
        content_type: str | None,
        limits: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        response: aiohttp.ClientResponse = await self.api_client.call_api(
            path,
            method,
            query_params=[(k, str(v)) for k, v in (query or [])],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=limits,
        )
        if response.status >= 400:
            data = await response.read()
            response.release()
            raise KubeApiError(response.status, method, path, _message(data))
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = None,
        body: Any = None,
        content_type: str | None = None,
        seconds: float = REQUEST_TIMEOUT,
    ) -> dict[str, Any]:
        response = await self._send(
            method, path, query, body, content_type, aiohttp.ClientTimeout(total=seconds)
        )
        try:
            data = await response.read()
        finally:
            response.release()
        if not data:
            return {}
        parsed = json.loads(data)
        return parsed if isinstance(parsed, dict) else {}

    async def get(self, path: str, query: Query = None) -> dict[str, Any]:
        return await self.request("GET", path, query=query)

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.get(path)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body=dict(body))

    async def create_or_keep(self, path: str, body: Mapping[str, Any]) -> bool:
        """Create the object; False if it already existed (HTTP 409), which is fine."""
        try:
            await self.create(path, body)
        except KubeApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): dicts merge, lists and scalars replace."""
        return await self.request("PATCH", path, body=dict(body), content_type=MERGE_PATCH)

    async def delete(self, path: str, grace_seconds: int | None = None) -> bool:
        """Delete; False if it was not there. Dependents go in the background."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            await self.request("DELETE", path, body=body)
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def text(self, path: str, query: Query = None, seconds: float = 60.0) -> str:
        """A plain-text resource (a pod's log)."""
        response = await self._send(
            "GET", path, query, None, None, aiohttp.ClientTimeout(total=seconds)
        )
        try:
            return (await response.read()).decode(errors="replace")
        finally:
            response.release()

    @contextlib.asynccontextmanager
    async def lines(
        self, path: str, query: Query = None, seconds: float | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A streamed response, line by line (a watch, a followed log); closed on exit."""
        response = await self._send(
            "GET",
            path,
            query,
            None,
            None,
            aiohttp.ClientTimeout(total=seconds, sock_connect=CONNECT_TIMEOUT),
        )
        try:
            yield _lines(response)
        finally:
            response.close()

    async def close(self) -> None:
        await self.api_client.close()


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body's lines (newline kept). A line longer than MAX_LINE comes in pieces rather
    than filling memory (a workload may print megabytes without a newline)."""
    pending = b""
    async for chunk in response.content.iter_any():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
        while len(pending) > MAX_LINE:
            yield pending[:MAX_LINE]
            pending = pending[MAX_LINE:]
    if pending:
        yield pending
