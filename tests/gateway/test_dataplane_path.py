"""The inference data path's economies, and that they change nothing a client can see.

The gateway served as ``python -m gateway`` serves it (``gateway.__main__.server_config``:
the coalescing HTTP protocol); service-account tokens are verified once until they expire;
small request bodies go upstream with their head; graph answers carry the sandbox headers.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from gateway.app import create_app
from gateway.auth import Authenticator, AuthError
from gateway.inference_lane import GatewayHttpProtocol
from services.common.http_server import CoalescingTransport
from services.common.serviceaccounts import ServiceAccountTokens
from tests.conftest import free_port
from tests.gateway.conftest import RunningServer, ServedGateway, gateway_settings
from tests.gateway.test_upstream import RawServer, read_request

NS = "kubeflow-user-example-com"


class RecordingTransport:
    """The socket side of ``CoalescingTransport``: records what reaches it, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.calls.append(("abort", None))

    def set_protocol(self, protocol: object) -> None:
        self.calls.append(("set_protocol", protocol))

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return any(call in ("close", "abort", "lost") for call, _ in self.calls)

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_coalescing_transport_joins_one_turns_writes_in_order() -> None:
    loop = asyncio.get_running_loop()
    raw = RecordingTransport()
    t = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(memoryview(b"body"))
    assert raw.calls == [] and t.get_write_buffer_size() == 23
    await asyncio.sleep(0)
    assert raw.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody")]
    assert t.get_extra_info("peername") == "info:peername"
    # A close sends what is pending first.
    t.write(b"last")
    t.close()
    assert raw.calls[1:] == [("write", b"last"), ("close", None)]
    # An abort drops it.
    raw = RecordingTransport()
    t = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
    t.write(b"lost")
    t.abort()
    await asyncio.sleep(0)
    assert raw.calls == [("abort", None)]
    # Handed to another protocol (a WebSocket upgrade): pending bytes first, then direct.
    raw = RecordingTransport()
    t = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
    t.write(b"101 head")
    t.set_protocol("ws")  # type: ignore[arg-type]
    t.write(b"frame")
    assert raw.calls == [("write", b"101 head"), ("set_protocol", "ws"), ("write", b"frame")]
    # The connection lost between a write and its turn's end: nothing is written.
    raw = RecordingTransport()
    t = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
    t.write(b"answer")
    raw.calls.append(("lost", None))
    await asyncio.sleep(0)
    assert raw.calls == [("lost", None)]


async def test_served_gateway_relays_bodies_streams_and_websockets(
    gateway_state: Path, upstream: RunningServer, gateway_db: str
) -> None:
    settings = gateway_settings(gateway_state, upstream.url, gateway_db, auth_mode="single-user")
    app = create_app(settings)
    server = ServedGateway(app, free_port())
    assert server.server.config.http is GatewayHttpProtocol
    assert server.server.config.access_log is False
    await server.start()
    gw = app.state.gw
    gw.route_table.upsert("inferenceservice", NS, "m", [(upstream.url, 1)])
    gw.route_table.upsert("notebook", NS, "nb", [(upstream.url, 1)])
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            for size in (10, 70 * 1024):  # one ASGI message, and a streamed upload
                r = await c.post(f"/serving/{NS}/m/v2/models/m/infer", content=b"x" * size)
                assert r.status_code == 200, r.text
                assert r.json()["body_bytes"] == size
                assert r.json()["path"] == f"/serving/{NS}/m/v2/models/m/infer"
                assert r.headers["content-security-policy"] == "sandbox"
            lines = []
            async with c.stream("GET", f"/serving/{NS}/m/stream/3") as r:
                async for line in r.aiter_lines():
                    lines.append(json.loads(line)["object"]["i"])
            assert lines == [0, 1, 2]
        url = f"ws://127.0.0.1:{server.port}/notebook/{NS}/nb/ws"
        async with ws_connect(url) as ws:
            hello = json.loads(await ws.recv())
            assert hello["identity"] is None and hello["authorization"].startswith("token ")
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
    finally:
        gw.route_table.remove("inferenceservice", NS, "m")
        gw.route_table.remove("notebook", NS, "nb")
        await server.stop()


async def test_small_body_goes_upstream_with_its_head(
    gateway_state: Path, upstream: RunningServer, gateway_db: str
) -> None:
    """A small body that came whole is written with the request head: the upstream's first
    read holds both (a streamed one would be a second write)."""
    first_reads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        first_reads.append(await reader.read(65536))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    settings = gateway_settings(gateway_state, upstream.url, gateway_db, auth_mode="single-user")
    app = create_app(settings)
    server = ServedGateway(app, free_port())
    await server.start()
    gw = app.state.gw
    try:
        async with RawServer(handler) as raw:
            gw.route_table.upsert("inferenceservice", NS, "raw", [(raw.url, 1)])
            async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
                r = await c.post(f"/serving/{NS}/raw/v2/models/raw/infer", content=b'{"a":1}')
            assert r.status_code == 200 and r.text == "ok"
            assert first_reads[0].endswith(b'\r\n\r\n{"a":1}')
            assert b"content-length: 7\r\n" in first_reads[0].lower()
    finally:
        gw.route_table.remove("inferenceservice", NS, "raw")
        await server.stop()


