"""AutoML routes beyond the generic resource API.

- ``GET  .../trials/{name}/observationlog`` - Katib's ``GetObservationLog`` as JSON;
- ``POST .../trials/{name}/metrics``        - the Push collector's endpoint;
- ``GET  .../trials/{name}/log``            - the trial's output (``shipyard logs trial NAME``);
- ``GET  .../experiments/{name}/trialsummary`` - every trial's parameters, objective, metrics
  and status: the data of the parallel-coordinates chart.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.automl import collector, events
from services.automl import store as automl_store
from services.automl.models import EXPERIMENT, EXPERIMENT_LABEL, TRIAL
from services.automl.status import is_finished, trial_state
from services.automl.template import workload_name
from services.automl.training import trials as training_trials
from services.common.app import ServiceContext, context
from services.common.auth import IdentityDep, authorize
from services.common.errors import ApiError, Cause
from services.common.resources.api import read_body
from services.common.resources.store import sort_by_creation
from services.common.runtime import WorkloadNotFound

BASE = "/apis/kubeflow.org/v1beta1/namespaces/{namespace}"
TRIALS = "trials.kubeflow.org"
MAX_PUSH_METRICS = 1000

router = APIRouter(tags=["automl"])


def _time(raw: str | None, name: str) -> datetime | None:
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} must be an RFC 3339 time, not {raw!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.get(BASE + "/trials/{name}/observationlog")
async def read_observation_log(
    request: Request, namespace: str, name: str, identity: IdentityDep
) -> dict[str, Any]:
    """Katib's GetObservationLog(trial_name, metric_name, start_time, end_time)."""
    authorize(identity, "get", namespace, TRIALS)
    ctx = context(request)
    await ctx.store.get(TRIAL, namespace, name)
    params = request.query_params
    async with ctx.db.sessions() as s:
        logs = await automl_store.read_observations(
            s,
            namespace,
            name,
            params.get("metricName") or None,
            _time(params.get("startTime"), "startTime"),
            _time(params.get("endTime"), "endTime"),
        )
    return {"observationLog": {"metricLogs": [m.to_json() for m in logs]}}


async def record_push(ctx: ServiceContext, namespace: str, name: str, body: Any) -> dict[str, Any]:
    """Store pushed metrics of a running trial (shared by the token and gateway doors)."""
    if not isinstance(body, dict) or not isinstance(body.get("metrics"), list):
        raise ApiError(
            400, 'the body must be {"metrics": [{"name", "value", "step"?, "timestamp"?}]}'
        )
    if len(body["metrics"]) > MAX_PUSH_METRICS:
        raise ApiError(413, f"at most {MAX_PUSH_METRICS} metrics per report")
    trial = await ctx.store.get(TRIAL, namespace, name)
    if is_finished(trial):
        raise ApiError(409, f'trial "{name}" is {trial_state(trial)}; it takes no more metrics')
    wanted = set(collector.metric_names(trial["spec"]["objective"]))
    entries: list[collector.MetricLog] = []
    causes = []
    async with ctx.db.sessions() as s:
        existing = await automl_store.read_observations(s, namespace, name)
    counts: dict[str, int] = {}
    for m in existing:
        counts[m.name] = counts.get(m.name, 0) + 1
    for i, item in enumerate(body["metrics"]):
        if not isinstance(item, dict) or "name" not in item or "value" not in item:
            causes.append(Cause(f"metrics[{i}]", "needs name and value"))
            continue
        value = str(item["value"])
        try:
            ok = math.isfinite(float(value))
        except ValueError:
            ok = False
        if not ok:
            causes.append(Cause(f"metrics[{i}].value", f"{value!r} is not a finite number"))
            continue
        metric = str(item["name"])
        if metric not in wanted:
            continue  # like the other collectors: only the objective's metrics are kept
        step = item.get("step")
        if not isinstance(step, int):
            step = counts.get(metric, 0)
        counts[metric] = counts.get(metric, 0) + 1
        when = _time(item.get("timestamp"), f"metrics[{i}].timestamp") or datetime.now(UTC)
        entries.append(collector.MetricLog(metric, value, when, step))
    if causes:
        raise ApiError(
            422,
            "invalid metrics: " + "; ".join(f"{c.field}: {c.message}" for c in causes),
            causes=causes,
        )
    async with ctx.db.transaction() as s:
        await automl_store.add_observations(s, namespace, name, entries)
        await events.stage_trial_event(
            s,
            ctx.metadata.tables["outbox"],
            events.METRICS,
            events.TrialMetricsEvent(
                namespace=namespace,
                trial=name,
                experiment=(trial["metadata"].get("labels") or {}).get(EXPERIMENT_LABEL, ""),
                metrics=[
                    events.MetricValue(
                        name=e.name, value=e.value, step=e.step or 0, timestamp=e.time.isoformat()
                    )
                    for e in entries
                ],
            ),
        )
    return {"accepted": len(entries)}


