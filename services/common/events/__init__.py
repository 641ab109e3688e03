"""The event kernel: protobuf events over NATS JetStream with a transactional outbox and inbox.

Publish: ``stage_event(session, outbox, subject, msg, source=...)`` inside the transaction
that changes state, then ``relay.wake()`` after commit (staging also wakes registered
relays on commit). Consume: ``Consumer(db, inbox, bus, stream=..., durable=..., ...)``.
"""

from services.common.events.bus import EventBus, NotConnectedError
from services.common.events.cloudevents import build_headers, source_for_service, type_for_subject
from services.common.events.consumer import Consumer, Event, Handler, PoisonMessageError
from services.common.events.outbox import stage_event
from services.common.events.relay import OutboxRelay
from services.common.events.streams import (
    delete_stream,
    ensure_stream,
    keep_stream,
    stream_config,
    stream_name,
    stream_subjects,
)
from services.common.events.tracing import (
    current_traceparent,
    new_traceparent,
    set_traceparent,
    traceparent_context,
)

__all__ = [
    "Consumer",
    "Event",
    "EventBus",
    "Handler",
    "NotConnectedError",
    "OutboxRelay",
    "PoisonMessageError",
    "build_headers",
    "current_traceparent",
    "delete_stream",
    "ensure_stream",
    "keep_stream",
    "new_traceparent",
    "set_traceparent",
    "source_for_service",
    "stage_event",
    "stream_config",
    "stream_name",
    "stream_subjects",
    "traceparent_context",
    "type_for_subject",
]
