"""What the pipeline service publishes (besides the resource machinery's ResourceEvents).

- ``shipyard.pipeline.run.<started|succeeded|failed|error|retried>``: PipelineRunEvent
- ``shipyard.pipeline.node.<phase>``: PipelineNodeEvent, one per node phase change
Both are staged in the same transaction as the Workflow status they describe.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf.message import Message

from services.common.eventspb.shipyard.events.v1.pipeline_pb2 import (
    PipelineNodeEvent,
    PipelineRunEvent,
)
from services.pipeline.engine_types import PassResult

RUN_SUBJECT = "shipyard.pipeline.run.{event}"
NODE_SUBJECT = "shipyard.pipeline.node.{event}"
KFP_RUN_LABEL = "pipeline.shipyard.io/kfp-run-id"


def run_event(wf: dict[str, Any]) -> PipelineRunEvent:
    meta, status = wf["metadata"], wf.get("status") or {}
    return PipelineRunEvent(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        uid=meta.get("uid", ""),
        phase=status.get("phase", ""),
        message=status.get("message", ""),
        started_at=status.get("startedAt", ""),
        finished_at=status.get("finishedAt", ""),
        progress=status.get("progress", ""),
        kfp_run_id=(meta.get("labels") or {}).get(KFP_RUN_LABEL, ""),
    )


def node_event(wf: dict[str, Any], node: dict[str, Any], previous: str) -> PipelineNodeEvent:
    meta = wf["metadata"]
    return PipelineNodeEvent(
        namespace=meta.get("namespace", ""),
        workflow=meta["name"],
        workflow_uid=meta.get("uid", ""),
        node_id=node["id"],
        node_name=node["name"],
        display_name=node.get("displayName", ""),
        type=node.get("type", ""),
        phase=node.get("phase", ""),
        previous_phase=previous,
        message=node.get("message", ""),
        cached=bool((node.get("memoizationStatus") or {}).get("hit")),
    )


def for_pass(wf: dict[str, Any], result: PassResult) -> Iterator[tuple[str, Message]]:
    for node, previous in result.node_events:
        yield NODE_SUBJECT.format(event=node["phase"].lower()), node_event(wf, node, previous)
    if result.run_event:
        yield RUN_SUBJECT.format(event=result.run_event), run_event(wf)
