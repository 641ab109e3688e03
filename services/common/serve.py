"""Run a service app with uvicorn (what every ``__main__`` calls)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import uvicorn

from services.common.observability import configure_logging
from services.common.settings import ServiceSettings


def serve(create_app: Callable[[Any], Any], settings: ServiceSettings) -> None:
    configure_logging(settings.service_name, settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        proxy_headers=False,
    )
