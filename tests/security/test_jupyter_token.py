"""Every Jupyter server requires its own token and keeps its XSRF check (issue 10, item 4).

A real notebook service (in process, on its own database) starts a real Jupyter server. The
test then talks to that server *directly*, the way another tenant's workload would if it
found the server: not through the gateway, which adds the token. The server's endpoint is
opened with ``services.common.runtime.endpoint``, so the test holds whatever the runtime
hands out (a loopback port today, a sandbox's broker socket later).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.dataplane import load_or_create_key, notebook_token
from services.common.runtime import endpoint
from services.notebook.app import create_app
from services.notebook.settings import Settings
from services.notebook.workload import build_workload
from tests import specs
from tests.conftest import InProcessService, own_service_fixture

NAMESPACE = "tenant-a"
NOTEBOOKS = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/notebooks"
NAME = "guarded"
PREFIX = f"/notebook/{NAMESPACE}/{NAME}"


notebook_service = own_service_fixture(
    create_app, Settings, "shipyard_jupyter_token", namespace=NAMESPACE
)


@pytest.fixture(scope="module")
async def server(notebook_service: InProcessService) -> AsyncIterator[dict[str, Any]]:
    """A ready Jupyter server: its endpoint and the token the gateway would send."""
    body = specs.notebook(NAME)
    async with httpx.AsyncClient(
        base_url=notebook_service.url, timeout=20, headers=notebook_service.headers()
    ) as api:
        created = await api.post(NOTEBOOKS, json=body)
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 60
        nb: dict[str, Any] = {}
        while time.monotonic() < deadline:
            nb = (await api.get(f"{NOTEBOOKS}/{NAME}")).json()
            if (nb.get("status") or {}).get("readyReplicas") == 1:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"the notebook never became ready: {nb.get('status')}")
        key = load_or_create_key(notebook_service.settings.dataplane_key_path())
        yield {
            "endpoint": nb["status"]["endpoint"],
            "token": notebook_token(key, NAMESPACE, NAME),
            "key": key,
        }
        assert (await api.delete(f"{NOTEBOOKS}/{NAME}")).status_code == 200


def call(
    base: str, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request straight to the server behind ``base`` (no gateway): status, headers, body."""
    conn = http.client.HTTPConnection(endpoint.host_header(base), timeout=10)
    conn.sock = endpoint.connect(base, 10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, PREFIX + path, body=data, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


async def request(
    base: str, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    return await asyncio.to_thread(call, base, method, path, headers, body)


async def test_server_rejects_requests_without_its_token(server: dict[str, Any]) -> None:
    base = server["endpoint"]
    status, _, _ = await request(base, "GET", "/api/kernels")
    assert status in (401, 403)
    status, _, _ = await request(base, "GET", "/api/kernels", {"Authorization": "token wrong"})
    assert status in (401, 403)
    # Another notebook's token (same key, another name or namespace) does not open this one.
    for other in (
        notebook_token(server["key"], NAMESPACE, "other"),
        notebook_token(server["key"], "tenant-b", NAME),
    ):
        status, _, _ = await request(
            base, "GET", "/api/kernels", {"Authorization": f"token {other}"}
        )
        assert status in (401, 403)
    # Nor does starting a kernel (code execution) without it: no token, no XSRF cookie/header.
    status, _, _ = await request(base, "POST", "/api/kernels", body={"name": "python3"})
    assert status in (401, 403)


async def test_server_accepts_its_token(server: dict[str, Any]) -> None:
    base, token = server["endpoint"], server["token"]
    auth = {"Authorization": f"token {token}"}
    status, _, body = await request(base, "GET", "/api/kernels", auth)
    assert status == 200 and isinstance(json.loads(body), list)
    # The gateway's way: the token header on a POST is enough (token-authenticated, no XSRF).
    status, _, body = await request(
        base, "POST", "/api/kernels", {"Authorization": f"token {token}"}, {"name": "python3"}
    )
    assert status == 201, body
    kernel = json.loads(body)["id"]
    status, _, _ = await request(
        base, "DELETE", f"/api/kernels/{kernel}", {"Authorization": f"token {token}"}
    )
    assert status == 204


async def test_server_keeps_xsrf_check_for_cookie_sessions(server: dict[str, Any]) -> None:
    """A login cookie alone cannot POST: Jupyter's XSRF check is on (it was disabled)."""
    base, token = server["endpoint"], server["token"]
    status, headers, _ = await request(
        base, "GET", "/api/status", {"Authorization": f"token {token}"}
    )
    assert status == 200
    jar: SimpleCookie = SimpleCookie()
    for value in headers.get_all("Set-Cookie") or []:
        jar.load(value)
    login = "; ".join(f"{k}={m.value}" for k, m in jar.items())
    assert login, "a token-authenticated request sets Jupyter's login cookie"
    # The cookie is a real session: a GET with it alone is allowed...
    status, _, _ = await request(base, "GET", "/api/kernels", {"Cookie": login})
    assert status == 200
    # ...but a POST without the XSRF cookie and header is refused,
    status, _, body = await request(
        base, "POST", "/api/kernels", {"Cookie": login}, {"name": "python3"}
    )
    assert status == 403 and b"xsrf" in body.lower(), body
    # and with them (a same-origin page's request) it goes through.
    status, _, body = await request(
        base,
        "POST",
        "/api/kernels",
        {"Cookie": f"{login}; _xsrf=same-origin-value", "X-XSRFToken": "same-origin-value"},
        {"name": "python3"},
    )
    assert status == 201, body
    kernel = json.loads(body)["id"]
    await request(base, "DELETE", f"/api/kernels/{kernel}", {"Authorization": f"token {token}"})


def command_lines() -> list[tuple[Path, bytes]]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found.append((cmdline, cmdline.read_bytes()))
        except OSError:
            continue  # the process ended meanwhile
    return found


async def test_token_is_not_on_any_command_line(server: dict[str, Any]) -> None:
    """Command lines are world-readable in /proc: the token travels in the environment."""
    token = server["token"].encode()
    seen = await asyncio.to_thread(command_lines)
    assert len(seen) > 1
    for cmdline, argv in seen:
        assert token not in argv, f"the Jupyter token is on the command line of {cmdline}"


def test_build_workload_token_in_environment_only() -> None:
    container: dict[str, Any] = {"name": NAME, "image": "x"}
    notebook = {
        "metadata": {"namespace": NAMESPACE, "name": NAME, "uid": "u"},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }
    spec = build_workload(notebook, "t0ken")
    argv = [*spec.command, *spec.args]
    assert not any("t0ken" in a for a in argv)
    assert not any("disable_check_xsrf" in a or "IdentityProvider.token" in a for a in argv)
    assert {e.name: e.value for e in spec.env}["JUPYTER_TOKEN"] == "t0ken"
    container["env"] = [{"name": "JUPYTER_TOKEN", "value": ""}]  # would lock the gateway out
    with pytest.raises(ValueError, match=r"containers\[0\]\.env\[0\]\.name: JUPYTER_TOKEN"):
        build_workload(notebook, "t0ken")
