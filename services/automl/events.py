"""What the automl service publishes and consumes (besides the generic resource events).

Published (staged in the outbox, in the transaction of the state change):

- ``shipyard.automl.trial.started``   :class:`TrialEvent` - the trial's workload runs;
- ``shipyard.automl.trial.completed`` :class:`TrialEvent` - the trial reached a final condition;
- ``shipyard.automl.trial.metrics``   :class:`TrialMetricsEvent` - a Push report arrived.

Consumed: the same three subjects, by a durable consumer that wakes the owning experiment's
reconcile (so another replica's trial completion reaches this replica's controller).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.events.consumer import Event
from services.common.events.outbox import stage_event
from services.common.eventspb.shipyard.events.v1.automl_pb2 import (
    MetricValue,
    TrialEvent,
    TrialMetricsEvent,
)
from services.common.eventspb.shipyard.events.v1.resource_pb2 import ResourceEvent

SOURCE = "/shipyard/automl"
STARTED = "shipyard.automl.trial.started"
COMPLETED = "shipyard.automl.trial.completed"
METRICS = "shipyard.automl.trial.metrics"
# Only completions wake an experiment (started and metrics events change nothing it
# decides on); one filter subject also keeps the trial resource events
# (shipyard.automl.trial.added|modified|deleted), five per trial, out of the inbox.
SUBJECTS = [COMPLETED]
MESSAGE_TYPES: dict[str, Any] = {
    TrialEvent.DESCRIPTOR.full_name: TrialEvent,
    TrialMetricsEvent.DESCRIPTOR.full_name: TrialMetricsEvent,
    ResourceEvent.DESCRIPTOR.full_name: ResourceEvent,
    "shipyard.automl.trial.*": ResourceEvent,
}

__all__ = [
    "COMPLETED",
    "METRICS",
    "MESSAGE_TYPES",
    "STARTED",
    "SUBJECTS",
    "MetricValue",
    "TrialEvent",
    "TrialMetricsEvent",
    "experiment_waker",
    "stage_trial_event",
]


async def stage_trial_event(
    session: AsyncSession, outbox: Table, subject: str, message: TrialEvent | TrialMetricsEvent
) -> None:
    await stage_event(
        session,
        outbox,
        subject,
        message,
        source=SOURCE,
        ce_type="io.shipyard." + subject.removeprefix("shipyard."),
        ce_subject=f"namespaces/{message.namespace}/trials/{message.trial}",
    )


def experiment_waker(
    enqueue: Callable[[str, str, str], None], seen_here: Container[tuple[str, str]] = ()
) -> Callable[[AsyncSession, Event], Any]:
    """A consumer handler that reconciles the experiment a trial event belongs to.

    ``seen_here`` holds (namespace, trial) whose completion this replica wrote itself and
    already reacted to; their events need no second reconcile.
    """

    async def handle(session: AsyncSession, event: Event) -> None:
        message = event.message
        if not isinstance(message, TrialEvent | TrialMetricsEvent):
            return  # resource events: the in-process store listener already reacted
        if (message.namespace, message.trial) in seen_here:
            return
        if message.experiment:  # type: ignore[attr-defined]
            enqueue("Experiment", message.namespace, message.experiment)  # type: ignore[attr-defined]

    return handle
