"""A step over its namespace's quota, as the engine shows it: Argo's ``Pending`` with the
quota's words, on both runtimes' ways of holding it.

The runner here is scripted in a runtime's place (what it answers is the point, not how a
runtime decides): Kubernetes refuses to make the pod (``start`` returns the API server's
message, the engine tries again), the local runtime makes it and holds it (``poll`` answers
``Pending``). The whole path on the real local runtime is tests/test_multiuser.py's quota test.
"""

from __future__ import annotations

from typing import Any

from services.pipeline.engine import Engine
from services.pipeline.engine_types import PodResult, TemplateBook
from services.pipeline.nodes import WAITING

REFUSED = 'pods "wf-1" is forbidden: exceeded quota: kf-resource-quota, requested: pods=1, ...'
HELD = "exceeded quota: kf-resource-quota, requested: pods=1, used: pods=1, limited: pods=1"


class ScriptedRunner:
    """Per step (its display name): the answers of ``start`` and of ``poll``, in turn; the
    last ``poll`` answer repeats."""

    def __init__(self, script: dict[str, tuple[list[str | None], list[PodResult | None]]]):
        self.script = script
        self.started: list[str] = []
        self.killed: list[str] = []

    async def start(
        self, wf: dict[str, Any], node: dict[str, Any], template: Any, volumes: Any
    ) -> str | None:
        self.started.append(node["displayName"])
        starts, _ = self.script[node["displayName"]]
        return starts.pop(0) if starts else None

    async def poll(self, wf: dict[str, Any], node: dict[str, Any]) -> PodResult | None:
        _, polls = self.script[node["displayName"]]
        return polls.pop(0) if len(polls) > 1 else polls[0]

    async def kill(self, wf: dict[str, Any], node: dict[str, Any]) -> None:
        self.killed.append(node["displayName"])


def workflow(*steps: str, **spec: Any) -> tuple[dict[str, Any], TemplateBook]:
    templates = [
        {"name": "main", "dag": {"tasks": [{"name": s, "template": "step"} for s in steps]}},
        {"name": "step", "container": {"image": "alpine", "command": ["true"]}},
    ]
    wf = {
        "metadata": {"name": "wf", "namespace": "team-q", "uid": "0123456789abcdef"},
        "spec": {"entrypoint": "main", "templates": templates, **spec},
    }
    return wf, TemplateBook(templates, {})


def pod(wf: dict[str, Any], display: str) -> dict[str, Any]:
    (node,) = (n for n in wf["status"]["nodes"].values() if n["displayName"] == display)
    return node


async def test_a_step_refused_then_held_is_pending_with_the_quotas_words() -> None:
    wf, book = workflow("a")
    runner = ScriptedRunner(
        {"a": ([REFUSED, None], [PodResult("Pending", HELD), None, PodResult("Succeeded")])}
    )

    refused = await Engine(wf, book, runner, None).run()  # Kubernetes: nothing made
    node = pod(wf, "a")
    assert (node["phase"], node["message"], WAITING in node) == ("Pending", REFUSED, False)
    assert refused.requeue_after == 1.0  # tried again, as Argo's controller requeues
    assert wf["status"]["phase"] == "Running"

    await Engine(wf, book, runner, None).run()  # made this time, and held by its runtime
    assert (node["phase"], node["message"], node[WAITING]) == ("Pending", HELD, True)

    await Engine(wf, book, runner, None).run()  # started: not made a third time
    assert node["phase"] == "Running" and "message" not in node and WAITING not in node
    assert runner.started == ["a", "a"]

    await Engine(wf, book, runner, None).run()
    assert node["phase"] == "Succeeded" and WAITING not in node
    assert wf["status"]["phase"] == "Succeeded"


async def test_a_step_made_on_a_later_try_runs_without_the_refusal() -> None:
    wf, book = workflow("a")
    runner = ScriptedRunner({"a": ([REFUSED, REFUSED, None], [None])})
    for _ in range(2):
        await Engine(wf, book, runner, None).run()
        assert pod(wf, "a")["phase"] == "Pending" and pod(wf, "a")["message"] == REFUSED
    await Engine(wf, book, runner, None).run()
    assert pod(wf, "a")["phase"] == "Running" and "message" not in pod(wf, "a")
    assert runner.started == ["a", "a", "a"]


async def test_a_held_step_keeps_its_parallelism_place_and_is_stopped_with_the_workflow() -> None:
    wf, book = workflow("a", "b", parallelism=1)
    runner = ScriptedRunner({"a": ([], [PodResult("Pending", HELD)]), "b": ([], [None])})

    for _ in range(3):
        await Engine(wf, book, runner, None).run()
    assert pod(wf, "a")[WAITING] and pod(wf, "b")["phase"] == "Pending"
    assert runner.started == ["a"]  # b waits for a's place: a held step holds it

    wf["spec"]["shutdown"] = "Terminate"
    await Engine(wf, book, runner, None).run()
    assert runner.killed == ["a"]  # its workload is made: stopped like a running one
    assert pod(wf, "a")["phase"] == "Failed" and WAITING not in pod(wf, "a")
