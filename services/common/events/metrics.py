"""Prometheus metrics of the event kernel, on the default registry (served by /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_PUBLISHED = Counter(
    "shipyard_events_published",
    "Events the outbox relay published to JetStream (acknowledged by the stream).",
    ["subject_prefix"],
)
EVENTS_CONSUMED = Counter(
    "shipyard_events_consumed",
    "Events a durable consumer acknowledged (applied, or skipped as already applied).",
    ["consumer"],
)
EVENTS_REDELIVERED = Counter(
    "shipyard_events_redelivered",
    "Deliveries that JetStream marked as redeliveries (num_delivered > 1).",
    ["consumer"],
)
EVENTS_FAILED = Counter(
    "shipyard_events_failed",
    "Handler failures (the event is retried later, or terminated after max_deliver).",
    ["consumer"],
)
OUTBOX_BACKLOG = Gauge(
    "shipyard_outbox_backlog",
    "Outbox rows staged but not yet published.",
)


def subject_prefix(subject: str) -> str:
    """``shipyard.<service>.<kind>``: bounded label cardinality (no per-object tokens)."""
    return ".".join(subject.split(".")[:3])
