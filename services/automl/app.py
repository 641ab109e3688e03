"""The automl service's FastAPI app."""

from pathlib import Path

from fastapi import FastAPI

from services.common.app import build_service
from services.automl.models import KINDS
from services.automl.settings import Settings
from services.automl.tables import metadata


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return build_service("automl", settings, metadata, Path(__file__).parent / "migrations" / "versions",
                         kinds=KINDS)
