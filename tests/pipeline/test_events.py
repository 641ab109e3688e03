"""Run and node events reach NATS JetStream as protobuf (through the outbox and relay)."""

from __future__ import annotations

import asyncio

import nats
from nats.aio.msg import Msg

from services.common.eventspb.shipyard.events.v1.pipeline_pb2 import (
    PipelineNodeEvent,
    PipelineRunEvent,
)
from tests.pipeline.conftest import PipelineService


async def test_workflow_publishes_run_and_node_events(
    pipeline: PipelineService, namespace: str, nats_url: str
) -> None:
    nc = await nats.connect(nats_url)
    runs: list[PipelineRunEvent] = []
    nodes: list[PipelineNodeEvent] = []

    async def on_run(msg: Msg) -> None:
        event = PipelineRunEvent.FromString(msg.data)
        if event.namespace == namespace:
            runs.append(event)

    async def on_node(msg: Msg) -> None:
        event = PipelineNodeEvent.FromString(msg.data)
        if event.namespace == namespace:
            nodes.append(event)

    await nc.subscribe("shipyard.pipeline.run.*", cb=on_run)
    await nc.subscribe("shipyard.pipeline.node.*", cb=on_node)
    try:
        wf = await pipeline.run(
            namespace,
            {
                "metadata": {"generateName": "events-"},
                "spec": {
                    "entrypoint": "main",
                    "templates": [
                        {"name": "main", "container": {"image": "a", "command": ["true"]}}
                    ],
                },
            },
        )
        for _ in range(50):
            if any(r.phase == "Succeeded" for r in runs):
                break
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
    assert [r.phase for r in runs][0] == "Running"
    assert runs[-1].phase == "Succeeded" and runs[-1].name == wf["metadata"]["name"]
    assert any(n.phase == "Succeeded" and n.type == "Pod" for n in nodes)


async def test_chain_coalesces_status_writes_but_keeps_every_node_event(
    pipeline: PipelineService, namespace: str, nats_url: str
) -> None:
    """A 12-step chain: every Pod's Running and Succeeded node events arrive, in order, while
    the whole-Workflow ResourceEvents (one per status write) are far fewer than the steps."""
    from services.common.eventspb.shipyard.events.v1.resource_pb2 import ResourceEvent
    from tests.pipeline.test_engine import sh, wf

    nc = await nats.connect(nats_url)
    writes: list[str] = []
    phases: dict[str, list[str]] = {}

    async def on_resource(msg: Msg) -> None:
        event = ResourceEvent.FromString(msg.data)
        if event.namespace == namespace:
            writes.append(event.type)

    async def on_node(msg: Msg) -> None:
        event = PipelineNodeEvent.FromString(msg.data)
        if event.namespace == namespace and event.type == "Pod":
            phases.setdefault(event.display_name, []).append(event.phase)

    await nc.subscribe("shipyard.pipeline.workflow.*", cb=on_resource)
    await nc.subscribe("shipyard.pipeline.node.*", cb=on_node)
    steps = 12
    try:
        done = await pipeline.run(
            namespace,
            wf(
                "chain",
                [
                    {
                        "name": "main",
                        "dag": {
                            "tasks": [
                                {
                                    "name": f"s{i}",
                                    "template": "noop",
                                    **({"dependencies": [f"s{i - 1}"]} if i else {}),
                                }
                                for i in range(steps)
                            ]
                        },
                    },
                    sh("noop", "true"),
                ],
            ),
        )
        assert done["status"]["phase"] == "Succeeded"
        for _ in range(50):
            if sum(p[-1:] == ["Succeeded"] for p in phases.values()) == steps:
                break
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
    assert {name: p for name, p in phases.items()} == {
        f"s{i}": ["Running", "Succeeded"] for i in range(steps)
    }
    modified = writes.count("MODIFIED")
    assert 2 <= modified < steps, writes
