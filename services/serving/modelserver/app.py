"""The model server's HTTP app: KServe V1 and the Open Inference Protocol V2 (REST).

The routed app here answers health, metadata and the model list; the two inference requests
(V1 ``:predict``, V2 ``infer``) are answered before routing by :mod:`.fastpath` with
:mod:`.handlers`, since on the data plane the router would cost more than the model itself
for small inputs. Errors use the protocols' own shape, ``{"error": "..."}``, never a FastAPI
``detail``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .batcher import ModelBatcher
from .fastpath import InferFastPath
from .handlers import BATCH_HEADER
from .loaders import Model
from .openai_api import add_openai_routes

log = logging.getLogger(__name__)

SERVER_NAME = "shipyard-modelserver"
SERVER_VERSION = "0.1.0"
__all__ = ["BATCH_HEADER", "create_model_app", "protocol_platform"]


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

    _add_v1_routes(app, model, unknown)
    _add_v2_routes(app, model, unknown)
    add_openai_routes(app, model)  # /openai/v1/...: completions of text-generation models

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(f"no route {request.url.path}", 404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _error(f"method {request.method} not allowed on {request.url.path}", 405)

    app.state.protocol = protocol
    routed = StripPrefix(app, path_prefix) if path_prefix else app
    return InferFastPath(routed, model, batcher, path_prefix)


def _add_v1_routes(
    app: FastAPI,
    model: Model,
    unknown: Callable[[str], Response | None],
) -> None:
    """KServe V1: liveness, the model list and metadata (``:predict`` is in .fastpath)."""
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


def _add_v2_routes(
    app: FastAPI,
    model: Model,
    unknown: Callable[[str], Response | None],
) -> None:
    """The Open Inference Protocol (V2): health and metadata (``infer`` is in .fastpath)."""
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


def protocol_platform(model: Model) -> str:
    return f"{type(model).__name__.removesuffix('Model').lower()}_shipyard"
