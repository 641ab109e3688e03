"""The model server's HTTP app: KServe V1 and the Open Inference Protocol V2 (REST).

Handlers take the raw request and return raw responses: the data plane is the hot path, and
pydantic request models would cost more than the model itself for small inputs. Errors use
the protocols' own shape, ``{"error": "..."}``, never a FastAPI ``detail``.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .batcher import ModelBatcher
from .loaders import Model
from .tensors import HEADER_LENGTH, TensorError, decode_request, encode_response

log = logging.getLogger(__name__)

SERVER_NAME = "shipyard-modelserver"
SERVER_VERSION = "0.1.0"
MAX_BODY = 64 * 1024 * 1024
#: With a batcher: how many requests the model call that answered this one served.
BATCH_HEADER = "x-batch-size"


def _json(doc: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(doc, separators=(",", ":")), status_code=status, media_type="application/json"
    )


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


class StripPrefix:
    """Serve under ``prefix`` as well as at the root (the gateway forwards the full path)."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.raw_prefix = self.prefix.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prefix and scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if path == self.prefix or path.startswith(self.prefix + "/"):
                scope = dict(scope)
                scope["path"] = path[len(self.prefix) :] or "/"
                raw = scope.get("raw_path")
                if raw is not None and raw.startswith(self.raw_prefix):
                    scope["raw_path"] = raw[len(self.raw_prefix) :] or b"/"
        await self.app(scope, receive, send)


async def _body(request: Request) -> bytes:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise TensorError(f"request body over {MAX_BODY} bytes")
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def create_model_app(
    model: Model,
    protocol: str = "v1",
    path_prefix: str = "",
    batcher: ModelBatcher | None = None,
) -> ASGIApp:
    """The ASGI app serving ``model`` over V1 and V2, optionally under ``path_prefix``; with
    ``batcher``, concurrent predict/infer requests are merged into one model call and each
    answer says how many requests its call served (``x-batch-size``)."""
    app = FastAPI(title=SERVER_NAME, docs_url=None, redoc_url=None, openapi_url=None)
    name = model.name

    def unknown(requested: str) -> Response | None:
        if requested != name:
            return _error(f"Model with name {requested} does not exist.", 404)
        return None

    _add_v1_routes(app, model, unknown, batcher)
    _add_v2_routes(app, model, unknown, batcher)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(f"no route {request.url.path}", 404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(f"method {request.method} not allowed on {request.url.path}", 405)

    app.state.protocol = protocol
    return StripPrefix(app, path_prefix) if path_prefix else app


def _add_v1_routes(
    app: FastAPI,
    model: Model,
    unknown: Callable[[str], Response | None],
    batcher: ModelBatcher | None,
) -> None:
    """KServe V1: liveness, the model list and metadata, ``:predict`` on JSON instances."""
    name = model.name

    @app.get("/")
    async def read_liveness() -> Response:
        return _json({"status": "alive"})

    @app.get("/v1/models")
    async def list_models_v1() -> Response:
        return _json({"models": [name]})

    @app.get("/v1/models/{model_name}")
    async def read_model_v1(model_name: str) -> Response:
        return unknown(model_name) or _json({"name": name, "ready": True})

    @app.post("/v1/models/{model_name}:predict")
    async def predict_v1(model_name: str, request: Request) -> Response:
        if (missing := unknown(model_name)) is not None:
            return missing
        try:
            doc = json.loads(await _body(request))
        except (ValueError, OSError, TensorError) as exc:
            return _error(f"request body is not JSON: {exc}", 400)
        if not isinstance(doc, dict):
            return _error('expected {"instances": [...]} or {"inputs": [...]}', 400)
        instances = doc.get("instances", doc.get("inputs"))
        if not isinstance(instances, list):
            return _error('expected {"instances": [...]} or {"inputs": [...]}', 400)
        batch = 0
        try:
            if batcher is None:
                predictions = model.predict(instances)
            else:
                predictions, batch = await batcher.predict(instances)
        except (ValueError, TypeError) as exc:
            return _error(f"invalid input: {exc}", 400)
        except Exception as exc:
            log.exception("predict failed")
            return _error(f"predict failed: {exc}", 500)
        response = _json({"predictions": predictions})
        if batch:
            response.headers[BATCH_HEADER] = str(batch)
        return response


def _add_v2_routes(
    app: FastAPI,
    model: Model,
    unknown: Callable[[str], Response | None],
    batcher: ModelBatcher | None,
) -> None:
    """The Open Inference Protocol (V2): health, metadata, ``infer`` with binary tensors."""
    name = model.name

    @app.get("/v2/health/live")
    async def read_live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def read_ready() -> Response:
        return _json({"ready": True})

    @app.get("/v2")
    async def read_server_metadata() -> Response:
        return _json(
            {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]}
        )

    def metadata() -> dict[str, Any]:
        return {
            "name": name,
            "versions": ["1"],
            "platform": protocol_platform(model),
            **model.metadata(),
        }

    @app.get("/v2/models/{model_name}")
    @app.get("/v2/models/{model_name}/versions/{version}")
    async def read_model_metadata(model_name: str, version: str | None = None) -> Response:
        return unknown(model_name) or _json(metadata())

    @app.get("/v2/models/{model_name}/ready")
    @app.get("/v2/models/{model_name}/versions/{version}/ready")
    async def read_model_ready(model_name: str, version: str | None = None) -> Response:
        return unknown(model_name) or _json({"name": name, "ready": True})

    @app.post("/v2/models/{model_name}/infer")
    @app.post("/v2/models/{model_name}/versions/{version}/infer")
    async def infer(model_name: str, request: Request, version: str | None = None) -> Response:
        if (missing := unknown(model_name)) is not None:
            return missing
        try:
            req = decode_request(await _body(request), request.headers.get(HEADER_LENGTH))
        except (TensorError, OSError, zlib.error) as exc:
            return _error(str(exc), 400)
        batch = 0
        try:
            if batcher is None:
                outputs = model.infer(req.inputs)
            else:
                outputs, batch = await batcher.infer(req.inputs)
        except (ValueError, TypeError) as exc:
            return _error(f"invalid input: {exc}", 400)
        except Exception as exc:
            log.exception("infer failed")
            return _error(f"inference failed: {exc}", 500)
        try:
            body, json_len = encode_response(name, req, outputs)
        except TensorError as exc:
            return _error(str(exc), 400)
        headers = {BATCH_HEADER: str(batch)} if batch else None
        if json_len is None:
            return Response(body, media_type="application/json", headers=headers)
        return Response(
            body,
            media_type="application/octet-stream",
            headers={**(headers or {}), "Inference-Header-Content-Length": str(json_len)},
        )


def protocol_platform(model: Model) -> str:
    return f"{type(model).__name__.removesuffix('Model').lower()}_shipyard"
