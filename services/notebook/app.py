"""The notebook service's FastAPI app."""

from pathlib import Path

from fastapi import FastAPI

from services.common.app import Lifecycle, ServiceContext, build_service
from services.notebook import jwa
from services.notebook.controller import ClaimController
from services.notebook.culling import NotebookCuller
from services.notebook.models import KINDS
from services.notebook.notebooks import NotebookController
from services.notebook.settings import Settings
from services.notebook.tables import metadata


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    versions = Path(__file__).parent / "migrations" / "versions"
    return build_service(
        "notebook",
        settings,
        metadata,
        versions,
        kinds=KINDS,
        # The Jupyter web app's backend (Kubeflow's /jupyter/api), in its own envelope.
        routers=[jwa.router],
        error_renderers=[(jwa.PREFIX, jwa.render_error)],
        components=components,
    )


async def components(ctx: ServiceContext) -> list[Lifecycle]:
    settings = ctx.settings
    assert isinstance(settings, Settings)
    dataplane_key = settings.dataplane_key()
    # Every replica serves the API; only the leader reconciles and culls.
    ctx.elect(
        [
            ClaimController(ctx.store, ctx.runtime),
            NotebookController(
                ctx.store,
                ctx.runtime,
                dataplane_key=dataplane_key,
                ready_timeout=settings.notebook_ready_timeout_seconds,
            ),
            NotebookCuller(
                ctx.store,
                dataplane_key=dataplane_key,
                idle_seconds=settings.notebook_cull_idle_seconds,
                period_seconds=settings.notebook_cull_check_period_seconds,
            ),
        ]
    )
    return []
