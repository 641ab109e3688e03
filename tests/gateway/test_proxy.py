"""The proxy against a real upstream: streaming, limits, WebSocket, dynamic routes."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.app import create_app
from gateway.routes import RouteFeeder, RouteTable, resolve
from services.common import dataplane
from tests.conftest import free_port
from tests.gateway.conftest import RunningServer, ServedGateway, gateway_settings

NS = "kubeflow-user-example-com"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_proxy_streams_watch_response_incrementally(client, oidc) -> None:
    token = await oidc.id_token("user@example.com")
    first_at = None
    start = time.monotonic()
    lines = []
    async with client.stream(
        "GET", "/apis/kubeflow.org/v1/namespaces/x/notebooks", headers=bearer(token)
    ) as r:
        assert r.status_code == 403  # sanity: path family authorizes before streaming
    # /stream/{n} sits under the notebook route family only via the namespace catch-all:
    path = f"/apis/kubeflow.org/v1/namespaces/{NS}/stream/5?watch=1"
    async with client.stream("GET", path, headers=bearer(token)) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if first_at is None:
                first_at = time.monotonic() - start
            lines.append(json.loads(line))
    assert len(lines) == 5
    assert first_at is not None and first_at < 0.6  # the whole stream takes ~1 s


async def test_proxy_large_upload_streams_and_limit_is_413(
    gateway_state: Path, upstream, gateway_db, oidc
) -> None:
    settings = gateway_settings(
        gateway_state, upstream.url, gateway_db, auth_mode="single-user", max_body_bytes=1024 * 1024
    )
    server = ServedGateway(create_app(settings), free_port())
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            url = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"

            async def chunks(n: int):
                for _ in range(n):
                    yield b"x" * 65536

            r = await c.post(url, content=chunks(8))  # 512 KiB chunked: passes
            assert r.status_code == 200 and r.json()["body_bytes"] == 8 * 65536
            r = await c.post(url, content=chunks(32))  # 2 MiB chunked: refused mid-stream
            assert r.status_code == 413 and r.json()["kind"] == "Status"
            r = await c.post(url, content=b"y" * (2 * 1024 * 1024))  # declared length
            assert r.status_code == 413
    finally:
        await server.stop()


async def test_proxy_rate_limit_returns_429_with_retry_after(
    gateway_state, upstream, gateway_db
) -> None:
    settings = gateway_settings(
        gateway_state,
        upstream.url,
        gateway_db,
        auth_mode="single-user",
        rate_limit_per_second=1,
        rate_limit_burst=3,
    )
    server = ServedGateway(create_app(settings), free_port())
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            codes = [(await c.get(f"/api/v1/workflows/{NS}")).status_code for _ in range(5)]
            r = await c.get(f"/api/v1/workflows/{NS}")
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # Data planes (a model's inference, a notebook's own traffic) are not API-limited.
        cast(FastAPI, server.server.config.app).state.gw.route_table.upsert(
            "inferenceservice", NS, "m", [(upstream.url, 1)]
        )
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            served = [
                (await c.get(f"/serving/{NS}/m/v2/health/ready")).status_code for _ in range(6)
            ]
        assert 429 not in served, served
    finally:
        await server.stop()


async def test_proxy_single_user_mode_asserts_default_user(
    gateway_state, upstream, gateway_db, caplog
) -> None:
    settings = gateway_settings(gateway_state, upstream.url, gateway_db, auth_mode="single-user")
    server = ServedGateway(create_app(settings), free_port())
    with caplog.at_level("WARNING"):
        await server.start()
    try:
        assert "SINGLE-USER MODE IS ON" in caplog.text
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
            r = await c.get("/apis/v2beta1/experiments")
            assert r.status_code == 200
            assert r.json()["identity"]["namespace"] == NS
            assert r.json()["identity"]["user"] == "user@example.com"
            r = await c.post("/apis/v2beta1/experiments", json={"namespace": "other-ns"})
            assert r.status_code == 403
    finally:
        await server.stop()


async def test_proxy_notebook_strips_authorization_and_proxies_websocket(
    client, gateway, gateway_state, upstream, oidc
) -> None:
    gateway.gw.route_table.upsert("notebook", NS, "nb", [(upstream.url, 1)])
    key = dataplane.load_or_create_key(gateway_state / "keys" / "dataplane.key")
    jupyter = f"token {dataplane.notebook_token(key, NS, 'nb')}"
    token = await oidc.id_token("user@example.com")
    r = await client.get(f"/notebook/{NS}/nb/api/kernels", headers=bearer(token))
    # Tenant code gets the server's own token, never the visitor's token or identity.
    assert r.status_code == 200 and r.json()["authorization"] == jupyter
    assert r.json()["identity"] is None and r.json()["assertions"] == 0
    r = await client.get(f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks", headers=bearer(token))
    assert r.json()["authorization"] is not None  # kept for the API services
    ws_url = gateway.url.replace("http", "ws") + f"/notebook/{NS}/nb/ws"
    async with ws_connect(ws_url, additional_headers=bearer(token), open_timeout=5) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello == {"identity": None, "authorization": jupyter}
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 5) == "echo:ping"
    other = await oidc.id_token("second@example.com")
    gateway.gw.route_table.upsert("notebook", NS, "nb", [(upstream.url, 1)])
    # Refused at the handshake (or closed before any message): never the notebook's hello.
    with pytest.raises((InvalidStatus, ConnectionClosed)):
        async with ws_connect(ws_url, additional_headers=bearer(other), open_timeout=5) as ws:
            await asyncio.wait_for(ws.recv(), 5)


async def test_proxy_unknown_dynamic_route_is_503(client, oidc) -> None:
    token = await oidc.id_token("user@example.com")
    r = await client.get(f"/serving/{NS}/nope/v1/models/nope", headers=bearer(token))
    assert r.status_code == 503 and r.json()["kind"] == "Status"


def canary_isvc(predictor_status: dict[str, Any]) -> dict[str, Any]:
    """InferenceService ``m`` sending 20% to its latest revision; its predictor's status."""
    return {
        "metadata": {"namespace": NS, "name": "m"},
        "spec": {"predictor": {"canaryTrafficPercent": 20}},
        "status": {"components": {"predictor": predictor_status}},
    }


