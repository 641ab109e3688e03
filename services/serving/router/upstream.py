"""The router's way to the InferenceServices of its graph: the platform's gateway.

A router is a workload like any other. It reaches the gateway (``$SHIPYARD_URL``, relayed
out of its sandbox) and nothing else, and it authenticates with its own service-account
token (``$SHIPYARD_TOKEN_FILE``, rewritten in place before it expires, so it is read again
whenever the file changes). The gateway authorizes that token for its own namespace only:
whatever a graph names, its router cannot reach another namespace's models. Every step goes
through the gateway's data plane as a person's request would, scale-from-zero activation
included.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import h11

from .client import KeepAliveClient
from .engine import Reply


class TokenFile:
    """A token file read again only when it changed (the runtime rotates it in place)."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def token(self) -> str:
        if self.path is None:
            return ""
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_ino)
        if stamp != self._stamp:
            self._token = self.path.read_text().strip()
            self._stamp = stamp
        return self._token


class GatewayUpstream:
    """Posts JSON to ``base_url`` + a step's path with the workload's bearer token."""

    def __init__(self, base_url: str, token_file: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = TokenFile(token_file)
        self.client = KeepAliveClient(self.base_url)

    async def post(self, path: str, body: bytes, seconds: float) -> Reply:
        headers = {"content-type": "application/json"}
        token = self.tokens.token()
        if token:
            headers["authorization"] = f"Bearer {token}"
        try:
            async with asyncio.timeout(seconds):
                status, answer = await self.client.post(path, body, headers)
        except TimeoutError:
            return _transport_error(504, f"{path} did not answer within {seconds:g} s")
        except (OSError, h11.ProtocolError) as exc:
            return _transport_error(502, f"{path} could not be reached: {exc!r}")
        return Reply(status, answer)

    async def aclose(self) -> None:
        await self.client.aclose()


def _transport_error(status: int, message: str) -> Reply:
    return Reply(status, json.dumps({"error": message}).encode())


def from_environment() -> GatewayUpstream:
    """The upstream a router workload has: ``$SHIPYARD_URL`` with ``$SHIPYARD_TOKEN_FILE``."""
    url = os.environ.get("SHIPYARD_URL")
    if not url:
        raise RuntimeError(
            "SHIPYARD_URL is not set: the router reaches the InferenceServices through the "
            "platform's gateway, which the runtime names there"
        )
    return GatewayUpstream(url, os.environ.get("SHIPYARD_TOKEN_FILE"))
