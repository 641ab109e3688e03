"""The model server's protocol (services/serving/modelserver/protocol.py): inference requests
answered in the protocol, byte for byte as the ASGI way answers them, and everything else
left to the ASGI way. Two real uvicorn servers on sockets, one app each: one with the
protocol's answerer, one without (the ASGI way only); the apps count the requests that reach
them through ASGI."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from services.serving.modelserver import protocol
from services.serving.modelserver.app import create_model_app
from services.serving.modelserver.loaders import load_model
from services.serving.modelserver.protocol import ModelHttpProtocol
from shipyard.ports import free_port

ECHO_MODEL = """def predict(instances):
    if instances == ["boom"]:
        raise RuntimeError("the model broke")
    return [row if not isinstance(row, list) else sum(row) for row in instances]
"""
PREFIX = "/serving/ns/m"
KEEP_ALIVE = 1  # seconds an idle connection stays open


class Counted:
    """The model app, counting the requests that reach it the ASGI way; ``lane=False``
    hides its answerer, so the protocol sends everything the ASGI way."""

    def __init__(self, app: Any, lane: bool) -> None:
        self.app = app
        self.asgi: list[str] = []
        self.answerer = app.answerer if lane else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.asgi.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


class Served:
    def __init__(self, app: Counted, port: int) -> None:
        self.app, self.port = app, port
        self.url = f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def serve(app: Counted) -> AsyncIterator[Served]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        http=ModelHttpProtocol,
        timeout_keep_alive=KEEP_ALIVE,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.02)
    try:
        yield Served(app, port)
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Served, Served]]:
    directory = tmp_path_factory.mktemp("echo")
    (directory / "model.py").write_text(ECHO_MODEL)
    model = load_model("m", "python", directory)
    lane_app = Counted(create_model_app(model, "v2", PREFIX), lane=True)
    asgi_app = Counted(create_model_app(model, "v2", PREFIX), lane=False)
    async with serve(lane_app) as lane, serve(asgi_app) as asgi:
        yield lane, asgi


def exchange(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(k, v) for k, v in response.headers.items() if k != "date"]
    return response.status_code, headers, response.content


V2 = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]}]}
BINARY_HEAD = json.dumps(
    {
        "inputs": [
            {"name": "x", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}}
        ],
        "parameters": {"binary_data_output": True},
    }
).encode()
BLOB = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 1) + b"!"


def chunked() -> Any:
    async def body() -> AsyncIterator[bytes]:
        text = json.dumps({"instances": [[1, 2], [5, 5]]}).encode()
        for i in range(0, len(text), 7):
            yield text[i : i + 7]

    return body()


#: (method, path, request keywords): every request the protocol answers itself.
LANE_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v2/models/m/infer", {"json": V2}),
    ("POST", f"{PREFIX}/v2/models/m/infer?x=1", {"json": V2}),
    ("POST", f"{PREFIX}/v2/models/m/versions/3/infer", {"json": V2}),
    ("POST", "/v1/models/m:predict", {"json": {"instances": [[1, 2], [3]]}}),
    (
        "POST",
        f"{PREFIX}/v1/models/m:predict",
        {
            "content": gzip.compress(b'{"instances": [[1, 2]]}'),
            "headers": {"content-encoding": "gzip"},
        },
    ),
    (
        "POST",
        "/v2/models/m/infer",
        {
            "content": BINARY_HEAD + BLOB,
            "headers": {"inference-header-content-length": str(len(BINARY_HEAD))},
        },
    ),
    ("POST", "/v1/models/m:predict", {"content": b"{"}),  # not JSON: 400
    ("POST", "/v2/models/m/infer", {"json": {"inputs": []}}),  # no inputs: 400
    ("POST", "/v1/models/m:predict", {"json": {"instances": ["boom"]}}),  # the model: 500
]


async def test_the_protocol_answers_as_the_asgi_way(servers: tuple[Served, Served]) -> None:
    lane, asgi = servers
    lane.app.asgi.clear()
    async with httpx.AsyncClient() as client:
        for method, path, kw in LANE_REQUESTS:
            mine = await client.request(method, lane.url + path, **kw)
            theirs = await client.request(method, asgi.url + path, **kw)
            assert exchange(mine) == exchange(theirs), (path, mine.text, theirs.text)
        statuses = [
            (await client.request(m, lane.url + p, **kw)).status_code for m, p, kw in LANE_REQUESTS
        ]
        body = chunked()  # a chunked request body arrives in several pieces
        streamed = await client.post(lane.url + "/v1/models/m:predict", content=body)
    assert statuses == [200, 200, 200, 200, 200, 200, 400, 400, 500]
    assert streamed.json() == {"predictions": [3, 10]}
    assert lane.app.asgi == []  # none of them went the ASGI way
    assert len(asgi.app.asgi) == len(LANE_REQUESTS)


async def test_other_requests_go_the_asgi_way(servers: tuple[Served, Served]) -> None:
    lane, _ = servers
    lane.app.asgi.clear()
    async with httpx.AsyncClient(base_url=lane.url) as client:
        wrong_method = await client.get("/v2/models/m/infer")
        unknown = await client.post("/v2/models/other/infer", json=V2)
        escaped = await client.post("/v2/models/%6D/infer", json=V2)
        ready = await client.get("/v2/health/ready")
        expect = await client.post(
            "/v2/models/m/infer", json=V2, headers={"expect": "100-continue"}
        )
    assert wrong_method.json() == {"error": "method GET not allowed on /v2/models/m/infer"}
    assert unknown.status_code == 404, unknown.text
    assert escaped.json()["outputs"][0]["data"] == [3, 7]  # /v2/models/m/infer, unescaped
    assert ready.json() == {"ready": True}
    assert expect.json()["outputs"][0]["data"] == [3, 7]
    assert lane.app.asgi == [
        "GET /v2/models/m/infer",
        "POST /v2/models/other/infer",
        "POST /v2/models/m/infer",
        "GET /v2/health/ready",
        "POST /v2/models/m/infer",
    ]


def request_bytes(body: bytes, *, close: bool = False, path: str = "/v1/models/m:predict") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: ms\r\ncontent-length: {len(body)}\r\n"
    head += "connection: close\r\n" if close else ""
    return head.encode() + b"\r\n" + body


async def read_answers(reader: asyncio.StreamReader) -> list[tuple[bytes, bytes]]:
    """Every response on the connection until the server closes it: (head, body)."""
    answers: list[tuple[bytes, bytes]] = []
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            assert exc.partial == b""
            return answers
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answers.append((head, await reader.readexactly(length)))


async def test_pipelined_requests_answered_in_order_then_closed(
    servers: tuple[Served, Served],
) -> None:
    """Three requests in one write, the second to the ASGI way (an unknown model) and the last
    with ``connection: close``: three answers in order, then the connection ends."""
    lane, _ = servers
    reader, writer = await asyncio.open_connection("127.0.0.1", lane.port)
    writer.write(
        request_bytes(b'{"instances": [[1, 1]]}')
        + request_bytes(b'{"instances": []}', path="/v1/models/other:predict")
        + request_bytes(b'{"instances": [[2, 2]]}', close=True)
    )
    await writer.drain()
    answers = await asyncio.wait_for(read_answers(reader), 10)
    writer.close()
    assert [json.loads(body) for _, body in answers] == [
        {"predictions": [2]},
        {"error": "Model with name other does not exist."},
        {"predictions": [4]},
    ]
    assert answers[0][0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close" not in answers[0][0]
    assert b"\r\nconnection: close\r\n" in answers[2][0]


async def test_a_body_over_the_limit_is_a_413(
    servers: tuple[Served, Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit holds in the protocol as in the ASGI way; the connection goes on."""
    lane, _ = servers
    monkeypatch.setattr(protocol, "MAX_BODY", 1000)
    reader, writer = await asyncio.open_connection("127.0.0.1", lane.port)
    writer.write(request_bytes(b" " * 2000) + request_bytes(b'{"instances": [[1]]}', close=True))
    await writer.drain()
    answers = await asyncio.wait_for(read_answers(reader), 10)
    writer.close()
    assert answers[0][0].startswith(b"HTTP/1.1 413 ")
    assert b"request body over" in answers[0][1]
    assert json.loads(answers[1][1]) == {"predictions": [1]}


async def test_an_idle_connection_is_closed_after_the_keep_alive(
    servers: tuple[Served, Served],
) -> None:
    """After an answer from the protocol, the keep-alive timer runs as after an ASGI one."""
    lane, _ = servers
    reader, writer = await asyncio.open_connection("127.0.0.1", lane.port)
    writer.write(request_bytes(b'{"instances": [[1]]}'))
    await writer.drain()
    loop = asyncio.get_running_loop()
    answered = loop.time()
    answers = await asyncio.wait_for(read_answers(reader), KEEP_ALIVE + 5)  # until closed
    writer.close()
    assert [json.loads(body) for _, body in answers] == [{"predictions": [1]}]
    assert loop.time() - answered >= KEEP_ALIVE * 0.9
