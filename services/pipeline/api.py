"""Workflow routes beside the generic resource API: logs, and Argo-style actions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from services.common.app import context
from services.common.auth import IdentityDep, authorize
from services.common.errors import ApiError
from services.pipeline.models import WORKFLOW
from services.pipeline.runner import workload_name

router = APIRouter()
LOG_PATH = "/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows/{name}/log"


def pod_nodes(wf: dict[str, Any], step: str | None) -> list[dict[str, Any]]:
    """The workflow's Pod nodes in start order, optionally only those matching ``step``."""
    nodes = [
        n
        for n in (wf.get("status") or {}).get("nodes", {}).values()
        if n.get("type") == "Pod" and n.get("phase") not in ("Pending",)
    ]
    if step:
        nodes = [
            n
            for n in nodes
            if step in (n.get("displayName"), n.get("name"), n.get("id"), n.get("templateName"))
        ]
    return sorted(nodes, key=lambda n: (n.get("startedAt", ""), n["name"]))


async def logged_workflow(
    request: Request, identity: Any, namespace: str, name: str, step: str | None, noun: str
) -> dict[str, Any]:
    """The workflow whose logs are asked for, once ``identity`` may read them; 404 (naming the
    step as the caller's API calls it: ``noun``) if ``step`` matches none of its pods."""
    authorize(identity, "get", namespace, "workflows/log")
    wf = await context(request).store.get(WORKFLOW, namespace, name)
    if step and not pod_nodes(wf, step):
        raise ApiError(404, f'{noun} "{step}" not found in workflow "{name}"')
    return wf


async def log_lines(
    request: Request, wf: dict[str, Any], step: str | None, follow: bool, tail: int | None
) -> AsyncIterator[tuple[dict[str, Any], str]]:
    runtime = context(request).runtime
    nodes = pod_nodes(wf, step)
    for node in nodes:
        try:
            async for line in runtime.logs(
                wf["metadata"]["namespace"], workload_name(wf, node), tail=tail, follow=follow
            ):
                yield node, line
        except Exception:  # the workload is gone (deleted): nothing left to show
            continue


@router.get(LOG_PATH)
async def read_workflow_log(
    request: Request, namespace: str, name: str, identity: IdentityDep
) -> StreamingResponse:
    """Plain-text log lines of the workflow's steps (``?step=`` picks one; ``follow``)."""
    q = request.query_params
    step = q.get("step") or q.get("podName") or None
    follow = q.get("follow") in ("1", "true", "True")
    tail = int(q["tailLines"]) if (q.get("tailLines") or "").isdigit() else None
    wf = await logged_workflow(request, identity, namespace, name, step, "step")
    prefix = step is None and len(pod_nodes(wf, None)) > 1

    async def body() -> AsyncIterator[bytes]:
        async for node, line in log_lines(request, wf, step, follow, tail):
            text = f"{node['displayName']}: {line}" if prefix else line
            yield (text + "\n").encode()

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8")
