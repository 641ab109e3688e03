"""ResourceEvent (protobuf) encoding for the resource machinery."""

from __future__ import annotations

from typing import Any

from services.common.eventspb.shipyard.events.v1.resource_pb2 import ResourceEvent


def resource_event(**fields: Any) -> ResourceEvent:
    return ResourceEvent(**fields)


def parse_resource_event(payload: bytes) -> ResourceEvent:
    msg = ResourceEvent()
    msg.ParseFromString(payload)
    return msg
