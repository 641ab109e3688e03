"""Retrying a failed Workflow: Argo's ``retry`` and KFP's ``:retry`` share this one way.

As Argo's server does, the workflow reads Running as soon as the request returns, so a
client that retries and then waits for completion waits for the retry, not the old failure.
The controller then forgets the failed nodes and runs them again (``_apply_retry``), once it
sees the bumped retry generation.
"""

from __future__ import annotations

from typing import Any

from services.common.resources import ResourceStore
from services.pipeline.models import RETRY_ANNOTATION, WORKFLOW


async def request_retry(store: ResourceStore, wf: dict[str, Any]) -> dict[str, Any]:
    meta = wf["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = int((meta.get("annotations") or {}).get(RETRY_ANNOTATION) or 0) + 1
    await store.patch(
        WORKFLOW,
        namespace,
        name,
        {
            "spec": {"shutdown": None},
            "metadata": {"annotations": {RETRY_ANNOTATION: str(generation)}},
        },
    )
    return await store.patch(
        WORKFLOW,
        namespace,
        name,
        {"status": {"phase": "Running", "finishedAt": None, "message": None}},
        subresource="status",
    )