@router.post(BASE + "/trials/{name}/metrics")
async def create_trial_metrics(
    request: Request, namespace: str, name: str, identity: IdentityDep
) -> dict[str, Any]:
    """Push metrics through the gateway (a person or a namespace service account)."""
    authorize(identity, "update", namespace, TRIALS + "/status")
    return await record_push(context(request), namespace, name, await read_body(request))


def push_app(ctx: ServiceContext) -> FastAPI:
    """The endpoint trial workloads reach with their trial token (see push.py)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post(BASE + "/trials/{name}/metrics")
    async def create_pushed_metrics(request: Request, namespace: str, name: str) -> Any:
        try:
            return await record_push(ctx, namespace, name, await read_body(request))
        except ApiError as err:
            return JSONResponse(err.status(), status_code=err.code)

    return app


@router.get(BASE + "/trials/{name}/log")
async def read_trial_log(
    request: Request, namespace: str, name: str, identity: IdentityDep
) -> StreamingResponse:
    """The trial's output as plain text lines; ``follow=true`` streams until it ends."""
    authorize(identity, "get", namespace, TRIALS)
    ctx = context(request)
    trial = await ctx.store.get(TRIAL, namespace, name)
    runtime = ctx.runtime
    follow = request.query_params.get("follow") in ("1", "true", "True")
    tail_raw = request.query_params.get("tailLines")
    try:
        tail = int(tail_raw) if tail_raw else None
    except ValueError:
        raise ApiError(400, f"tailLines must be an integer, not {tail_raw!r}") from None
    wname = workload_name(name)
    if training_trials.is_training_run(trial["spec"].get("runSpec")):  # its primary replica
        wname = await training_trials.primary_now(runtime, trial) or wname
    try:
        await runtime.status(namespace, wname)
    except WorkloadNotFound:
        raise ApiError(404, f'trial "{name}" has no workload (yet)') from None

    async def lines() -> AsyncIterator[bytes]:
        async with asyncio.timeout(24 * 3600):
            async for line in runtime.logs(namespace, wname, tail=tail, follow=follow):
                yield (line + "\n").encode()

    return StreamingResponse(
        lines(),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(BASE + "/experiments/{name}/trialsummary")
async def read_trial_summary(
    request: Request, namespace: str, name: str, identity: IdentityDep
) -> dict[str, Any]:
    """Parameters against objective and metrics, per trial (parallel coordinates)."""
    authorize(identity, "get", namespace, "experiments.kubeflow.org")
    ctx = context(request)
    experiment = await ctx.store.get(EXPERIMENT, namespace, name)
    trials = sort_by_creation(
        await ctx.store.list_all(TRIAL, namespace, label_selector=f"{EXPERIMENT_LABEL}={name}")
    )
    objective = experiment["spec"]["objective"]
    metric_names = collector.metric_names(objective)
    rows = []
    for trial in trials:
        obs = (trial.get("status") or {}).get("observation")
        metrics: dict[str, float | None] = {}
        for metric in (obs or {}).get("metrics") or []:
            strategy = next(
                (
                    s["value"]
                    for s in objective.get("metricStrategies") or []
                    if s["name"] == metric["name"]
                ),
                "latest",
            )
            raw = metric.get(strategy, metric.get("latest"))
            try:
                metrics[metric["name"]] = float(raw)
            except (TypeError, ValueError):
                metrics[metric["name"]] = None
        rows.append(
            {
                "name": trial["metadata"]["name"],
                "status": trial_state(trial),
                "parameters": {
                    a["name"]: a["value"] for a in trial["spec"].get("parameterAssignments") or []
                },
                "objective": collector.objective_value(obs, objective),
                "metrics": metrics,
            }
        )
    return {
        "experiment": name,
        "objective": {
            "name": objective["objectiveMetricName"],
            "type": objective["type"],
            "goal": objective.get("goal"),
        },
        "parameters": [p["name"] for p in experiment["spec"].get("parameters") or []],
        "metrics": metric_names,
        "bestTrialName": ((experiment.get("status") or {}).get("currentOptimalTrial") or {}).get(
            "bestTrialName", ""
        ),
        "trials": rows,
    }
