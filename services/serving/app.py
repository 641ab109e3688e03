"""The serving service's FastAPI app."""

from pathlib import Path

from fastapi import FastAPI

from services.common.app import Lifecycle, ServiceContext, build_service
from services.serving.controller import InferenceServiceController
from services.serving.models import KINDS
from services.serving.settings import Settings
from services.serving.tables import metadata


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    versions = Path(__file__).parent / "migrations" / "versions"
    return build_service(
        "serving", settings, metadata, versions, kinds=KINDS, components=components
    )


async def components(ctx: ServiceContext) -> list[Lifecycle]:
    return [
        InferenceServiceController(
            ctx.store, ctx.runtime, ctx.settings.gateway_url, labels=ctx.workload_labels
        )
    ]
