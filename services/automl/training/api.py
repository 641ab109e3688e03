"""``GET .../pytorchjobs/{name}/log``: one replica's output (``shipyard logs pytorchjob NAME
-c worker-1``); ``container`` names the replica as its pod is named after the job
(``master-0``, ``worker-<i>``; the master by default), ``follow`` and ``tailLines`` as for
trials."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from services.automl.training.models import PYTORCHJOB
from services.automl.training.replicas import WORKLOAD_PREFIX
from services.common.app import context
from services.common.auth import IdentityDep, authorize
from services.common.errors import ApiError
from services.common.runtime import WorkloadNotFound

router = APIRouter(tags=["automl"])
_REPLICA = re.compile(r"^(master|worker)-[0-9]{1,5}$")


@router.get("/apis/kubeflow.org/v1/namespaces/{namespace}/pytorchjobs/{name}/log")
async def read_pytorchjob_log(
    request: Request, namespace: str, name: str, identity: IdentityDep
) -> StreamingResponse:
    """The replica's output as plain text lines; ``follow=true`` streams until it ends."""
    authorize(identity, "get", namespace, "pytorchjobs.kubeflow.org")
    ctx = context(request)
    await ctx.store.get(PYTORCHJOB, namespace, name)
    replica = request.query_params.get("container") or "master-0"
    if not _REPLICA.match(replica):
        raise ApiError(400, f"container {replica!r}: name a replica, master-0 or worker-<i>")
    follow = request.query_params.get("follow") in ("1", "true", "True")
    tail_raw = request.query_params.get("tailLines")
    try:
        tail = int(tail_raw) if tail_raw else None
    except ValueError:
        raise ApiError(400, f"tailLines must be an integer, not {tail_raw!r}") from None
    wname = f"{WORKLOAD_PREFIX}{name}-{replica}"
    try:
        await ctx.runtime.status(namespace, wname)
    except WorkloadNotFound:
        raise ApiError(404, f'pytorchjob "{name}" has no replica {replica} (now)') from None

    async def lines() -> AsyncIterator[bytes]:
        async with asyncio.timeout(24 * 3600):
            async for line in ctx.runtime.logs(namespace, wname, tail=tail, follow=follow):
                yield (line + "\n").encode()

    return StreamingResponse(
        lines(),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
