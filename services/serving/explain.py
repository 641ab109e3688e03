"""V1 ``:explain``: ``POST /serving/{ns}/{name}/v1/models/{model}:explain``.

KServe's ingress sends ``:explain`` to the InferenceService's explainer component and every
other path to the predictor (or transformer). The gateway routes by name, not by path, so
it sends ``:explain`` here (gateway.routes, a route of the serving service ahead of the data
plane's), and this handler answers as KServe's model server does for a model that cannot
explain: 501 with a V1 error body, unless ``spec.explainer`` runs one
(services.serving.components); then the request is passed to the explainer's endpoint as
its ``POST /v1/models/{model}:explain``, with the body and content type only (nothing of the
caller's identity reaches tenant code).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.common.app import context
from services.common.auth import IdentityDep, authorize
from services.common.runtime.endpoint_http import EndpointTransport
from services.serving.models import INFERENCE_SERVICE

log = logging.getLogger(__name__)

router = APIRouter(tags=["InferenceService data plane"])
#: The explainer's answer may take long (an anchor or SHAP search), but not for ever.
EXPLAIN_TIMEOUT = 120.0
MAX_BODY = 32 * 1024 * 1024
_client: httpx.AsyncClient | None = None


def _http() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(transport=EndpointTransport(), timeout=EXPLAIN_TIMEOUT)
    return _client


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code)


@router.post("/serving/{namespace}/{name}/v1/models/{model}:explain")
async def explain_model(
    namespace: str, name: str, model: str, request: Request, identity: IdentityDep
) -> Response:
    """Explain a prediction with the InferenceService's explainer; 501 without one."""
    authorize(identity, "create", namespace, "inferenceservices/explain")
    isvc: dict[str, Any] | None = await context(request).store.find(
        INFERENCE_SERVICE, namespace, name
    )
    if isvc is None:
        return _error(404, f"InferenceService {namespace}/{name} not found")
    if not (isvc.get("spec") or {}).get("explainer"):
        return _error(
            501,
            f"model {model} of InferenceService {namespace}/{name} has no explainer: "
            ":explain needs spec.explainer (a container that serves "
            "POST /v1/models/{name}:explain, as KServe's explainers do)",
        )
    explainer = ((isvc.get("status") or {}).get("components") or {}).get("explainer") or {}
    # One of its replicas (``endpoints`` lists them when there are several).
    endpoint = random.choice(explainer.get("endpoints") or [explainer.get("endpoint")])
    if not endpoint:
        return _error(503, f"the explainer of {namespace}/{name} is not ready")
    body = await request.body()
    if len(body) > MAX_BODY:
        return _error(413, f"request body over {MAX_BODY} bytes")
    headers = {"content-type": request.headers.get("content-type", "application/json")}
    try:
        answer = await _http().post(
            f"{endpoint.rstrip('/')}/v1/models/{model}:explain", content=body, headers=headers
        )
    except httpx.HTTPError as exc:
        log.warning("explainer of %s/%s failed: %r", namespace, name, exc)
        return _error(502, f"the explainer of {namespace}/{name} did not answer: {exc}")
    return Response(
        answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )
