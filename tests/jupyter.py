"""Running code in a real Jupyter kernel over its channels WebSocket (through the gateway).

One helper for every test that drives a notebook server's kernel: ``headers`` carry the
caller's identity where the gateway needs one (trusted-header mode), and a kernel error fails
the test with the kernel's own traceback.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping

import httpx
import websockets


async def open_kernel(http: httpx.AsyncClient, route: str, *, within: float = 90.0) -> str:
    """Wait (up to ``within`` seconds) until the notebook server at ``route`` answers, start
    a python3 kernel there; the URL of the kernel's channels WebSocket."""
    deadline = time.monotonic() + within
    while (await http.get(f"{route}/api/status")).status_code != 200:
        assert time.monotonic() < deadline, "the notebook server did not answer"
        await asyncio.sleep(0.2)
    kernel = await http.post(f"{route}/api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    return route.replace("http", "ws", 1) + f"/api/kernels/{kernel.json()['id']}/channels"


async def execute(
    ws_url: str,
    code: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 - a bound on the whole exchange, for tests
    store_history: bool = False,
    stdout_only: bool = False,
) -> str:
    """Execute ``code`` on the kernel at ``ws_url``; return what it printed once it is idle.

    ``stdout_only`` leaves out its stderr (library warnings); ``store_history`` runs the
    code as a notebook cell (numbered, in the kernel's history)."""
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": "",
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "buffers": [],
        "content": {
            "code": code,
            "silent": False,
            "store_history": store_history,
            "stop_on_error": True,
        },
    }
    out: list[str] = []
    extra = dict(headers or {})
    async with websockets.connect(ws_url, open_timeout=10, additional_headers=extra) as ws:
        await ws.send(json.dumps(request))
        async with asyncio.timeout(timeout):
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "stream" and (not stdout_only or msg["content"]["name"] == "stdout"):
                    out.append(msg["content"]["text"])
                elif kind == "error":
                    traceback = "\n".join(msg["content"]["traceback"])
                    raise AssertionError(f"kernel error:\n{traceback}\nin:\n{code}")
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)
