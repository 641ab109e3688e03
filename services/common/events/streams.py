"""One JetStream stream per owning service: ``SHIPYARD_<SERVICE>`` on ``shipyard.<service>.>``.

Each service ensures its own stream at start-up (create, or update to the declared
config); consumers of another service's stream only bind to it.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import BadRequestError, NotFoundError

from services.common.events.bus import EventBus

log = logging.getLogger(__name__)

# JetStream drops a re-published Nats-Msg-Id within this window; the relay's retry of an
# unacknowledged publish always lands inside it.
DEFAULT_DUPLICATE_WINDOW = 120.0
DEFAULT_MAX_AGE = 7 * 24 * 3600.0


def stream_name(service: str) -> str:
    """``automl`` -> ``SHIPYARD_AUTOML`` (stream names may not hold ``.``, ``*``, ``>``)."""
    return "SHIPYARD_" + service.upper().replace("-", "_").replace(".", "_")


def stream_subjects(service: str) -> list[str]:
    return [f"shipyard.{service}.>"]


def stream_config(
    service: str,
    *,
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
    max_age: float = DEFAULT_MAX_AGE,
    storage: StorageType = StorageType.FILE,
) -> StreamConfig:
    return StreamConfig(
        name=stream_name(service),
        subjects=stream_subjects(service),
        retention=RetentionPolicy.LIMITS,
        storage=storage,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        duplicate_window=duplicate_window,
        description=f"events published by the shipyard {service} service",
    )


async def ensure_stream(
    js: JetStreamContext,
    service: str,
    *,
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
    max_age: float = DEFAULT_MAX_AGE,
) -> StreamInfo:
    """Create the service's stream, or update it to this config; safe to call on every start."""
    config = stream_config(service, duplicate_window=duplicate_window, max_age=max_age)
    try:
        await js.stream_info(stream_name(service))
    except NotFoundError:
        try:
            info = await js.add_stream(config)
            log.info("created stream %s on %s", config.name, config.subjects)
            return info
        except BadRequestError:
            # Another replica created it between our info and add: fall through to update.
            pass
    return await js.update_stream(config)


def keep_stream(
    bus: EventBus,
    service: str,
    *,
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW,
    max_age: float = DEFAULT_MAX_AGE,
) -> None:
    """Ensure the service's stream on every (re)connect: call once at service start-up.

    Re-ensuring after a reconnect covers a NATS that came back without its store.
    """

    async def ensure() -> None:
        await ensure_stream(bus.js, service, duplicate_window=duplicate_window, max_age=max_age)

    bus.on_connect(ensure)


async def delete_stream(js: JetStreamContext, service: str) -> bool:
    """Delete the service's stream (tests and uninstall); False if it did not exist."""
    try:
        return await js.delete_stream(stream_name(service))
    except NotFoundError:
        return False
