"""Serving a workload's logs over HTTP (``GET .../{name}/log``), the same way in every service."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from services.common.errors import ApiError
from services.common.runtime import Runtime, WorkloadNotFound


def log_params(request: Request) -> tuple[bool, int | None]:
    """``follow`` and ``tailLines`` as the Kubernetes pod log API spells them."""
    follow = request.query_params.get("follow", "").lower() in ("1", "true", "yes")
    tail = request.query_params.get("tailLines")
    if tail is not None and not tail.isdigit():
        raise ApiError(400, f"tailLines must be a non-negative integer, not {tail!r}")
    return follow, int(tail) if tail is not None else None


async def workload_log_response(
    runtime: Runtime, namespace: str, workload: str, request: Request, what: str
) -> StreamingResponse:
    """Stream the workload's output as text lines; 404 names ``what`` when it has none yet."""
    follow, tail = log_params(request)
    try:
        await runtime.status(namespace, workload)
    except WorkloadNotFound:
        raise ApiError(404, f"{what} has no logs yet: it has not started a workload") from None

    async def lines() -> AsyncIterator[bytes]:
        async for line in runtime.logs(namespace, workload, tail=tail, follow=follow):
            yield line.encode() + b"\n"

    return StreamingResponse(lines(), media_type="text/plain; charset=utf-8")
