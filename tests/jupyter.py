"""Running code in a real Jupyter kernel over its channels WebSocket (through the gateway).

One helper for every test that drives a notebook server's kernel: ``headers`` carry the
caller's identity where the gateway needs one (trusted-header mode), and a kernel error fails
the test with the kernel's own traceback.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping

import websockets


async def execute(
    ws_url: str,
    code: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 - a bound on the whole exchange, for tests
) -> str:
    """Execute ``code`` on the kernel at ``ws_url``; return its stdout once it is idle."""
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
        "content": {"code": code, "silent": False, "store_history": False, "stop_on_error": True},
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
                if kind == "stream":
                    out.append(msg["content"]["text"])
                elif kind == "error":
                    raise AssertionError("kernel error:\n" + "\n".join(msg["content"]["traceback"]))
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)
