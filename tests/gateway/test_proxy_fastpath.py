"""The raw-ASGI proxy path: upstream failures as Status objects, no per-request database work."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import event

from gateway.app import create_app
from tests.conftest import free_port
from tests.gateway.conftest import ServedGateway, gateway_settings
from tests.gateway.test_upstream import RawServer, read_request

NS = "kubeflow-user-example-com"


async def test_proxy_upstream_down_is_502_and_silent_upstream_is_504(
    gateway_state: Path, gateway_db: str
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with RawServer(silent) as slow:
        settings = gateway_settings(
            gateway_state,
            f"http://127.0.0.1:{free_port()}",
            gateway_db,
            auth_mode="single-user",
            automl_url=slow.url,
            upstream_read_timeout=0.3,
        )
        server = ServedGateway(create_app(settings), free_port())
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
                r = await c.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims")
                assert r.status_code == 502
                assert r.json()["kind"] == "Status" and r.json()["code"] == 502
                assert r.json()["message"] == (
                    "the notebook service is unavailable (it may be restarting); "
                    "retry the request shortly"
                )
                assert r.headers["retry-after"] == "2"
                r = await c.get(f"/apis/kubeflow.org/v1beta1/namespaces/{NS}/experiments")
                assert r.status_code == 504 and r.json()["reason"] == "Timeout"
        finally:
            await server.stop()


async def test_proxy_runs_no_database_query_per_request(client, gateway, oidc) -> None:
    token = await oidc.id_token("user@example.com")
    statements: list[str] = []
    reloads = 0
    store = gateway.gw.store
    original_reload = store.reload

    async def counting_reload() -> None:
        nonlocal reloads
        reloads += 1
        await original_reload()

    def on_execute(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = gateway.gw.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    store.reload = counting_reload
    try:
        for _ in range(40):
            r = await client.get(
                f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks",
                headers={"authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200
    finally:
        store.reload = original_reload
        event.remove(engine, "before_cursor_execute", on_execute)
    # Only the periodic profile snapshot reload may touch the database (two SELECTs).
    assert len(statements) <= 2 * reloads, statements


async def test_proxy_refuses_dot_segments(client, oidc) -> None:
    token = await oidc.id_token("user@example.com")
    r = await client.get(
        f"/apis/kubeflow.org/v1/namespaces/{NS}/x/%2e%2e/notebooks",
        headers={"authorization": f"Bearer {token}"},
    )
    assert r.status_code == 400 and r.json()["kind"] == "Status"


async def test_proxy_unknown_path_still_404_status(client) -> None:
    r = await client.get("/no/such/thing", headers={"authorization": "Bearer x.y.z"})
    assert r.status_code == 404 and r.json()["kind"] == "Status"
