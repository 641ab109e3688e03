"""The pipeline service's FastAPI app: Argo kinds, the Argo Server API and the KFP API."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI

from services.common.app import Lifecycle, ServiceContext, build_service
from services.common.fetch import AllowedHosts
from services.common.namespace_reads import NamespaceReader
from services.common.runtime import get_runtime
from services.pipeline import api, argo_api, artifact_api, kfp_api
from services.pipeline.artifacts import ArtifactRepository
from services.pipeline.cache import StepCache
from services.pipeline.controller import WorkflowController
from services.pipeline.kfp_runs import RunService
from services.pipeline.kfp_store import KfpStore
from services.pipeline.models import KINDS
from services.pipeline.schedules import Scheduler
from services.pipeline.settings import Settings
from services.pipeline.tables import metadata

ERROR_RENDERERS = (
    (argo_api.PREFIX + "/workflows", argo_api.render_argo_error),
    (argo_api.PREFIX + "/cron-workflows", argo_api.render_argo_error),
    (argo_api.PREFIX + "/workflow-templates", argo_api.render_argo_error),
    (kfp_api.PREFIX, kfp_api.render_kfp_error),
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    async def components(ctx: ServiceContext) -> Sequence[Lifecycle]:
        runtime = ctx.extras.get("runtime") or get_runtime(settings)
        ctx.extras["runtime"] = runtime
        artifacts = ArtifactRepository(
            ctx.objects,
            max_bytes=settings.artifact_max_bytes,
            allowed_hosts=AllowedHosts.parse(settings.artifact_download_allowed_hosts),
            reader=NamespaceReader(settings),
        )
        ctx.extras["artifacts"] = artifacts
        cache = StepCache(
            ctx.db,
            metadata.tables["step_cache"],
            enabled=settings.cache_enabled,
            usable=artifacts.all_present,
        )
        controller = WorkflowController(
            ctx, runtime, artifacts, cache, workers=settings.workflow_workers
        )
        ctx.extras["workflows"] = controller
        kfp = KfpStore(ctx.db, dict(metadata.tables))
        runs = RunService(kfp, ctx.store)
        controller.listeners.append(runs.on_workflow_finished)
        ctx.extras["kfp_store"] = kfp
        ctx.extras["kfp_runs"] = runs
        scheduler = Scheduler(
            ctx.store, kfp, runs, ctx.db, retention_seconds=settings.retention_seconds
        )
        ctx.extras["scheduler"] = scheduler
        return [controller, scheduler]

    return build_service(
        "pipeline",
        settings,
        metadata,
        Path(__file__).parent / "migrations" / "versions",
        kinds=KINDS,
        routers=[api.router, argo_api.router, kfp_api.router, artifact_api.router],
        components=components,
        error_renderers=ERROR_RENDERERS,
    )
