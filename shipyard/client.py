"""A small client for the shipyard gateway's Kubernetes-style API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from services.common.catalog import KindInfo
from shipyard.config import ClientSettings

# Writes refuse unknown and repeated fields, as ``kubectl apply`` asks the server to by
# default: a typo in a manifest is an error, not a field the server quietly drops.
STRICT_FIELDS = {"fieldValidation": "Strict"}


class ApiError(Exception):
    """An error Status from the API, with its message (and field causes) for the user."""

    def __init__(self, code: int, status: dict[str, Any]) -> None:
        self.code = code
        self.status = status
        message = status.get("message") or f"HTTP {code}"
        super().__init__(message)


def _auth_headers(settings: ClientSettings) -> dict[str, str]:
    token = settings.bearer_token()
    if token:
        return {"Authorization": f"Bearer {token}"}
    try:
        from shipyard.auth import bearer_headers
    except ImportError:
        return {}
    return bearer_headers(settings.url)


class Client:
    def __init__(self, settings: ClientSettings | None = None, timeout: float = 30.0) -> None:
        self.settings = settings or ClientSettings()
        self.http = httpx.Client(
            base_url=self.settings.url, timeout=timeout, headers=_auth_headers(self.settings)
        )

    def close(self) -> None:
        self.http.close()

    def _path(self, kind: KindInfo, namespace: str | None, name: str | None = None) -> str:
        path = kind.collection_path(namespace if kind.namespaced else None)
        return f"{path}/{name}" if name else path

    def _check(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text.strip() or response.reason_phrase}
        if response.status_code >= 400:
            raise ApiError(response.status_code, body if isinstance(body, dict) else {})
        return body  # type: ignore[no-any-return]

    def get(self, kind: KindInfo, namespace: str | None, name: str) -> dict[str, Any]:
        return self._check(self.http.get(self._path(kind, namespace, name)))

    def list(
        self, kind: KindInfo, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = self._check(self.http.get(self._path(kind, namespace), params=params))
            items += page.get("items", [])
            token = page.get("metadata", {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    def create(self, kind: KindInfo, namespace: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        return self._check(
            self.http.post(self._path(kind, namespace), json=obj, params=STRICT_FIELDS)
        )

    def replace(
        self, kind: KindInfo, namespace: str | None, name: str, obj: dict[str, Any]
    ) -> dict[str, Any]:
        return self._check(
            self.http.put(self._path(kind, namespace, name), json=obj, params=STRICT_FIELDS)
        )

    def delete(self, kind: KindInfo, namespace: str | None, name: str) -> dict[str, Any]:
        return self._check(self.http.delete(self._path(kind, namespace, name)))

    def watch(
        self, kind: KindInfo, namespace: str | None, label_selector: str | None = None
    ) -> Iterator[dict[str, Any]]:
        params = {"watch": "1"}
        if label_selector:
            params["labelSelector"] = label_selector
        with self.http.stream(
            "GET",
            self._path(kind, namespace),
            params=params,
            timeout=httpx.Timeout(30.0, read=None),
        ) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def stream_lines(self, path: str, params: dict[str, str]) -> Iterator[str]:
        with self.http.stream(
            "GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)
        ) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            yield from response.iter_lines()
