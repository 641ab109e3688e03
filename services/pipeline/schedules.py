"""Time-driven work: CronWorkflows, KFP recurring runs and run retention.

Only one replica schedules at a time: the scheduler runs under the service's leader election
(services/common/leader.py), with the workflow controller, so a failover moves both together
and a cron's workflows are reconciled where they are created. Fires are idempotent, which is
what makes a failover safe even if the old leader ticks once more before it notices it lost
the lock: a CronWorkflow's workflow is named ``<cron>-<unix time of the schedule>`` (as in
Argo) and a recurring run's workflow ``kfp-<recurring id>-<unix time>``, so a fire repeated
after a crash or by two schedulers hits AlreadyExists instead of starting a second run; the
last scheduled time is recorded after the create, so a crash in between re-fires the same
(deduplicated) slot, never loses it.

Catch-up across a failover (or any pause): a CronWorkflow fires only the newest slot it
missed, within ``startingDeadlineSeconds`` (as Argo and Kubernetes CronJobs do); a KFP
recurring run fires every missed slot, one per tick, unless ``no_catchup`` (as KFP does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from services.common.errors import ApiError
from services.common.resources import ResourceStore
from services.common.tasks import cancel_and_wait
from services.pipeline.artifact_records import delete_run_artifacts
from services.pipeline.cron import parse_schedule
from services.pipeline.kfp_runs import (
    FINAL_STATES,
    RECURRING_LABEL,
    RUN_SOURCE_FIELDS,
    RunService,
    run_state,
)
from services.pipeline.kfp_store import KfpStore
from services.pipeline.models import CRON_WORKFLOW, WORKFLOW
from services.pipeline.nodes import parse_iso

log = logging.getLogger(__name__)

CRON_LABEL = "workflows.argoproj.io/cron-workflow"
FINISHED = ("Succeeded", "Failed", "Error")
TICK_SECONDS = 0.5


class Scheduler:
    """One loop for CronWorkflows, recurring runs and retention (run in the leader only)."""

    def __init__(
        self,
        store: ResourceStore,
        kfp: KfpStore,
        runs: RunService,
        *,
        retention_seconds: float = 0,
    ) -> None:
        self.store = store
        self.kfp = kfp
        self.runs = runs
        self.retention_seconds = retention_seconds
        self._task: asyncio.Task[None] | None = None
        self._last_retention = 0.0
        self._unavailable = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="pipeline-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait([task])

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick(datetime.now(UTC))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if await self.store.db.ping(within=1.0):
                    log.exception("scheduler tick failed")
                    self._unavailable = False
                else:
                    if not self._unavailable:  # once per outage, not twice a second
                        log.warning("scheduler: database unavailable (%r); retrying", exc)
                    self._unavailable = True
            else:
                self._unavailable = False
            await asyncio.sleep(TICK_SECONDS)

    async def tick(self, now: datetime) -> None:
        for cron in await self.store.list_all(CRON_WORKFLOW):
            try:
                await self.cron_tick(cron, now)
            except Exception:
                log.exception(
                    "cron workflow %s/%s",
                    cron["metadata"].get("namespace"),
                    cron["metadata"]["name"],
                )
        for row in await self.kfp.rows("kfp_recurring_runs", status="ENABLED"):
            try:
                await self.recurring_tick(row, now)
            except Exception:
                log.exception("recurring run %s", row["id"])
        loop_now = asyncio.get_running_loop().time()
        if self.retention_seconds and loop_now - self._last_retention > 60:
            self._last_retention = loop_now
            await self.apply_retention(now)

    # ------------------------------------------------------------ cron workflows
    async def cron_tick(self, cron: dict[str, Any], now: datetime) -> None:
        spec, meta = cron["spec"], cron["metadata"]
        status = dict(cron.get("status") or {})
        ns, name = meta["namespace"], meta["name"]
        children = await self.store.list_all(WORKFLOW, ns, label_selector=f"{CRON_LABEL}={name}")
        active = [w for w in children if (w.get("status") or {}).get("phase") not in FINISHED]
        await self._trim_history(spec, children)
        new_status = {
            **status,
            "active": [
                {
                    "kind": "Workflow",
                    "namespace": ns,
                    "name": w["metadata"]["name"],
                    "uid": w["metadata"]["uid"],
                }
                for w in active
            ],
        }
        if not spec.get("suspend"):
            due = self._latest_due(spec, status, meta, now)
            if due is not None:
                deadline = spec.get("startingDeadlineSeconds")
                late = (now - due).total_seconds()
                policy = spec.get("concurrencyPolicy") or "Allow"
                if deadline is not None and late > float(deadline):
                    log.info(
                        "cron %s/%s missed %s by %.0fs (startingDeadlineSeconds=%s)",
                        ns,
                        name,
                        due,
                        late,
                        deadline,
                    )
                elif policy == "Forbid" and active:
                    log.info("cron %s/%s skips %s: a run is active (Forbid)", ns, name, due)
                else:
                    if policy == "Replace":
                        for w in active:
                            await self.store.patch(
                                WORKFLOW,
                                ns,
                                w["metadata"]["name"],
                                {"spec": {"shutdown": "Terminate"}},
                            )
                    await self._create_cron_workflow(cron, due)
                new_status["lastScheduledTime"] = due.strftime("%Y-%m-%dT%H:%M:%SZ")
        if new_status != status:
            try:
                await self.store.update_status(CRON_WORKFLOW, ns, name, new_status)
            except ApiError as exc:
                if exc.code != 404:
                    raise

    @staticmethod
    def _latest_due(
        spec: dict[str, Any], status: dict[str, Any], meta: dict[str, Any], now: datetime
    ) -> datetime | None:
        """The most recent schedule time in (last scheduled, now], like Argo (not every miss)."""
        last = (
            parse_iso(status.get("lastScheduledTime"))
            or parse_iso(meta.get("creationTimestamp"))
            or now
        )
        schedules = ([spec["schedule"]] if spec.get("schedule") else []) + list(
            spec.get("schedules") or []
        )
        latest: datetime | None = None
        for line in schedules:
            sched = parse_schedule(line, spec.get("timezone"))
            t = sched.next_fire(last)
            if t > now:
                continue
            for _ in range(100_000):  # walk to the newest due time, bounded
                following = sched.next_fire(t)
                if following > now:
                    break
                t = following
            latest = t if latest is None or t > latest else latest
        return latest

    async def _create_cron_workflow(self, cron: dict[str, Any], due: datetime) -> None:
        meta = cron["metadata"]
        wf_meta = dict(cron["spec"].get("workflowMetadata") or {})
        labels = {**(wf_meta.get("labels") or {}), CRON_LABEL: meta["name"]}
        annotations = {
            **(wf_meta.get("annotations") or {}),
            "workflows.argoproj.io/scheduled-time": due.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        body = {
            "metadata": {
                "name": f"{meta['name']}-{int(due.timestamp())}",
                "labels": labels,
                "annotations": annotations,
            },
            "spec": cron["spec"]["workflowSpec"],
        }
        try:
            await self.store.create(WORKFLOW, meta["namespace"], body)
        except ApiError as exc:
            if exc.reason != "AlreadyExists":
                raise

    async def _trim_history(self, spec: dict[str, Any], children: list[dict[str, Any]]) -> None:
        limits = {
            "Succeeded": spec.get("successfulJobsHistoryLimit", 3),
            "Failed": spec.get("failedJobsHistoryLimit", 1),
        }
        for phase, limit in limits.items():
            if limit is None:
                continue
            done = [
                w
                for w in children
                if (w.get("status") or {}).get("phase") == phase
                or (phase == "Failed" and (w.get("status") or {}).get("phase") == "Error")
            ]
            done.sort(key=lambda w: (w.get("status") or {}).get("finishedAt", ""))
            for old in done[: max(0, len(done) - int(limit))]:
                with contextlib.suppress(ApiError):
                    await self.store.delete(
                        WORKFLOW, old["metadata"]["namespace"], old["metadata"]["name"]
                    )

    # ------------------------------------------------------------ recurring runs
    async def recurring_tick(self, row: dict[str, Any], now: datetime) -> None:
        body = row["body"]
        trigger = body.get("trigger") or {}
        cron = trigger.get("cron_schedule") or trigger.get("cronSchedule")
        periodic = trigger.get("periodic_schedule") or trigger.get("periodicSchedule")
        window = cron or periodic or {}
        start = _ts(window.get("start_time") or window.get("startTime"))
        end = _ts(window.get("end_time") or window.get("endTime"))
        created = (
            row["created_at"] if row["created_at"].tzinfo else row["created_at"].replace(tzinfo=UTC)
        )
        last = row["last_fire"]
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        base = last or max(created, start or created)
        if cron:
            due = parse_schedule(cron.get("cron") or "", with_seconds=True).next_fire(base)
        else:
            periodic = periodic or {}
            interval = int(periodic.get("interval_second") or periodic.get("intervalSecond") or 0)
            due = base + timedelta(seconds=interval) if last is not None or start is None else base
        if due > now or (end is not None and due > end):
            return
        if body.get("no_catchup") and (now - due).total_seconds() > 1:
            due = now.replace(microsecond=0)  # skip the missed slots: fire once, now
        active = 0
        for run in await self.kfp.rows("kfp_runs", recurring_run_id=row["id"]):
            if run["state"] in FINAL_STATES:
                continue
            if run_state(await self.runs.workflow(run), run["state"]) not in FINAL_STATES:
                active += 1
        if active >= int(body.get("max_concurrency") or 1):
            return  # wait for a slot; the missed slot fires later (unless no_catchup)
        run_body = {k: body[k] for k in RUN_SOURCE_FIELDS if k in body}
        run_body["experiment_id"] = row["experiment_id"]
        run_body["display_name"] = f"{row['display_name']}-{due.strftime('%Y%m%d%H%M%S')}"
        try:
            await self.runs.start(
                row["namespace"],
                run_body,
                recurring_run_id=row["id"],
                workflow_name=f"kfp-{row['id'][:18]}-{int(due.timestamp())}",
                scheduled_at=due,
            )
        except ApiError as exc:
            if exc.reason != "AlreadyExists":
                raise
        await self.kfp.update(
            "kfp_recurring_runs", row["id"], last_fire=due, fires=int(row["fires"] or 0) + 1
        )

    # ----------------------------------------------------------------- retention
    async def apply_retention(self, now: datetime) -> None:
        """Delete finished workflows (and their KFP runs) older than the retention period."""
        cutoff = now - timedelta(seconds=self.retention_seconds)
        for wf in await self.store.list_all(WORKFLOW):
            status = wf.get("status") or {}
            finished = parse_iso(status.get("finishedAt"))
            if status.get("phase") in FINISHED and finished is not None and finished < cutoff:
                await delete_workflow_and_run(self.store, self.kfp, wf)


async def delete_workflow_and_run(store: ResourceStore, kfp: KfpStore, wf: dict[str, Any]) -> None:
    from services.pipeline.events import KFP_RUN_LABEL

    meta = wf["metadata"]
    with contextlib.suppress(ApiError):
        await store.delete(WORKFLOW, meta["namespace"], meta["name"])
    run_id = (meta.get("labels") or {}).get(KFP_RUN_LABEL)
    if run_id:
        await delete_run_artifacts(kfp.db, run_id)
        await kfp.delete("kfp_runs", run_id)


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


__all__ = ["RECURRING_LABEL", "Scheduler", "delete_workflow_and_run"]
