"""The inference lane (gateway/inference_lane.py): what it serves, that its answers are the
ASGI way's, and how it fails.

Every test serves the gateway on the listener configuration ``python -m gateway`` uses
(``ServedGateway``: ``GatewayHttpProtocol``), against a real upstream: the echo service of
tests/gateway/conftest.py, or a raw TCP server where the test needs to misbehave on purpose.
``InferenceLane.served`` counts the requests the lane answered, so each test shows which way
a request went.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn.logging import AccessFormatter

from gateway.app import create_app
from gateway.same_head import SameHead
from gateway.settings import Settings
from tests.conftest import free_port
from tests.gateway.conftest import (
    RunningServer,
    ServedGateway,
    gateway_settings,
    trusted_header_settings,
)
from tests.gateway.test_upstream import RawServer, read_request

NS = "kubeflow-user-example-com"
INFER = f"/serving/{NS}/m/v2/models/m/infer"
#: Response headers that differ between any two answers.
VOLATILE = {"date"}


async def served(settings: Settings) -> ServedGateway:
    server = ServedGateway(create_app(settings), free_port())
    await server.start()
    return server


def lane_of(server: RunningServer) -> Any:
    return server.server.config.app.inference_lane  # type: ignore[union-attr]


def gw_of(server: RunningServer) -> Any:
    return server.server.config.app.state.gw  # type: ignore[union-attr]


@pytest.fixture
async def single_user(
    gateway_state: Path, upstream: RunningServer, gateway_db: str
) -> AsyncIterator[ServedGateway]:
    server = await served(
        gateway_settings(gateway_state, upstream.url, gateway_db, auth_mode="single-user")
    )
    gw_of(server).route_table.upsert("inferenceservice", NS, "m", [(upstream.url, 1)])
    try:
        yield server
    finally:
        await server.stop()


def comparable(r: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k, v) for k, v in r.headers.items() if k not in VOLATILE)
    return r.status_code, headers, r.content


async def test_lane_answers_exactly_as_the_asgi_way(single_user: ServedGateway) -> None:
    """The same requests, first with the lane, then with it switched off: same status,
    headers and body; the lane answered every one after the first (which opened the
    upstream connection the lane needs idle)."""
    lane = lane_of(single_user)
    bodies = [b'{"inputs":[]}', b"", b"x" * 60_000]
    async with httpx.AsyncClient(base_url=single_user.url, timeout=15) as c:
        await c.post(INFER, content=b"{}")  # opens the kept-alive upstream connection
        before = lane.served
        with_lane = [comparable(await c.post(INFER, content=b)) for b in bodies]
        assert lane.served == before + len(bodies)
    app: Any = single_user.server.config.app
    app.inference_lane = None  # read per connection: a new client gets the ASGI way
    try:
        async with httpx.AsyncClient(base_url=single_user.url, timeout=15) as c:
            without = [comparable(await c.post(INFER, content=b)) for b in bodies]
    finally:
        app.inference_lane = lane
    assert lane.served == before + len(bodies)
    assert with_lane == without
    status, headers, content = with_lane[2]
    answer = json.loads(content)
    assert status == 200 and answer["body_bytes"] == 60_000 and answer["path"] == INFER
    assert answer["identity"] is None and answer["authorization"] is None  # no credentials
    assert ("content-security-policy", "sandbox") in headers
    assert ("x-content-type-options", "nosniff") in headers


async def test_lane_declines_what_it_cannot_decide_at_once(single_user: ServedGateway) -> None:
    """A body over SMALL_BODY, chunked framing, GETs, other paths and a scaled-to-zero
    model take the ASGI way, and are answered as before."""
    lane = lane_of(single_user)
    async with httpx.AsyncClient(base_url=single_user.url, timeout=15) as c:
        await c.post(INFER, content=b"{}")
        before = lane.served

        async def chunks() -> AsyncIterator[bytes]:
            yield b"ab"
            yield b"cd"

        big = await c.post(INFER, content=b"y" * (70 * 1024))
        chunked = await c.post(INFER, content=chunks())
        read = await c.get(f"/serving/{NS}/m/v2/models/m")
        gone = await c.post(f"/serving/{NS}/nowhere/v2/models/x/infer", content=b"{}")
        assert lane.served == before
    assert big.json()["body_bytes"] == 70 * 1024 and chunked.json()["body_bytes"] == 4
    assert read.json()["method"] == "GET"
    assert gone.status_code == 503 and "no live endpoint" in gone.json()["message"]


async def test_lane_keeps_pipelined_answers_in_order(single_user: ServedGateway) -> None:
    """Three requests written at once on one connection: the first takes the lane, the
    others queue behind it (uvicorn's pipeline), and the answers come back in order."""
    async with httpx.AsyncClient(base_url=single_user.url, timeout=15) as c:
        await c.post(INFER, content=b"{}")
    before = lane_of(single_user).served
    reader, writer = await asyncio.open_connection("127.0.0.1", single_user.port)
    try:
        requests = b"".join(
            b"POST %b HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b"
            % (INFER.encode(), len(body), body)
            for body in (b"1", b"22", b"333")
        )
        writer.write(requests)
        sizes = []
        for _ in range(3):
            _, headers, body = await read_request(reader)
            sizes.append(json.loads(body)["body_bytes"])
        assert sizes == [1, 2, 3]
        assert lane_of(single_user).served > before
    finally:
        writer.close()


async def test_lane_http10_client_gets_connection_close(single_user: ServedGateway) -> None:
    async with httpx.AsyncClient(base_url=single_user.url, timeout=15) as c:
        await c.post(INFER, content=b"{}")
    before = lane_of(single_user).served
    reader, writer = await asyncio.open_connection("127.0.0.1", single_user.port)
    try:
        writer.write(b"POST %b HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}" % INFER.encode())
        answer = await asyncio.wait_for(reader.read(), 10)  # to EOF: the gateway closes
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"\r\nconnection: close" in head.lower()
    assert json.loads(body)["body_bytes"] == 2
    assert lane_of(single_user).served == before + 1


@contextlib.asynccontextmanager
async def raw_gateway(
    gateway_state: Path, gateway_db: str, handler: Callable[..., Any], name: str
) -> AsyncIterator[tuple[ServedGateway, RawServer]]:
    """A served gateway whose InferenceService ``name`` is a raw TCP server's ``handler``."""
    async with RawServer(handler) as raw:
        settings = gateway_settings(gateway_state, raw.url, gateway_db, auth_mode="single-user")
        server = await served(settings)
        gw_of(server).route_table.upsert("inferenceservice", NS, name, [(raw.url, 1)])
        try:
            yield server, raw
        finally:
            await server.stop()


async def test_lane_streams_server_sent_events_as_they_come(
    gateway_state: Path, gateway_db: str
) -> None:
    """A chunked answer (an OpenAI chat completion with stream=true) is relayed event by
    event: the first reaches the client while the upstream still holds back the second."""
    release = asyncio.Event()
    connections: list[int] = []  # the connection of each request (the gateway's own
    # readiness checks open others to this server: it stands in for its services too)

    async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            line, _, _ = await read_request(reader)
            if "/chat/" in line:
                connections.append(n)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for i in range(3):
                if i == 2:
                    await release.wait()
                event = b'data: {"n": %d}\n\n' % i
                writer.write(b"%x\r\n%b\r\n" % (len(event), event))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with raw_gateway(gateway_state, gateway_db, sse, "chat") as (server, raw):
        url = f"/serving/{NS}/chat/openai/v1/chat/completions"
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            release.set()
            warm = await c.post(url, json={"stream": True})
            assert warm.text.count("data:") == 3
            release.clear()
            before = lane_of(server).served
            events = []
            async with c.stream("POST", url, json={"stream": True}) as r:
                assert r.headers["content-type"] == "text/event-stream"
                assert r.headers["content-security-policy"] == "sandbox"
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        events.append(json.loads(line[5:])["n"])
                        if len(events) == 2:
                            release.set()  # the third is sent only once two arrived
            assert events == [0, 1, 2]
            assert lane_of(server).served == before + 1
            # The connection is kept and reused: the next answer comes the same way.
            assert (await c.post(url, json={})).text.count("data:") == 3
        assert len(connections) == 3 and len(set(connections)) == 1


async def test_lane_client_leaving_a_stream_closes_the_upstream(
    gateway_state: Path, gateway_db: str
) -> None:
    upstream_gone = asyncio.Event()
    answered = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        while True:
            line, _, _ = await read_request(reader)
            if "/serving/" in line:
                answered.append(line)
            if "/serving/" not in line or len(answered) == 1:  # the gateway's own checks,
                # and the first infer: answered, the connection kept
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
                continue
            break
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(b"5\r\ntick\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            upstream_gone.set()
            raise

    async with raw_gateway(gateway_state, gateway_db, endless, "endless") as (server, raw):
        gw = gw_of(server)
        url = f"/serving/{NS}/endless/v2/models/endless/infer"
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            assert (await c.post(url, content=b"{}")).text == "ok"
            before = lane_of(server).served
            async with c.stream("POST", url, content=b"{}") as r:
                got = b""
                async for chunk in r.aiter_bytes():
                    got += chunk
                    if got.count(b"tick") >= 3:
                        break
            assert gw.activity.in_flight[(NS, "endless")] == 1
        await asyncio.wait_for(upstream_gone.wait(), 10)
        assert gw.activity.in_flight[(NS, "endless")] == 0
        assert lane_of(server).served == before  # it never completed


async def test_lane_upstream_failures_are_status_answers(
    gateway_state: Path, gateway_db: str
) -> None:
    """After one good answer on a kept-alive connection, the upstream breaks: the lane's
    answers are the gateway's Status JSON (502 closed, 504 silent), with the sandbox
    headers, and the next request still works (on a new connection)."""
    mode = {"next": "ok"}

    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        while True:
            line, _, _ = await read_request(reader)
            if "/serving/" not in line:  # the gateway's own checks of its services
                pass
            elif mode["next"] == "close":
                return  # closed without an answer
            if mode["next"] == "silent":
                await asyncio.sleep(30)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async with raw_gateway(gateway_state, gateway_db, flaky, "flaky") as (server, raw):
        lane = lane_of(server)
        url = f"/serving/{NS}/flaky/v2/models/flaky/infer"
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            assert (await c.post(url, content=b"{}")).text == "ok"
            mode["next"] = "close"
            before = lane.served
            r = await c.post(url, content=b"{}")
            assert lane.served == before + 1
            assert r.status_code == 502
            assert r.json()["kind"] == "Status" and r.json()["message"] == "upstream unavailable"
            assert r.headers["content-security-policy"] == "sandbox"
            mode["next"] = "ok"
            assert (await c.post(url, content=b"{}")).text == "ok"  # a new connection
            mode["next"] = "silent"
            gw_of(server).upstream.read_timeout = 0.5
            started = time.monotonic()
            r = await c.post(url, content=b"{}")
            assert r.status_code == 504 and r.json()["message"] == "upstream timed out"
            assert r.json()["reason"] == "Timeout" and time.monotonic() - started < 5
            assert r.headers["x-content-type-options"] == "nosniff"
            assert lane.served == before + 2


async def test_lane_in_oidc_mode_serves_verified_tokens_and_leaves_refusals(
    gateway_state: Path, upstream: RunningServer, gateway_db: str, oidc_settings, oidc
) -> None:
    """Bearer tokens: the first request verifies the token (ASGI way), later ones take the
    lane; another tenant's model is a 403 and no credentials a 401, both the ASGI way's
    answers (a sign-in redirect without credentials)."""
    server = await served(oidc_settings(oidc_audiences="shipyard,shipyard-cli"))
    gw = gw_of(server)
    await gw.store.ensure_profile(NS, "user@example.com")
    gw.route_table.upsert("inferenceservice", NS, "m", [(upstream.url, 1)])
    lane = lane_of(server)
    owner = {"authorization": f"Bearer {await oidc.id_token('user@example.com')}"}
    stranger = {"authorization": f"Bearer {await oidc.id_token('second@example.com')}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            assert (await c.post(INFER, content=b"{}", headers=owner)).status_code == 200
            before = lane.served
            # Tenant code gets nothing of the visitor through the lane either: no token, no
            # assertion, and forged identity headers are dropped, not passed on.
            forged = {
                "x-shipyard-identity": "forged",
                "kubeflow-userid": "admin@example.com",
                "kubeflow-groups": "platform-admins",
            }
            r = await c.post(INFER, content=b"{}", headers={**owner, **forged})
            assert r.status_code == 200, r.text
            seen = r.json()
            assert seen["authorization"] is None and seen["identity"] is None
            assert seen["kubeflow_userid"] is None and seen["assertions"] == 0
            assert lane.served == before + 1
            await c.post(INFER, content=b"{}", headers=stranger)  # verified, and refused
            r = await c.post(INFER, content=b"{}", headers=stranger)
            assert r.status_code == 403
            assert r.json()["message"].startswith('User "second@example.com" cannot create')
            r = await c.post(INFER, content=b"{}")  # no credentials: a browser is sent to sign in
            assert r.status_code == 302 and r.headers["location"].startswith("/oauth2/start?")
            r = await c.post(INFER, content=b"{}", headers={"authorization": "Bearer x.y.z"})
            assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
            assert lane.served == before + 1
    finally:
        gw.route_table.remove("inferenceservice", NS, "m")
        await server.stop()


async def test_lane_serves_kserve_host_form_as_the_path_form(single_user: ServedGateway) -> None:
    """``Host: {name}.{ns}.example.com`` takes the lane too, upstream as the path form
    (``ProxyFastPath.on_model_host``); a host under the domain that names no model is the
    ASGI way's 404."""
    lane = lane_of(single_user)
    host = {"host": f"m.{NS}.example.com"}
    async with httpx.AsyncClient(base_url=single_user.url, timeout=15) as c:
        await c.post(INFER, content=b"{}")
        before = lane.served
        by_host = await c.post("/v2/models/m/infer", content=b'{"a":1}', headers=host)
        assert lane.served == before + 1
        by_path = await c.post(INFER, content=b'{"a":1}')
        assert comparable(by_host) == comparable(by_path)
        assert by_host.json()["path"] == INFER and by_host.json()["body_bytes"] == 7
        bad = await c.post("/v2/models/m/infer", content=b"{}", headers={"host": "x.example.com"})
        assert bad.status_code == 404 and "{name}.{namespace}.example.com" in bad.json()["message"]
        assert lane.served == before + 2


async def test_lane_declining_for_a_new_endpoint_keeps_its_pick(
    single_user: ServedGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A canary beside the stable server: the lane picks the canary, has no connection to it
    yet and declines; the ASGI way must send that request to the canary too. Picking again
    there cut a new endpoint's share (20% became 4% until its first request: the MLOps
    example's canary went unanswered in 40 requests). The weighted pick is made
    deterministic here: stable, then canary then stable."""
    from gateway import routes

    async def canary(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\ncanary")
            await writer.drain()

    gw = gw_of(single_user)
    async with RawServer(canary) as raw:
        stable_url = gw.route_table.targets("inferenceservice", NS, "m")[0][0]
        gw.route_table.upsert("inferenceservice", NS, "m", [(stable_url, 80), (raw.url, 20)])
        points = iter([1.0, 99.0, 1.0])  # route_table.pick's draws in [0, 100)
        monkeypatch.setattr(routes.random, "uniform", lambda _a, _b: next(points))
        async with httpx.AsyncClient(base_url=single_user.url, timeout=15) as c:
            warm = await c.post(INFER, content=b"{}")  # stable: its connection stays idle
            assert warm.json()["path"] == INFER
            r = await c.post(INFER, content=b"{}")  # the lane picks the canary, declines
        assert r.status_code == 200 and r.text == "canary"


class Kept(logging.Handler):
    """Keeps the records it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_lane_access_log_line_is_uvicorns(
    gateway_state: Path, upstream: RunningServer, gateway_db: str
) -> None:
    """At log level info the lane logs each request as uvicorn's access log does, in the
    record shape uvicorn's AccessFormatter unpacks (client, method, path, version, status):
    a record it cannot format is a logging error on every request."""
    settings = gateway_settings(gateway_state, upstream.url, gateway_db, auth_mode="single-user")
    server = ServedGateway(create_app(settings), free_port(), log_level="info")
    # uvicorn's logging configuration (made with the server's) does not propagate access
    # records to the root logger: listen on the access logger itself.
    handler = Kept()
    records = handler.records
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    await server.start()
    gw_of(server).route_table.upsert("inferenceservice", NS, "m", [(upstream.url, 1)])
    lane = lane_of(server)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            for _ in range(2):  # the second goes the lane's way
                before = lane.served
                assert (await c.post(INFER, content=b"{}")).status_code == 200
        assert lane.served == before + 1
    finally:
        access.removeHandler(handler)
        await server.stop()
    formatter = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s')
    # Every record formats (the access logger is the process's: the upstream's lines for the
    # same requests are there too), and the lane's is among them.
    lines = [formatter.format(r) for r in records]
    assert sum(line.endswith(f'"POST {INFER} HTTP/1.1" 200 OK') for line in lines) >= 2, lines


async def test_second_user_on_a_shared_connection_gets_nothing_of_the_first_ones_admission(
    gateway_state: Path, upstream: RunningServer, gateway_db: str
) -> None:
    """The hostile case of the per-connection ``RequestShape``: a trusted proxy (oauth2-proxy
    in front, trusted-header mode) carries several users over one kept-alive connection. The
    owner's calls take the lane; a user with no access to the namespace, on the same
    connection, same URL and body, asking as themself or as the owner's groups, is refused
    every time, and the lane serves none of it."""
    server = await served(trusted_header_settings(gateway_state, upstream.url, gateway_db))
    gw = gw_of(server)
    await gw.store.ensure_profile(NS, "user@example.com")
    gw.route_table.upsert("inferenceservice", NS, "m", [(upstream.url, 1)])
    lane = lane_of(server)
    owner = {"kubeflow-userid": "user@example.com", "content-type": "application/json"}
    intruders = [
        {"kubeflow-userid": "intruder@example.com", "content-type": "application/json"},
        {**owner, "kubeflow-userid": "intruder@example.com", "kubeflow-groups": "kubeflow"},
    ]
    one_connection = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15, limits=one_connection) as c:
            for _ in range(2):  # the first opens the upstream connection the lane needs idle
                assert (await c.post(INFER, content=b"{}", headers=owner)).status_code == 200
            served_before = lane.served
            assert served_before >= 1
            for round_ in range(2):
                for headers in intruders:
                    r = await c.post(INFER, content=b"{}", headers=headers)
                    assert r.status_code == 403, (round_, r.text)
                    assert 'User "intruder@example.com" cannot' in r.json()["message"]
                # The owner again, on the same connection, between the intruder's tries.
                assert (await c.post(INFER, content=b"{}", headers=owner)).status_code == 200
            assert lane.served == served_before + 2  # the owner's two, none of the intruder's
    finally:
        await server.stop()


@pytest.fixture
def same_heads(monkeypatch: pytest.MonkeyPatch) -> dict[bytes, list[int]]:
    """What ``SameHead.body_length`` answered (-1: parsed anew), in order, for requests
    (``b"POST"``) and for answers (``b"HTTP"``)."""
    answers: dict[bytes, list[int]] = {b"POST": [], b"HTTP": []}
    real = SameHead.body_length

    def spy(self: SameHead, data: bytes) -> int:
        length = real(self, data)
        answers[data[:4]].append(length)
        return length

    monkeypatch.setattr(SameHead, "body_length", spy)
    return answers


def post(body: bytes, path: str = INFER, content_type: bytes = b"application/json") -> bytes:
    return b"POST %b HTTP/1.1\r\nhost: x\r\ncontent-type: %b\r\ncontent-length: %d\r\n\r\n%b" % (
        path.encode(),
        content_type,
        len(body),
        body,
    )


async def test_lane_repeats_a_request_head_only_for_the_same_bytes(
    single_user: ServedGateway, same_heads: dict[bytes, list[int]]
) -> None:
    """A request whose bytes are the last lane request's head (its length aside) and its
    whole body is admitted without llhttp; a request with more bytes behind it (a second
    request in the same write), or a head one byte apart, is parsed, and each is answered
    as itself."""
    lane = lane_of(single_user)
    async with httpx.AsyncClient(base_url=single_user.url, timeout=15) as c:
        await c.post(INFER, content=b"{}")  # opens the kept-alive upstream connection
    reader, writer = await asyncio.open_connection("127.0.0.1", single_user.port)

    async def answer() -> tuple[str, dict[str, Any]]:
        line, _, body = await asyncio.wait_for(read_request(reader), 10)
        return line, json.loads(body)

    try:
        before = lane.served
        for body in (b"1", b"22", b"x" * 333):
            writer.write(post(body))
            line, echoed = await answer()
            assert line.startswith("HTTP/1.1 200") and echoed["body_bytes"] == len(body)
        assert lane.served == before + 3
        requests = same_heads[b"POST"]
        assert requests[-2:] == [2, 333]  # the second and third were the first's head

        smuggled = post(b"{}", f"/serving/{NS}/nowhere/v2/models/x/infer")
        writer.write(post(b"4444") + smuggled)
        line, echoed = await answer()
        assert echoed["body_bytes"] == 4 and echoed["path"] == INFER
        line, refused = await answer()
        assert line.startswith("HTTP/1.1 503") and "no live endpoint" in refused["message"]
        assert requests[-1] == -1

        writer.write(post(b"55555", content_type=b"application/jsoN"))
        line, echoed = await answer()
        assert echoed["body_bytes"] == 5 and requests[-1] == -1
    finally:
        writer.close()


async def test_lane_takes_a_repeated_answer_head_only_for_the_same_bytes(
    gateway_state: Path, gateway_db: str, same_heads: dict[bytes, list[int]]
) -> None:
    """The upstream is tenant code. Its answers with the last answer's head (any length) are
    relayed without llhttp, each with its own body; a header it changes reaches the client;
    bytes it sends after an answer's body (a second answer nobody asked for) are never
    anyone's answer."""
    extra = {"header": b"", "after": b""}

    async def model(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        while True:
            _, _, body = await read_request(reader)
            writer.write(  # one write: the answer arrives whole
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n%bcontent-length: %d\r\n\r\n%b%b"
                % (extra["header"], len(body) + 4, b"got:" + body, extra["after"])
            )
            extra["after"] = b""
            await writer.drain()

    async with raw_gateway(gateway_state, gateway_db, model, "raw") as (server, raw):
        url = f"/serving/{NS}/raw/v2/models/raw/infer"
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=server.url, timeout=15, limits=one) as c:
            for body in (b"a", b"bb", b"ccc", b"d" * 1000):
                r = await c.post(url, content=body)
                assert r.text == "got:" + body.decode()
            answers = same_heads[b"HTTP"]
            assert answers[-2:] == [7, 1004]  # the third and fourth answers, taken whole

            extra["header"] = b"x-changed: yes\r\n"
            r = await c.post(url, content=b"e")
            assert r.text == "got:e" and r.headers["x-changed"] == "yes"
            assert answers[-1] == -1

            extra["after"] = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil"
            assert (await c.post(url, content=b"f")).text == "got:f"
            for body in (b"g", b"hh"):
                r = await c.post(url, content=body)
                assert r.status_code == 200 and r.text == "got:" + body.decode()
        assert raw.connections >= 1


async def test_lane_keep_alive_closes_an_idle_connection_and_no_busy_one(
    single_user: ServedGateway, same_heads: dict[bytes, list[int]]
) -> None:
    """uvicorn's keep-alive timeout (here 1 s) holds for lane answers, whose timer is armed
    once per idle spell: requests every 0.3 s for 2.5 s keep the connection, all answered in
    the lane; then idle, the gateway closes it after about the timeout."""
    single_user.server.config.timeout_keep_alive = 1  # read by each new connection
    async with httpx.AsyncClient(base_url=single_user.url, timeout=15) as c:
        await c.post(INFER, content=b"{}")
    reader, writer = await asyncio.open_connection("127.0.0.1", single_user.port)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 2.5:
            writer.write(post(b"{}"))
            line, _, _ = await asyncio.wait_for(read_request(reader), 10)
            assert line.startswith("HTTP/1.1 200")
            await asyncio.sleep(0.3)
        assert len([n for n in same_heads[b"POST"] if n >= 0]) >= 6
        idle = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the gateway
        assert 0.6 < time.monotonic() - idle < 3
    finally:
        writer.close()
