"""The serving service's FastAPI app."""

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.app import Lifecycle, ServiceContext, build_service
from services.common.errors import ApiError
from services.serving.autoscale import inference_service_limit_causes, scale_limit_causes
from services.serving.controller import InferenceServiceController
from services.serving.corev1 import admit_secret
from services.serving.explain import router as explain_router
from services.serving.graph import INFERENCE_GRAPH
from services.serving.graph_controller import InferenceGraphController
from services.serving.idle import ActivityMonitor, IdleClock, LoadWindow
from services.serving.kfserving import KFServingAlias
from services.serving.modelcache import ModelCache
from services.serving.models import INFERENCE_SERVICE, KINDS, SECRET
from services.serving.runtimes import KINDS as RUNTIME_KINDS
from services.serving.settings import Settings
from services.serving.storage import check_download_uris, check_file_uris
from services.serving.tables import metadata


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    versions = Path(__file__).parent / "migrations" / "versions"
    # ServingRuntimes: services/serving/runtimes.py; InferenceGraphs: graph.py
    kinds = (*KINDS, *RUNTIME_KINDS, INFERENCE_GRAPH)
    app = build_service(
        "serving",
        settings,
        metadata,
        versions,
        kinds=kinds,
        routers=[explain_router],  # V1 :explain (services/serving/explain.py)
        components=components,
    )
    # KFServing's group, serving.kubeflow.org/v1beta1: the same InferenceServices (kfserving.py).
    app.add_middleware(KFServingAlias, max_body_bytes=settings.max_body_bytes)
    return app


async def components(ctx: ServiceContext) -> list[Lifecycle]:
    settings = ctx.settings
    assert isinstance(settings, Settings)

    store_config = settings.object_store_config()
    bucket = store_config.bucket if store_config is not None else None
    policy = settings.download_policy()
    models = ModelCache(
        ctx.objects if store_config else None,
        bucket,
        policy,
        platform_endpoint=store_config.endpoint if store_config is not None else None,
    )

    async def admit_inference_service(
        session: AsyncSession, new: dict[str, Any], current: dict[str, Any] | None
    ) -> None:
        causes = check_file_uris(new, current)
        causes += check_download_uris(new, bucket, policy.allowed_hosts)
        causes += inference_service_limit_causes(new, settings.max_scale_limit)
        if causes:
            raise ApiError.invalid(INFERENCE_SERVICE.kind, new["metadata"]["name"], causes)

    async def admit_inference_graph(
        session: AsyncSession, new: dict[str, Any], current: dict[str, Any] | None
    ) -> None:
        causes = scale_limit_causes(new.get("spec") or {}, "spec", settings.max_scale_limit)
        if causes:
            raise ApiError.invalid(INFERENCE_GRAPH.kind, new["metadata"]["name"], causes)

    ctx.store.add_admission(INFERENCE_SERVICE, admit_inference_service)
    ctx.store.add_admission(INFERENCE_GRAPH, admit_inference_graph)
    ctx.store.add_admission(SECRET, admit_secret)
    clock, window = IdleClock(), LoadWindow(settings.autoscale_window_seconds)
    controller = InferenceServiceController(
        ctx.store,
        ctx.runtime,
        settings.gateway_url,
        labels=ctx.workload_labels,
        clock=clock,
        scale_to_zero_seconds=settings.scale_to_zero_seconds,
        window=window,
        models=models,
    )
    # Only the leader reconciles (and downloads models for it). Every replica keeps counting
    # the gateway's activity reports, so a new leader knows which services were busy.
    # InferenceGraphs: a router workload each (services/serving/graph_controller.py).
    graphs = InferenceGraphController(
        ctx.store, ctx.runtime, settings.gateway_url, labels=ctx.workload_labels
    )
    ctx.elect([models, controller, graphs])
    return [ActivityMonitor(ctx.bus, clock, window, controller.on_report)]
