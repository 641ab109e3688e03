"""Adaptive batching: KServe's ``spec.predictor.batcher`` (``maxBatchSize``, ``maxLatency``).

Concurrent requests for the model are queued and run as one model call when the queued rows
reach ``maxBatchSize`` or ``maxLatency`` has passed since the first of them arrived, whichever
comes first (KServe's agent batcher triggers the same way). The rows are concatenated along
the batch dimension in arrival order, and each request gets back exactly its own rows of the
result, in order. A request with as many rows as ``maxBatchSize`` (or more) runs on its own.

V1 batches ``instances`` lists. V2 batches requests whose input tensors have the same names,
datatypes and trailing shapes (one queue per such signature), so a request whose tensors do
not match the others' is never merged with them. A failing model call fails each request of
its batch with the model's own exception, which the handlers map to 400/500 as unbatched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .loaders import Model, Tensors

#: KServe's defaults (docs/samples/batcher): 32 instances, 5000 ms.
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_LATENCY_MS = 5000


class BatchSplitError(RuntimeError):
    """The model's batched output does not have one row per input row."""


@dataclass
class _Queue:
    payloads: list[Any] = field(default_factory=list)
    futures: list[asyncio.Future[tuple[Any, int]]] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


class Batcher:
    """Queues payloads by key and runs each queue as one call of ``run``, which takes the
    queued payloads and returns one result per payload, in order."""

    def __init__(
        self,
        run: Callable[[list[Any]], list[Any]],
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_latency_ms: float = DEFAULT_MAX_LATENCY_MS,
    ) -> None:
        if max_batch_size < 1 or max_latency_ms <= 0:
            raise ValueError("max_batch_size must be >= 1 and max_latency_ms > 0")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000.0
        self._queues: dict[Hashable, _Queue] = {}

    async def submit(self, key: Hashable | None, payload: Any, rows: int) -> tuple[Any, int]:
        """(this payload's result, the number of requests in the model call that made it).
        ``key`` None (an unbatchable payload) or ``rows`` >= maxBatchSize runs it alone."""
        if key is None or rows < 1 or rows >= self.max_batch_size:
            return self.run([payload])[0], 1
        queue = self._queues.get(key)
        if queue is not None and queue.rows + rows > self.max_batch_size:
            self._flush(key, queue)
            queue = None
        if queue is None:
            queue = self._queues[key] = _Queue()
            loop = asyncio.get_running_loop()
            queue.timer = loop.call_later(self.max_latency, self._flush, key, queue)
        future: asyncio.Future[tuple[Any, int]] = asyncio.get_running_loop().create_future()
        queue.payloads.append(payload)
        queue.futures.append(future)
        queue.rows += rows
        if queue.rows >= self.max_batch_size:
            self._flush(key, queue)
        return await future

    def _flush(self, key: Hashable, queue: _Queue) -> None:
        if self._queues.get(key) is queue:
            del self._queues[key]
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
        if not queue.futures:
            return
        futures, payloads = queue.futures, queue.payloads
        queue.futures, queue.payloads = [], []
        try:
            results = self.run(payloads)
            if len(results) != len(payloads):
                raise BatchSplitError(f"{len(results)} results for {len(payloads)} requests")
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():  # the client may have gone
                future.set_result((result, len(futures)))


def _offsets(counts: list[int]) -> list[int]:
    offsets = [0]
    for n in counts:
        offsets.append(offsets[-1] + n)
    return offsets


def run_v1(model: Model, payloads: list[list[Any]]) -> list[list[Any]]:
    """One ``predict`` on the payloads' instances concatenated; each gets its own predictions."""
    if len(payloads) == 1:
        return [model.predict(payloads[0])]
    merged = [row for payload in payloads for row in payload]
    predictions = model.predict(merged)
    if len(predictions) != len(merged):
        raise BatchSplitError(
            f"the model returned {len(predictions)} predictions for a batch of "
            f"{len(merged)} instances, so they cannot be split back per request"
        )
    offsets = _offsets([len(p) for p in payloads])
    return [list(predictions[a:b]) for a, b in zip(offsets, offsets[1:], strict=False)]


def v2_key(inputs: Tensors) -> tuple[Hashable, int] | None:
    """(the signature requests must share to be merged, the rows of this one), or None when
    its tensors have no common batch dimension (it runs alone)."""
    if not inputs or any(array.ndim == 0 for _, array in inputs):
        return None
    rows = inputs[0][1].shape[0]
    if any(array.shape[0] != rows for _, array in inputs):
        return None
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in inputs), rows


def run_v2(model: Model, payloads: list[Tensors]) -> list[Tensors]:
    """One ``infer`` on the payloads' tensors concatenated along axis 0, split back by rows."""
    if len(payloads) == 1:
        return [model.infer(payloads[0])]
    names = [name for name, _ in payloads[0]]
    merged = [
        (name, np.concatenate([payload[i][1] for payload in payloads]))
        for i, name in enumerate(names)
    ]
    counts = [payload[0][1].shape[0] for payload in payloads]
    total = sum(counts)
    outputs = model.infer(merged)
    for name, array in outputs:
        if array.ndim == 0 or array.shape[0] != total:
            raise BatchSplitError(
                f"output {name!r} has shape {list(array.shape)} for a batch of {total} rows, "
                "so it cannot be split back per request"
            )
    offsets = _offsets(counts)
    return [
        [(name, array[a:b]) for name, array in outputs]
        for a, b in zip(offsets, offsets[1:], strict=False)
    ]


class ModelBatcher:
    """The model's V1 and V2 batchers (one per protocol: their payloads differ)."""

    def __init__(self, model: Model, max_batch_size: int, max_latency_ms: float) -> None:
        self.v1 = Batcher(lambda p: run_v1(model, p), max_batch_size, max_latency_ms)
        self.v2 = Batcher(lambda p: run_v2(model, p), max_batch_size, max_latency_ms)

    async def predict(self, instances: list[Any]) -> tuple[list[Any], int]:
        return await self.v1.submit("v1", instances, len(instances))

    async def infer(self, inputs: Tensors) -> tuple[Tensors, int]:
        found = v2_key(inputs)
        if found is None:
            return await self.v2.submit(None, inputs, 0)
        key, rows = found
        return await self.v2.submit(key, inputs, rows)
