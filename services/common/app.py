"""The service application factory: every service is wired the same way.

``build_service`` returns a FastAPI app whose lifespan opens the database, runs the
service's migrations, connects the event bus in the background (the service starts
and serves even while NATS is down; events wait in the outbox), starts the outbox
relay, the components every replica runs, and the leader election, under which the
controllers run in one replica only (``ServiceContext.elect``, services/common/leader.py);
it stops them in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import MetaData
from sqlalchemy.exc import DBAPIError

from services.common import migrate
from services.common.auth import AssertionMiddleware, IdentityDep
from services.common.db import Database
from services.common.errors import ApiError, ErrorDiagnosis, ErrorRenderer, install_error_handlers
from services.common.events.bus import EventBus
from services.common.events.changes import ChangeFeed
from services.common.events.outbox import stage_event
from services.common.events.relay import OutboxRelay
from services.common.events.streams import keep_stream
from services.common.identity import AssertionVerifier
from services.common.leader import LeaderElection, Lifecycle
from services.common.objectstore import ObjectStore
from services.common.observability import RequestContextMiddleware, health_router
from services.common.resources import ResourceKind, ResourceStore, resource_router
from services.common.resources.openapi import openapi_router
from services.common.runtime import SERVICE_LABEL, Runtime, get_runtime
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """What a running service holds; handlers reach it through ``request.app.state.ctx``.

    Every field is typed. A service with parts of its own (the pipeline's artifact repository,
    KFP stores and scheduler; the automl controller) subclasses it with typed fields and hands
    the subclass to :func:`build_service` (``context=``); there is no string-keyed bag.
    """

    name: str
    settings: ServiceSettings
    db: Database
    metadata: MetaData
    bus: EventBus
    store: ResourceStore
    relay: OutboxRelay
    kinds: Sequence[ResourceKind] = ()
    components: list[Lifecycle] = field(default_factory=list)
    #: What runs in the leader replica only (its controllers); None until ``elect``.
    leader: LeaderElection | None = None
    _runtime: Runtime | None = None
    _objects: ObjectStore | None = None

    def elect(self, components: Sequence[Lifecycle], name: str = "controllers") -> LeaderElection:
        """Run ``components`` only in the replica that leads (see services/common/leader.py),
        together with the feed that brings them the changes other replicas write.

        Call it from the service's component factory; the service starts the election after
        its other components and stops it first."""
        feed = ChangeFeed(self.bus, self.store, self.kinds, self.name)
        self.leader = LeaderElection(self.db, [feed, *components], name)
        return self.leader

    @property
    def runtime(self) -> Runtime:
        """The workload runtime (created on first use; services without workloads never pay)."""
        if self._runtime is None:
            self._runtime = get_runtime(self.settings)
        return self._runtime

    async def objects(self) -> ObjectStore:
        """The platform's object store (opened on first use, closed when the service stops).

        ``SHIPYARD_S3_ENDPOINT`` unset is a configuration error for the services that keep
        artifacts or models: ``shipyard up`` always sets it (embedded SeaweedFS by default).
        """
        if self._objects is None:
            config = self.settings.object_store_config()
            if config is None:
                raise ApiError(
                    503,
                    "no object store is configured: set SHIPYARD_S3_ENDPOINT (and the other "
                    "SHIPYARD_S3_* settings), or start the platform with `shipyard up`",
                )
            store = ObjectStore(config)
            await store.__aenter__()
            if self._objects is not None:  # a concurrent first use won
                await store.close()
            else:
                self._objects = store
        return self._objects

    @property
    def workload_labels(self) -> dict[str, str]:
        """Labels every workload of this service carries (re-adoption, orderly shutdown)."""
        return {SERVICE_LABEL: self.name}


ComponentFactory = Callable[[ServiceContext], Awaitable[Sequence[Lifecycle]]]


def nats_live_events(bus: EventBus) -> Callable[[str], AbstractAsyncContextManager[Any]]:
    """A watch's live feed: a core NATS subscription on the kind's subjects, into a queue."""

    @asynccontextmanager
    async def live(subject: str) -> AsyncIterator[asyncio.Queue[bytes]]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1024)
        sub = None

        async def on_message(msg: Any) -> None:
            if not queue.full():  # a full queue already means "wake up"
                queue.put_nowait(msg.data)

        if bus.connected:
            try:
                sub = await bus.nc.subscribe(subject, cb=on_message)
            except Exception:  # NATS going away: the watch falls back to polling
                log.warning("watch could not subscribe to %s; polling the outbox", subject)
        try:
            yield queue
        finally:
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass

    return live


def build_service(
    name: str,
    settings: ServiceSettings,
    metadata: MetaData,
    migrations: Path,  # the service's migrations/versions directory
    kinds: Sequence[ResourceKind] = (),
    routers: Sequence[APIRouter] = (),
    components: ComponentFactory | None = None,
    error_renderers: Sequence[tuple[str, ErrorRenderer]] = (),
    verifier: AssertionVerifier | None = None,
    context: type[ServiceContext] = ServiceContext,
) -> FastAPI:
    """A FastAPI app for service ``name`` serving ``kinds`` plus its own ``routers``."""
    db = Database(settings.resolved_database_url(), schema=name)
    bus = EventBus(settings.nats_url, name=f"shipyard-{name}")
    relay = OutboxRelay(db, metadata.tables["outbox"], bus)
    store = ResourceStore(
        db,
        metadata.tables,
        source=f"/shipyard/{name}",
        stage_event=stage_event,
        live_events=nats_live_events(bus),
    )
    ctx = context(name, settings, db, metadata, bus, store, relay, tuple(kinds))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.run_migrations:
            await migrate.upgrade(db, metadata, migrations)
        keep_stream(bus, name)
        await bus.start()
        await relay.start()
        ctx.components = list(await components(ctx)) if components else []
        for component in ctx.components:
            await component.start()
        if ctx.leader is not None:
            await ctx.leader.start()
        log.info("%s service ready on port %s", name, settings.port)
        try:
            yield
        finally:
            # A standby runs no workloads of its own: they are the leader's (or the next
            # leader's, which adopts them), so only the leader ends them below.
            led = ctx.leader is None or ctx.leader.is_leader
            if ctx.leader is not None:
                await _quietly(ctx.leader.stop(), within=60)  # controllers flush their state
            for component in reversed(ctx.components):
                await _quietly(component.stop())
            # An orderly stop (Ctrl-C on `make up`) ends this service's workloads; only a
            # crash (SIGKILL) leaves them running, for the next start to re-adopt.
            if led:
                await _quietly(ctx.runtime.stop_all(ctx.workload_labels))
            await _quietly(ctx.runtime.close())
            if ctx._objects is not None:
                await _quietly(ctx._objects.close())
            await _quietly(relay.stop())
            await _quietly(bus.close())
            await _quietly(db.dispose())

    app = FastAPI(
        title=f"shipyard {name}",
        lifespan=lifespan,
        openapi_url=f"/openapi/{name}.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    install_error_handlers(
        app,
        error_renderers,
        diagnose=database_outage(db),
        outage_errors=(DBAPIError, OSError),  # what a lost or refused connection raises
    )

    async def readiness() -> dict[str, bool]:
        return {"database": await db.ping(), "nats": bus.connected}

    app.include_router(health_router(readiness))

    def get_store(request: Request) -> ResourceStore:
        return store

    app.include_router(workload_runs_router(ctx))
    for kind in kinds:
        app.include_router(resource_router(kind, get_store, settings.max_body_bytes))
    app.include_router(openapi_router(kinds))  # the kinds' schemas, for the gateway's /openapi/v3
    for router in routers:
        app.include_router(router)
    app.add_middleware(
        AssertionMiddleware, verifier=verifier or AssertionVerifier(settings.public_key_pem())
    )
    app.add_middleware(RequestContextMiddleware, service=name)
    return app


def database_outage(db: Database) -> ErrorDiagnosis:
    """A request that failed because the database is away gets 503 ServiceUnavailable with
    Retry-After (clients and the Kubernetes client retry it), not a 500: the same answer
    ``/readyz`` gives while the database does not answer."""

    async def diagnose(exc: Exception) -> ApiError | None:
        if await db.ping(within=1.0):
            return None
        return ApiError(
            503,
            "the database is unavailable; retry the request shortly",
            headers={"Retry-After": "5"},
        )

    return diagnose


def workload_runs_router(ctx: ServiceContext) -> APIRouter:
    """``GET /internal/v1/workload-runs/{binding}``: is a token's workload run still going?

    Only the gateway asks (it checks every bound service-account token with it); callers
    other than a cluster admin get 403.
    """
    router = APIRouter()

    @router.get("/internal/v1/workload-runs/{namespace}/{name}/{run}", include_in_schema=False)
    async def read_workload_run(
        namespace: str, name: str, run: str, identity: IdentityDep
    ) -> dict[str, bool]:
        if not identity.cluster_admin:
            raise ApiError(403, "only the gateway asks whether a workload run is live")
        live = await ctx.runtime.run_is_live(f"{namespace}/{name}/{run}")
        return {"live": live}

    return router


async def _quietly(awaitable: Awaitable[Any], within: float = 10) -> None:
    try:
        async with asyncio.timeout(within):
            await awaitable
    except Exception:
        log.exception("error during shutdown")


def context(request: Request) -> ServiceContext:
    return request.app.state.ctx  # type: ignore[no-any-return]
