"""Run and node events reach NATS JetStream as protobuf (through the outbox and relay)."""

from __future__ import annotations

import asyncio

import nats

from services.common.eventspb.shipyard.events.v1.pipeline_pb2 import (
    PipelineNodeEvent,
    PipelineRunEvent,
)
from tests.pipeline.conftest import PipelineService


async def test_workflow_publishes_run_and_node_events(pipeline: PipelineService,
                                                      namespace: str, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    runs: list[PipelineRunEvent] = []
    nodes: list[PipelineNodeEvent] = []

    async def on_run(msg: nats.aio.msg.Msg) -> None:
        event = PipelineRunEvent.FromString(msg.data)
        if event.namespace == namespace:
            runs.append(event)

    async def on_node(msg: nats.aio.msg.Msg) -> None:
        event = PipelineNodeEvent.FromString(msg.data)
        if event.namespace == namespace:
            nodes.append(event)

    await nc.subscribe("shipyard.pipeline.run.*", cb=on_run)
    await nc.subscribe("shipyard.pipeline.node.*", cb=on_node)
    try:
        wf = await pipeline.run(namespace, {
            "metadata": {"generateName": "events-"},
            "spec": {"entrypoint": "main", "templates": [
                {"name": "main", "container": {"image": "a", "command": ["true"]}}]}})
        for _ in range(50):
            if any(r.phase == "Succeeded" for r in runs):
                break
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
    assert [r.phase for r in runs][0] == "Running"
    assert runs[-1].phase == "Succeeded" and runs[-1].name == wf["metadata"]["name"]
    assert any(n.phase == "Succeeded" and n.type == "Pod" for n in nodes)
