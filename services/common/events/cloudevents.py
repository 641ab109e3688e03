"""CloudEvents 1.0 attributes in NATS headers (binary content mode).

Binary mode puts the attributes in ``ce-*`` headers and the payload, a protobuf
message, in the body (CloudEvents spec, "HTTP Protocol Binding" section 3.1, applied
to NATS headers). ``Nats-Msg-Id`` repeats ``ce-id`` so JetStream's duplicate window
drops a re-publish of the same event.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from google.protobuf.message import Message

from services.common.events.tracing import TRACEPARENT_HEADER

SPECVERSION = "1.0"
CONTENT_TYPE = "application/protobuf"
NATS_MSG_ID = "Nats-Msg-Id"

H_SPECVERSION = "ce-specversion"
H_ID = "ce-id"
H_TYPE = "ce-type"
H_SOURCE = "ce-source"
H_TIME = "ce-time"
H_SUBJECT = "ce-subject"
H_PROTONAME = "ce-protoname"
H_DATASCHEMA = "ce-dataschema"
H_CONTENT_TYPE = "content-type"


def new_event_id() -> str:
    return uuid.uuid4().hex


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def type_for_subject(subject: str) -> str:
    """``shipyard.automl.trial.completed`` -> ``io.shipyard.automl.trial.completed``."""
    return f"io.{subject}"


def source_for_service(service: str) -> str:
    """The ``ce-source`` of events a service publishes, e.g. ``/shipyard/automl``."""
    return f"/shipyard/{service}"


def build_headers(
    subject: str,
    message: Message,
    *,
    source: str,
    ce_type: str | None = None,
    ce_subject: str | None = None,
    event_id: str | None = None,
    traceparent: str | None = None,
) -> dict[str, str]:
    """The NATS headers of one event."""
    event_id = event_id or new_event_id()
    full_name = message.DESCRIPTOR.full_name
    headers = {
        H_SPECVERSION: SPECVERSION,
        H_ID: event_id,
        H_TYPE: ce_type or type_for_subject(subject),
        H_SOURCE: source,
        H_TIME: rfc3339_now(),
        H_CONTENT_TYPE: CONTENT_TYPE,
        H_PROTONAME: full_name,
        H_DATASCHEMA: f"proto:{full_name}",
        NATS_MSG_ID: event_id,
    }
    if ce_subject:
        headers[H_SUBJECT] = ce_subject
    if traceparent:
        headers[TRACEPARENT_HEADER] = traceparent
    return headers


def event_id_of(headers: Mapping[str, str] | None) -> str | None:
    """The event's id: ``ce-id``, else ``Nats-Msg-Id`` (for publishers outside the outbox)."""
    if not headers:
        return None
    return headers.get(H_ID) or headers.get(NATS_MSG_ID)