async def test_graph_answers_and_errors_carry_sandbox_headers(
    gateway_state: Path, gateway_db: str
) -> None:
    async def graph(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await read_request(reader)
        body = b"<script>alert(1)</script>"
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n\r\n%b"
            % (len(body), body)
        )
        await writer.drain()

    async with RawServer(graph) as raw:
        settings = gateway_settings(gateway_state, raw.url, gateway_db, auth_mode="single-user")
        app = create_app(settings)
        server = ServedGateway(app, free_port())
        await server.start()
        gw = app.state.gw
        gw.route_table.upsert("inferencegraph", NS, "g", [(raw.url, 1)])
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
                r = await c.post(f"/graphs/{NS}/g", json={"instances": [[1]]})
                assert r.status_code == 200 and r.text == "<script>alert(1)</script>"
                assert r.headers["content-security-policy"] == "sandbox"
                assert r.headers["x-content-type-options"] == "nosniff"
                gw.activator.route_grace_seconds = 0.1
                r = await c.post(f"/graphs/{NS}/nowhere", json={})  # the gateway's own 503
                assert r.status_code == 503 and "no live endpoint" in r.text
                assert r.headers["content-security-policy"] == "sandbox"
        finally:
            gw.route_table.remove("inferencegraph", NS, "g")
            await server.stop()


@pytest.fixture
def sa_tokens(gateway_state: Path) -> ServiceAccountTokens:
    return ServiceAccountTokens((gateway_state / "keys" / "serviceaccounts.key").read_bytes())


def authenticator(gateway_state: Path, gateway_db: str, tokens: ServiceAccountTokens) -> Any:
    settings = gateway_settings(gateway_state, "http://127.0.0.1:9", gateway_db)
    return Authenticator(settings, None, tokens, None, None)  # type: ignore[arg-type]


async def test_serviceaccount_token_verified_once_until_it_expires(
    gateway_state: Path, gateway_db: str, sa_tokens: ServiceAccountTokens, monkeypatch
) -> None:
    auth = authenticator(gateway_state, gateway_db, sa_tokens)
    checks: list[str] = []
    verify = sa_tokens.verify_bound

    def counted(token: str) -> Any:
        checks.append(token)
        return verify(token)

    monkeypatch.setattr(sa_tokens, "verify_bound", counted)
    token = sa_tokens.issue(NS, "default-editor")
    for _ in range(3):
        p = await auth._bearer(token)
        assert p.user == f"system:serviceaccount:{NS}:default-editor" and p.sa_namespace == NS
    assert len(checks) == 1
    # A token that fails verification is checked (and refused) every time.
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(AuthError):
            await auth._bearer(forged)
    assert len(checks) == 3
    # Past its exp the full check runs again (and, past the leeway, refuses it).
    short = ServiceAccountTokens(
        (gateway_state / "keys" / "serviceaccounts.key").read_bytes(), ttl_seconds=1
    )
    brief = short.issue(NS, "default-editor")
    await auth._bearer(brief)
    await auth._bearer(brief)
    assert len(checks) == 4
    await asyncio.sleep(1.1)
    await auth._bearer(brief)  # within verify_bound's 5 s leeway: still valid, but re-checked
    assert len(checks) == 5
    assert time.time() < brief_exp(brief) + 5


def brief_exp(token: str) -> float:
    from gateway.oidc import peek_claims

    return float(peek_claims(token)["exp"])


async def test_inference_authorization_follows_contributor_changes_at_once(
    client, gateway, oidc, upstream: RunningServer
) -> None:
    """Granted decisions are remembered per profile snapshot: removing a contributor refuses
    their next inference request, and adding them back lets the one after through. The
    requests share one connection and one head, so the lane serves the second grant from the
    head's shape (``RequestShape``) and still refuses after the removal: only what the head
    alone decides is kept per connection."""
    gw = gateway.gw
    lane = gateway.server.config.app.inference_lane
    gw.route_table.upsert("inferenceservice", NS, "authz", [(upstream.url, 1)])
    token = await oidc.id_token("second@example.com")
    headers = {"authorization": f"Bearer {token}"}
    url = f"/serving/{NS}/authz/v2/models/authz/infer"
    try:
        r = await client.post(url, content=b"{}", headers=headers)
        assert r.status_code == 403, r.text
        await gw.store.add_binding(NS, "second@example.com", "edit")
        for _ in range(2):  # the first opens the upstream connection the lane needs idle
            before = lane.served
            r = await client.post(url, content=b"{}", headers=headers)
            assert r.status_code == 200 and r.json()["body_bytes"] == 2
        assert lane.served == before + 1
        await gw.store.remove_binding(NS, "second@example.com")
        r = await client.post(url, content=b"{}", headers=headers)
        assert r.status_code == 403 and lane.served == before + 1
        assert r.json()["message"].startswith('User "second@example.com" cannot create')
        await gw.store.add_binding(NS, "second@example.com", "view")  # view cannot infer
        r = await client.post(url, content=b"{}", headers=headers)
        assert r.status_code == 403 and "needs role edit, has view" in r.json()["message"]
    finally:
        await gw.store.remove_binding(NS, "second@example.com")
        gw.route_table.remove("inferenceservice", NS, "authz")


async def test_small_inference_body_over_the_limit_is_413(
    gateway_state: Path, upstream: RunningServer, gateway_db: str
) -> None:
    settings = gateway_settings(
        gateway_state, upstream.url, gateway_db, auth_mode="single-user", max_body_bytes=16
    )
    app = create_app(settings)
    server = ServedGateway(app, free_port())
    await server.start()
    gw = app.state.gw
    gw.route_table.upsert("inferenceservice", NS, "tiny", [(upstream.url, 1)])
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            url = f"/serving/{NS}/tiny/v2/models/tiny/infer"
            r = await c.post(url, content=b"x" * 16)
            assert r.status_code == 200 and r.json()["body_bytes"] == 16
            r = await c.post(url, content=b"x" * 17)
            assert r.status_code == 413 and r.json()["kind"] == "Status"
            assert r.headers["content-security-policy"] == "sandbox"
    finally:
        gw.route_table.remove("inferenceservice", NS, "tiny")
        await server.stop()
