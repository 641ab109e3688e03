"""The automl service's FastAPI app: kinds, extra routes, controller, event consumer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from services.automl import api, configmaps, dbmanager, events
from services.automl.controller import AutoMLController
from services.automl.models import CONFIG_MAP, EXPERIMENT, KINDS
from services.automl.push import TrialTokenMiddleware, load_key
from services.automl.settings import Settings
from services.automl.status import mark_created
from services.automl.tables import metadata
from services.automl.training import api as training_api
from services.automl.training.controller import TrainingJobController
from services.automl.training.models import KINDS as TRAINING_KINDS
from services.common.app import Lifecycle, ServiceContext, build_service
from services.common.events.consumer import Consumer
from services.common.events.streams import stream_name

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"


@dataclass
class AutoMLContext(ServiceContext):
    """Set by ``create_app`` when the service starts (None before)."""

    controller: AutoMLController | None = None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    push_key = load_key(settings.state_dir)

    async def components(ctx: ServiceContext) -> Sequence[Lifecycle]:
        assert isinstance(ctx, AutoMLContext)

        async def admit_experiment(
            session: AsyncSession, new: dict[str, Any], current: dict[str, Any] | None
        ) -> None:
            if current is None:  # clients read conditions[-1] right after creating
                mark_created(new["status"])
            await configmaps.check_trial_template(ctx.store, session, new, current)

        ctx.store.add_admission(EXPERIMENT, admit_experiment)
        ctx.store.add_admission(CONFIG_MAP, configmaps.admit_config_map)
        ctx.controller = controller = AutoMLController(
            ctx.store, ctx.db, metadata.tables["outbox"], ctx.runtime, settings, push_key
        )
        consumer = Consumer(
            ctx.db,
            metadata.tables["inbox"],
            ctx.bus,
            stream=stream_name("automl"),
            durable=settings.events_durable,
            subjects=events.SUBJECTS,
            message_type=events.MESSAGE_TYPES,
            handler=events.experiment_waker(controller.enqueue, controller.completed_here),
        )
        # Only the leader runs the controller and the consumer that wakes it (a standby's
        # consumer would take its share of the durable's messages for a controller that does
        # not run). The lock's name is the one earlier releases used, so an old and a new
        # replica never both lead during a rolling upgrade.
        # The Training Operator's PyTorchJobs (services/automl/training), under the same lead.
        training = TrainingJobController(ctx.store, ctx.runtime, settings.resync_seconds)
        election = ctx.elect([controller, consumer, training], "experiment-controller")
        controller.fence = election.fence
        return []

    app = build_service(
        "automl",
        settings,
        metadata,
        MIGRATIONS,
        kinds=(*KINDS, *TRAINING_KINDS),
        routers=[api.router, training_api.router, dbmanager.router(push_key)],
        components=components,
        context=AutoMLContext,
    )
    app.add_middleware(TrialTokenMiddleware, push_app=api.push_app(app.state.ctx), key=push_key)
    return app
