"""The pipeline service's FastAPI app."""

from pathlib import Path

from fastapi import FastAPI

from services.common.app import build_service
from services.pipeline.models import KINDS
from services.pipeline.settings import Settings
from services.pipeline.tables import metadata


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return build_service("pipeline", settings, metadata, Path(__file__).parent / "migrations" / "versions",
                         kinds=KINDS)
