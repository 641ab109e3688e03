"""``retryStrategy``: attempts as child nodes, back-off, ``retryPolicy`` and expressions.

One seam of an :class:`~services.pipeline.engine.Engine` pass (its module says how they fit).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from services.pipeline.engine_types import MAX_RETRIES, Scope, duration_seconds
from services.pipeline.nodes import add_child, finish, is_finished, node_id, parse_iso
from services.pipeline.variables import substitute

if TYPE_CHECKING:
    from services.pipeline.engine import Engine

log = logging.getLogger(__name__)


async def run_retry(
    eng: Engine,
    node: dict[str, Any],
    tmpl: dict[str, Any],
    tmpl_scope: str,
    params: dict[str, str],
    artifacts: dict[str, dict[str, Any]],
    scope: Scope,
) -> None:
    strategy = tmpl["retryStrategy"]
    raw_limit = strategy.get("limit")
    limit = int(substitute(raw_limit, scope.values)) if raw_limit not in (None, "") else None
    policy = strategy.get("retryPolicy") or "OnFailure"
    attempt_tmpl = {k: v for k, v in tmpl.items() if k != "retryStrategy"}
    boundary = node.get("boundaryID")
    node["phase"] = "Running"

    def attempt_name(i: int) -> str:
        return f"{node['name']}({i})"

    async def run_attempt(i: int) -> dict[str, Any]:
        """Attempt ``i``'s node: started, or carried on where it stands."""
        name = attempt_name(i)
        return await eng.execute(
            name,
            name.rsplit(".", 1)[-1],
            tmpl_scope,
            attempt_tmpl,
            params,
            artifacts,
            boundary,
            scope,
            retry_attempt=i,
        )

    attempts = 0
    while node_id(eng.name, attempt_name(attempts)) in eng.nodes:
        attempts += 1
    if attempts:
        last = eng.nodes[node_id(eng.name, attempt_name(attempts - 1))]
        if not is_finished(last):
            last = await run_attempt(attempts - 1)
            if not is_finished(last):
                return
        if last.get("outputs"):
            node["outputs"] = last["outputs"]
        if last["phase"] in ("Succeeded", "Skipped", "Omitted"):
            finish(node, last["phase"])
            return
        retryable = (
            policy == "Always"
            or (policy == "OnFailure" and last["phase"] == "Failed")
            or (policy in ("OnError", "OnTransientError") and last["phase"] == "Error")
        )
        cap = MAX_RETRIES if limit is None else limit
        if not retryable or attempts > cap:
            message = last.get("message") or ""
            if retryable:
                message = f"No more retries left ({message})" if message else "No more retries left"
            finish(node, last["phase"], message)
            return
        wait = backoff(eng, strategy, attempts, scope)
        finished_at = parse_iso(last.get("finishedAt")) or eng.now
        ready_at = finished_at + timedelta(seconds=wait)
        if wait > 0 and ready_at > eng.now:
            node["message"] = f"Backoff for {wait:g}s"
            eng._requeue((ready_at - eng.now).total_seconds())
            return
    node.pop("message", None)
    child = await run_attempt(attempts)
    add_child(node, child["id"])
    if is_finished(child):
        eng._requeue(0.05)  # fold the outcome in (and maybe retry) on the next pass


def backoff(eng: Engine, strategy: dict[str, Any], attempt: int, scope: Scope) -> float:
    backoff = strategy.get("backoff") or {}
    base = duration_seconds(substitute(backoff.get("duration") or "0", scope.values)) or 0.0
    factor = float(backoff.get("factor") or 1)
    wait = base * factor ** max(0, attempt - 1)
    cap = duration_seconds(backoff.get("maxDuration"))
    if cap is not None:
        wait = min(wait, cap)
    return wait