def test_route_table_weighted_canary_split() -> None:
    table = RouteTable()
    feeder = RouteFeeder(table)
    feeder.apply(
        "inferenceservice",
        canary_isvc({"previousRolledoutEndpoint": "http://a", "latestEndpoint": "http://b"}),
    )
    rng = random.Random(7)
    picks = [table.pick("inferenceservice", NS, "m", rng) for _ in range(2000)]
    share = picks.count("http://b") / len(picks)
    assert 0.15 < share < 0.25
    feeder.apply_event(
        "shipyard.serving.inferenceservice.deleted", {"metadata": {"namespace": NS, "name": "m"}}
    )
    assert table.pick("inferenceservice", NS, "m") is None
    feeder.apply_event(
        "shipyard.notebook.notebook.updated",
        {"metadata": {"namespace": NS, "name": "n"}, "status": {"url": "http://127.0.0.1:9999"}},
    )
    assert table.pick("notebook", NS, "n") == "http://127.0.0.1:9999"


def test_route_table_spreads_canary_shares_over_replicas() -> None:
    table = RouteTable()
    RouteFeeder(table).apply(
        "inferenceservice",
        canary_isvc(
            {
                "endpoint": "http://a0",
                "endpoints": ["http://a0", "http://a1", "http://a2"],
                "latestEndpoint": "http://b0",
                "latestEndpoints": ["http://b0"],
            }
        ),
    )
    rng = random.Random(7)
    picks = [table.pick("inferenceservice", NS, "m", rng) for _ in range(3000)]
    assert 0.15 < picks.count("http://b0") / len(picks) < 0.25
    for stable in ("http://a0", "http://a1", "http://a2"):
        assert 0.22 < picks.count(stable) / len(picks) < 0.31


def test_route_table_spreads_a_graph_over_its_routers() -> None:
    """An InferenceGraph with several routers (minReplicas) lists them in status.endpoints;
    one router, only in status.endpoint; none ready, nothing routed."""
    table = RouteTable()
    feeder = RouteFeeder(table)
    meta = {"namespace": NS, "name": "g"}
    routers = ["http://r0", "http://r1", "http://r2"]
    feeder.apply(
        "inferencegraph",
        {"metadata": meta, "status": {"endpoint": routers[0], "endpoints": routers}},
    )
    rng = random.Random(7)
    picks = [table.pick("inferencegraph", NS, "g", rng) for _ in range(3000)]
    for router in routers:
        assert 0.28 < picks.count(router) / len(picks) < 0.39, router
    feeder.apply("inferencegraph", {"metadata": meta, "status": {"endpoint": "http://r0"}})
    assert table.targets("inferencegraph", NS, "g") == [("http://r0", 100)]
    feeder.apply("inferencegraph", {"metadata": meta, "status": {"url": "http://gw/graphs"}})
    assert table.pick("inferencegraph", NS, "g") is None


