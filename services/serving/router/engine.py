"""How an InferenceGraph routes one request, node by node, as KServe's router does.

The graph is the InferenceGraph's ``spec`` as the controller hands it over (the router's
workload file): ``nodes`` by name, each with a ``routerType`` and ``steps``, every step
that names an InferenceService already resolved to the gateway ``path`` of its predict
endpoint (``/serving/{ns}/{isvc}/v1/models/{isvc}:predict`` or ``.../v2/models/{isvc}/
infer``). The engine knows no network: it posts through an :class:`Upstream`.

Semantics (KServe's ``cmd/router``, with clearer failures):

- **Sequence** runs its steps in order. A step's ``data: $response`` sends the previous
  step's answer instead of the graph's request (``mapPredictionsToInstances`` turns its
  ``predictions`` into ``instances``); a step's ``condition`` is tested on the previous
  answer, and the sequence stops there (answering it) when it does not hold.
- **Switch** runs the first step whose ``condition`` holds on the request; none: 404.
- **Ensemble** runs every step at once and answers ``{stepName or index: answer}``.
- **Splitter** runs one step picked at random by ``weight`` (the weights sum to 100).

A step fails when its target answers outside 2xx, cannot be reached (502) or does not
answer in time (504). A failed ``dependency: Hard`` step fails the request at once with its
status and a body naming the node, the step and what it answered. A failed Soft step (the
default) is skipped: a Sequence goes on from the last answer that succeeded, an Ensemble
leaves it out; a Switch or Splitter, having nothing else to run, answers what it answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol

from services.common import gjson

log = logging.getLogger(__name__)

ROUTING_ERROR = "Failed to process request"
NO_SWITCH_MATCH = "None of the routes matched with the switch condition"
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Reply:
    """An answer: a step's, a node's or the graph's. ``routed`` marks the router's own
    error bodies (passed on unchanged by a parent node, not wrapped again)."""

    status: int
    body: bytes
    routed: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Upstream(Protocol):
    """Posts a step's request (``seconds`` at most); a transport failure is a Reply with
    status 502 or 504."""

    async def post(self, path: str, body: bytes, seconds: float) -> Reply: ...


def error_reply(code: int, cause: str, **detail: Any) -> Reply:
    """KServe's routing error body (``{"error", "cause"}``), with the failed step's details."""
    doc = {"error": ROUTING_ERROR, "cause": cause, **detail}
    return Reply(code, json.dumps(doc, separators=(",", ":")).encode(), routed=True)


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body) if body else gjson.MISSING
    except (ValueError, RecursionError):  # not JSON, or nested past what Python parses
        return gjson.MISSING


def _holds(condition: str, doc: Any) -> bool:
    """Whether ``condition`` leads somewhere in the parsed ``doc`` (gjson's Exists)."""
    return doc is not gjson.MISSING and gjson.exists(gjson.compiled(condition), doc)


def _as_instances(body: bytes) -> bytes:
    """``mapPredictionsToInstances``: the previous answer's predictions as instances."""
    doc = _parse(body)
    if isinstance(doc, dict) and doc.get("predictions"):
        doc = {**doc, "instances": doc["predictions"]}
        doc.pop("predictions")
        return json.dumps(doc, separators=(",", ":")).encode()
    return body


class GraphRouter:
    """Runs requests through one graph (its ``nodes``; ``timeout`` seconds in all, and
    ``routerTimeouts.serviceClient`` a step)."""

    def __init__(
        self, graph: dict[str, Any], upstream: Upstream, rng: random.Random | None = None
    ) -> None:
        self.nodes: dict[str, Any] = graph["nodes"]
        if graph.get("namespace"):
            _check_namespace(self.nodes, graph["namespace"])
        self.upstream = upstream
        self.rng = rng or random.SystemRandom()
        self.timeout = float(graph.get("timeout") or DEFAULT_TIMEOUT)
        client = (graph.get("routerTimeouts") or {}).get("serviceClient")
        self.step_timeout = float(client) if client else self.timeout

    async def route(self, body: bytes) -> Reply:
        """The graph's answer to ``body`` (its root node's)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self.run_node("root", body)
        except TimeoutError:
            return error_reply(504, f"the graph did not answer within {self.timeout:g} s")

    async def run_node(self, name: str, body: bytes) -> Reply:
        node = self.nodes[name]
        steps: list[dict[str, Any]] = node.get("steps") or []
        kind = node["routerType"]
        if kind == "Sequence":
            return await self._sequence(name, steps, body)
        if kind == "Ensemble":
            return await self._ensemble(name, steps, body)
        if kind == "Switch":
            doc = _parse(body)
            index = next(
                (
                    i
                    for i, s in enumerate(steps)
                    if s.get("condition") and _holds(s["condition"], doc)
                ),
                None,
            )
            if index is None:
                return error_reply(404, NO_SWITCH_MATCH, node=name)
        else:  # Splitter: a point in [0, 100) falls in one step's share
            point, index = self.rng.randrange(100), len(steps) - 1
            for i, step in enumerate(steps):
                point -= int(step.get("weight") or 0)
                if point < 0:
                    index = i
                    break
        reply = await self.run_step(steps[index], body)
        return (
            self._failed(name, index, steps[index], reply)
            if _hard_failure(steps[index], reply)
            else reply
        )

    async def run_step(self, step: dict[str, Any], body: bytes) -> Reply:
        if step.get("nodeName"):
            return await self.run_node(step["nodeName"], body)
        return await self.upstream.post(step["path"], body, self.step_timeout)

    async def _sequence(self, name: str, steps: list[dict[str, Any]], request: bytes) -> Reply:
        last: Reply | None = None  # the last answer that succeeded
        failure: Reply | None = None
        for i, step in enumerate(steps):
            previous = last.body if last is not None else request
            if step.get("condition") and not _holds(step["condition"], _parse(previous)):
                if last is not None:
                    return last
                return error_reply(
                    404, f"step {_label(i, step)} of node {name!r}: its condition does not hold"
                )
            body = previous if step.get("data") == "$response" else request
            if step.get("mapPredictionsToInstances"):
                body = _as_instances(body)
            reply = await self.run_step(step, body)
            if reply.ok:
                last = reply
            elif _hard(step):
                return self._failed(name, i, step, reply)
            else:
                log.info(
                    "node %s: soft step %s failed (%s); skipped",
                    name,
                    _label(i, step),
                    reply.status,
                )
                failure = self._failed(name, i, step, reply)
        if last is not None:
            return last
        assert failure is not None  # a node has at least one step
        return failure

    async def _ensemble(self, name: str, steps: list[dict[str, Any]], request: bytes) -> Reply:
        replies = await asyncio.gather(*(self.run_step(s, request) for s in steps))
        merged: dict[str, Any] = {}
        failure: Reply | None = None
        for i, (step, reply) in enumerate(zip(steps, replies, strict=True)):
            if reply.ok:
                doc = _parse(reply.body)
                merged[step.get("name") or str(i)] = (
                    reply.body.decode(errors="replace") if doc is gjson.MISSING else doc
                )
            elif _hard(step):
                return self._failed(name, i, step, reply)
            else:
                failure = failure or self._failed(name, i, step, reply)
        if not merged and failure is not None:
            return failure
        return Reply(200, json.dumps(merged, separators=(",", ":")).encode())

    @staticmethod
    def _failed(node: str, index: int, step: dict[str, Any], reply: Reply) -> Reply:
        """The error answer for a failed step (a node's own routing error as it is)."""
        if reply.routed:
            return reply
        target = (
            f"node {step['nodeName']!r}"
            if step.get("nodeName")
            else f"InferenceService {step.get('serviceName') or step.get('path')!r}"
        )
        answered = reply.body[:2048].decode(errors="replace")
        upstream = _parse(reply.body)
        return error_reply(
            reply.status,
            f"step {_label(index, step)} of node {node!r} ({target}) failed with "
            f"{reply.status}: {answered}",
            node=node,
            step=step.get("name") or index,
            status=reply.status,
            response=answered if upstream is gjson.MISSING else upstream,
        )


def _check_namespace(nodes: dict[str, Any], namespace: str) -> None:
    """Refuse a step outside the graph's namespace (the controller never writes one, and
    the gateway would refuse the router's token there: a third line of defence)."""
    prefix = f"/serving/{namespace}/"
    for name, node in nodes.items():
        for step in node.get("steps") or []:
            path = step.get("path")
            if path is not None and (not path.startswith(prefix) or "/../" in path):
                raise ValueError(f"node {name!r}: step path {path!r} is outside {prefix}")


def _hard(step: dict[str, Any]) -> bool:
    return step.get("dependency") == "Hard"


def _hard_failure(step: dict[str, Any], reply: Reply) -> bool:
    return _hard(step) and not reply.ok


def _label(index: int, step: dict[str, Any]) -> str:
    return repr(step["name"]) if step.get("name") else f"[{index}]"
