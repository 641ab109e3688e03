"""The data plane's two requests, V1 ``:predict`` and V2 ``infer``, as bytes in, bytes out.

Both the routed app (:mod:`.app`) and the raw ASGI fast path (:mod:`.fastpath`) answer with
these, so the protocol logic lives once; neither builds a request or response object on the
hot path. Errors use the protocols' own shape, ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .batcher import ModelBatcher
from .loaders import Model
from .tensors import InferRequest, TensorError, decode_request, encode_response

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

MAX_BODY = 64 * 1024 * 1024
#: With a batcher: how many requests the model call that answered this one served.
BATCH_HEADER = "x-batch-size"
JSON = "application/json"


@dataclass
class Answer:
    """An HTTP answer: status, body, media type and extra headers."""

    status: int
    body: bytes
    media_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(doc: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(doc, separators=(",", ":")).encode())


def error(message: str, status: int) -> Answer:
    return json_answer({"error": message}, status)


#: The answer to a request whose body passes MAX_BODY (both entries, .fastpath and .protocol).
TOO_LARGE = error(f"request body over {MAX_BODY} bytes", 413)


def unknown_model(requested: str) -> Answer:
    return error(f"Model with name {requested} does not exist.", 404)


def decode_body(body: bytes, encoding: str) -> bytes:
    """The request body after its ``content-encoding`` (gzip, deflate or none)."""
    if len(body) > MAX_BODY:
        raise TensorError(f"request body over {MAX_BODY} bytes")
    encoding = encoding.lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


async def _call(model: Model, method: Callable[[T], R], arg: T) -> R:
    """``method(arg)``, in a worker thread for a model whose calls take long."""
    if model.in_thread:
        return await asyncio.to_thread(method, arg)
    return method(arg)


def answers_now(model: Model, batcher: ModelBatcher | None) -> bool:
    """Whether a request can be answered with no await (``predict_v1_now``,
    ``infer_v2_now``): the model is called inline and nothing batches."""
    return batcher is None and not model.in_thread


def _model_failure(exc: Exception, what: str) -> Answer:
    """The answer for a model call that raised: bad input is the client's 400, the rest 500."""
    if isinstance(exc, ValueError | TypeError):
        return error(f"invalid input: {exc}", 400)
    log.exception("%s failed", what)
    return error(f"{'inference' if what == 'infer' else what} failed: {exc}", 500)


def _v1_instances(body: bytes, encoding: str) -> list[Any] | Answer:
    try:
        doc = json.loads(decode_body(body, encoding))
    except (ValueError, OSError, zlib.error) as exc:
        return error(f"request body is not JSON: {exc}", 400)
    instances = doc.get("instances", doc.get("inputs")) if isinstance(doc, dict) else None
    if not isinstance(instances, list):
        return error('expected {"instances": [...]} or {"inputs": [...]}', 400)
    return instances


def _v1_answer(predictions: Any, batch: int) -> Answer:
    answer = json_answer({"predictions": predictions})
    if batch:
        answer.headers[BATCH_HEADER] = str(batch)
    return answer


async def predict_v1(
    model: Model, batcher: ModelBatcher | None, body: bytes, encoding: str = ""
) -> Answer:
    """KServe V1 ``:predict`` on ``{"instances": [...]}`` (or ``inputs``)."""
    instances = _v1_instances(body, encoding)
    if isinstance(instances, Answer):
        return instances
    batch = 0
    try:
        if batcher is None:
            predictions = await _call(model, model.predict, instances)
        else:
            predictions, batch = await batcher.predict(instances)
    except Exception as exc:
        return _model_failure(exc, "predict")
    return _v1_answer(predictions, batch)


def predict_v1_now(model: Model, body: bytes, encoding: str = "") -> Answer:
    """``predict_v1`` where ``answers_now`` holds, without an await."""
    instances = _v1_instances(body, encoding)
    if isinstance(instances, Answer):
        return instances
    try:
        predictions = model.predict(instances)
    except Exception as exc:
        return _model_failure(exc, "predict")
    return _v1_answer(predictions, 0)


def _v2_request(body: bytes, header_length: str | None, encoding: str) -> InferRequest | Answer:
    try:
        return decode_request(decode_body(body, encoding), header_length)
    except (TensorError, OSError, zlib.error) as exc:
        return error(str(exc), 400)


def _v2_answer(model: Model, req: InferRequest, outputs: Any, batch: int) -> Answer:
    try:
        out, json_len = encode_response(model.name, req, outputs)
    except TensorError as exc:
        return error(str(exc), 400)
    headers = {BATCH_HEADER: str(batch)} if batch else {}
    if json_len is None:
        return Answer(200, out, JSON, headers)
    headers["Inference-Header-Content-Length"] = str(json_len)
    return Answer(200, out, "application/octet-stream", headers)


async def infer_v2(
    model: Model,
    batcher: ModelBatcher | None,
    body: bytes,
    header_length: str | None,
    encoding: str = "",
) -> Answer:
    """The Open Inference Protocol's ``infer``, JSON or binary tensors."""
    req = _v2_request(body, header_length, encoding)
    if isinstance(req, Answer):
        return req
    batch = 0
    try:
        if batcher is None:
            outputs = await _call(model, model.infer, req.inputs)
        else:
            outputs, batch = await batcher.infer(req.inputs)
    except Exception as exc:
        return _model_failure(exc, "infer")
    return _v2_answer(model, req, outputs, batch)


def infer_v2_now(
    model: Model, body: bytes, header_length: str | None, encoding: str = ""
) -> Answer:
    """``infer_v2`` where ``answers_now`` holds, without an await."""
    req = _v2_request(body, header_length, encoding)
    if isinstance(req, Answer):
        return req
    try:
        outputs = model.infer(req.inputs)
    except Exception as exc:
        return _model_failure(exc, "infer")
    return _v2_answer(model, req, outputs, 0)