def test_route_table_sends_a_fronted_service_to_its_transformer_only() -> None:
    """With a transformer in the status, the service's traffic goes to its serving replicas;
    with none serving (starting, or replaced after a change), nowhere (the request waits as
    for a start from zero), never to the predictor, which answers only under -predictor."""
    table = RouteTable()
    feeder = RouteFeeder(table)
    meta = {"namespace": NS, "name": "t"}
    predictor = {"url": "http://gw/serving/t-predictor", "endpoint": "http://p0"}

    def fronted(transformer: dict[str, Any]) -> dict[str, Any]:
        components = {"predictor": predictor, "transformer": transformer}
        return {"metadata": meta, "status": {"components": components}}

    feeder.apply("inferenceservice", fronted({"endpoint": "http://t0"}))
    assert table.targets("inferenceservice", NS, "t") == [("http://t0", 100)]
    feeder.apply(
        "inferenceservice",
        fronted({"endpoint": "http://t0", "endpoints": ["http://t0", "http://t1"]}),
    )
    assert table.targets("inferenceservice", NS, "t") == [("http://t0", 100), ("http://t1", 100)]
    feeder.apply("inferenceservice", fronted({"url": "http://gw/serving/t"}))
    assert table.pick("inferenceservice", NS, "t") is None
    # Without a transformer, the predictor again.
    unfronted = {"metadata": meta, "status": {"components": {"predictor": predictor}}}
    feeder.apply("inferenceservice", unfronted)
    assert table.targets("inferenceservice", NS, "t") == [("http://p0", 100)]


def test_route_table_resolves_every_family() -> None:
    cases = {
        f"/api/v1/namespaces/{NS}/persistentvolumeclaims/p": ("notebook", NS),
        f"/api/v1/namespaces/{NS}/configmaps/trial-templates": ("automl", NS),
        "/api/v1/configmaps": ("automl", None),
        f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks": ("notebook", NS),
        f"/apis/kubeflow.org/v1beta1/namespaces/{NS}/trials/t": ("automl", NS),
        f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/cronworkflows": ("pipeline", NS),
        "/apis/v2beta1/pipelines": ("pipeline", None),
        f"/api/v1/workflow-templates/{NS}": ("pipeline", NS),
        f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices": ("serving", NS),
        f"/notebook/{NS}/nb/lab": ("dynamic", NS),
        f"/serving/{NS}/m/v2/models/m/infer": ("dynamic", NS),
        "/apis/kubeflow.org/v1/profiles/x": ("gateway", None),
        f"/apis/kubeflow.org/v1/namespaces/{NS}/poddefaults": ("notebook", NS),
        "/kfam/v1/bindings": ("gateway", None),
    }
    for path, (target, ns) in cases.items():
        m = resolve(path)
        assert m is not None and (m.target, m.namespace) == (target, ns), path
    assert resolve("/etc/passwd") is None


async def test_proxy_warm_start_reads_service_lists(gateway_state, gateway_db) -> None:
    from fastapi import FastAPI

    svc = FastAPI()

    @svc.get("/apis/kubeflow.org/v1/notebooks")
    async def notebooks() -> dict:
        return {
            "items": [
                {
                    "metadata": {"namespace": NS, "name": "warm"},
                    "status": {"url": "http://127.0.0.1:7777"},
                }
            ]
        }

    upstream = RunningServer(svc, free_port())
    await upstream.start()
    settings = gateway_settings(gateway_state, upstream.url, gateway_db, auth_mode="single-user")
    server = ServedGateway(create_app(settings), free_port())
    await server.start()
    try:
        gw = cast(FastAPI, server.server.config.app).state.gw
        assert gw.route_table.pick("notebook", NS, "warm") == "http://127.0.0.1:7777"
    finally:
        await server.stop()
        await upstream.stop()


async def test_health_and_readiness(client, upstream) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert set(r.json()["services"]) == {"notebook", "automl", "pipeline", "serving", "gateway"}
