"""The pipeline service's context: the common one plus its own parts, typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from services.common.app import ServiceContext
from services.common.errors import ApiError

if TYPE_CHECKING:
    from services.pipeline.artifacts import ArtifactRepository
    from services.pipeline.controller import WorkflowController
    from services.pipeline.kfp_runs import RunService
    from services.pipeline.kfp_store import KfpStore
    from services.pipeline.schedules import Scheduler


@dataclass
class PipelineContext(ServiceContext):
    """Set by ``services.pipeline.app`` when the service starts (None before)."""

    artifacts: ArtifactRepository | None = None
    workflows: WorkflowController | None = None
    kfp_store: KfpStore | None = None
    kfp_runs: RunService | None = None
    scheduler: Scheduler | None = None


def pipeline_context(request: Request) -> PipelineContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, PipelineContext)
    return ctx


def kfp_store(request: Request) -> KfpStore:
    store = pipeline_context(request).kfp_store
    if store is None:
        raise ApiError(503, "the pipeline service is still starting; retry shortly")
    return store


def kfp_runs(request: Request) -> RunService:
    runs = pipeline_context(request).kfp_runs
    if runs is None:
        raise ApiError(503, "the pipeline service is still starting; retry shortly")
    return runs
