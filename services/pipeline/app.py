"""The pipeline service's FastAPI app: Argo kinds, the Argo Server API and the KFP API."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI

from services.common.app import Lifecycle, ServiceContext, build_service
from services.common.fetch import AllowedHosts
from services.common.namespace_reads import NamespaceReader
from services.pipeline import api, argo_api, artifact_api, kfp_api
from services.pipeline.artifacts import ArtifactRepository
from services.pipeline.cache import StepCache
from services.pipeline.context import PipelineContext
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
        assert isinstance(ctx, PipelineContext)
        runtime = ctx.runtime
        ctx.artifacts = artifacts = ArtifactRepository(
            ctx.objects,
            max_bytes=settings.artifact_max_bytes,
            allowed_hosts=AllowedHosts.parse(settings.artifact_download_allowed_hosts),
            reader=NamespaceReader(settings),
        )
        cache = StepCache(
            ctx.db,
            metadata.tables["step_cache"],
            enabled=settings.cache_enabled,
            usable=artifacts.all_present,
        )
        ctx.workflows = controller = WorkflowController(
            ctx, runtime, artifacts, cache, workers=settings.workflow_workers
        )
        ctx.kfp_store = kfp = KfpStore(ctx.db, dict(metadata.tables))
        ctx.kfp_runs = runs = RunService(kfp, ctx.store)
        controller.listeners.append(runs.on_workflow_finished)
        ctx.scheduler = scheduler = Scheduler(
            ctx.store, kfp, runs, retention_seconds=settings.retention_seconds
        )
        # Only the leader reconciles workflows and fires schedules, under one lock: the
        # scheduler fires where its workflows are reconciled, and a failover moves both.
        ctx.elect([controller, scheduler])
        return []

    return build_service(
        "pipeline",
        settings,
        metadata,
        Path(__file__).parent / "migrations" / "versions",
        kinds=KINDS,
        routers=[api.router, argo_api.router, kfp_api.router, artifact_api.router],
        components=components,
        error_renderers=ERROR_RENDERERS,
        context=PipelineContext,
    )
