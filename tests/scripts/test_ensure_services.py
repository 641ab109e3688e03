"""scripts/ensure-services.sh: the throwaway Postgres and NATS that `make test` starts on
machines without them. Forced with ENSURE_SERVICES_THROWAWAY=1, since this machine has both."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ensure-services.sh"


def _exports(stdout: str) -> dict[str, str]:
    pairs = [line.removeprefix("export ").split("=", 1) for line in stdout.splitlines()]
    return {k: v for k, v in pairs}


def _nats_info(url: str) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=2) as conn:
        return conn.recv(4096)


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=0.5).close()
        return True
    except OSError:
        return False


async def _select_one(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


def test_ensure_services_throwaway_start_and_stop() -> None:
    env = {**os.environ, "ENSURE_SERVICES_THROWAWAY": "1"}
    done = subprocess.run(
        [str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    exports = _exports(done.stdout)
    services_dir = Path(exports["SHIPYARD_TEST_SERVICES_DIR"])
    try:
        pg, nats = exports["SHIPYARD_TEST_PG_DSN"], exports["SHIPYARD_TEST_NATS_URL"]
        assert not pg.endswith(":5432/postgres") and not nats.endswith(":4222")
        assert asyncio.run(_select_one(pg)) == 1
        assert b'"jetstream":true' in _nats_info(nats)
    finally:
        subprocess.run([str(SCRIPT), "--stop", str(services_dir)], timeout=60, check=True)
    assert not services_dir.exists()
    assert not _listening(pg.replace("postgresql://postgres@", "tcp://"))
    assert not _listening(nats)


@pytest.mark.skipif(
    not (_listening("tcp://127.0.0.1:5432") and _listening("nats://127.0.0.1:4222")),
    reason="no Postgres on :5432 or no NATS on :4222 on this machine",
)
def test_ensure_services_reuses_answering_servers() -> None:
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=60, check=True)
    exports = _exports(done.stdout)
    assert "SHIPYARD_TEST_SERVICES_DIR" not in exports
    assert exports["SHIPYARD_TEST_PG_DSN"].endswith("@127.0.0.1:5432/postgres")
    assert exports["SHIPYARD_TEST_NATS_URL"] == "nats://127.0.0.1:4222"
