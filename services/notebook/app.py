"""The notebook service's FastAPI app."""

from pathlib import Path

from fastapi import FastAPI

from services.common.app import Lifecycle, ServiceContext, build_service
from services.notebook.controller import ClaimController
from services.notebook.models import KINDS
from services.notebook.settings import Settings
from services.notebook.tables import metadata


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    versions = Path(__file__).parent / "migrations" / "versions"
    return build_service("notebook", settings, metadata, versions, kinds=KINDS,
                         components=components)


async def components(ctx: ServiceContext) -> list[Lifecycle]:
    return [ClaimController(ctx.store, ctx.runtime)]
