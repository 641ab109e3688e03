"""A trial's run: its workload, the watcher that follows it, metrics collection and early
stopping, and the one transaction that records its end.

Functions of the :class:`~services.automl.controller.AutoMLController` (``ctl``), split out of
it along the seam between experiments and trials; the controller calls them.

- ``reconcile_trial`` creates the trial's workload (idempotent by name) and starts a watcher;
- ``follow_trial`` waits for the workload (``runtime.wait``), watches the metrics meanwhile
  for an early-stopping rule (``early_stopping.py``), collects the final metrics (StdOut
  from the logs, File through ``runtime.read_file``, Push from the database) and writes the
  trial's condition, observation log and completion event in one transaction (``complete``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.automl import (
    collector,
    conditions,
    custom_collector,
    early_stopping,
    events,
    pbt_checkpoints,
)
from services.automl import store as automl_store
from services.automl.models import EXPERIMENT, EXPERIMENT_LABEL, TRIAL
from services.automl.push import trial_token
from services.automl.status import (
    REASONS,
    condition_reason,
    has_condition,
    is_finished,
    now,
    parameter_summary,
    set_condition,
    trial_state,
)
from services.automl.template import (
    TemplateError,
    job_document,
    job_workload,
    workload_name,
)
from services.automl.training import trials as training_trials
from services.common.errors import ApiError
from services.common.runtime import (
    SERVICE_LABEL,
    RuntimeBackendError,
    VolumeNotFound,
)
from services.common.runtime.quota import QuotaRefused

if TYPE_CHECKING:
    from services.automl.controller import AutoMLController

log = logging.getLogger(__name__)

#: How a trial's Created condition begins while its claim or pod waits for quota room.
WAITING_FOR_ROOM = "Trial is created; waiting for room under the namespace's quota: "
EARLY_STOP_POLL = 0.5
LOG_TAIL_IN_MESSAGE = 10
METRICS_FILE_LIMIT = 16 * 1024 * 1024  # a File collector's metrics file (runtime.read_file)


def metrics_claim(trial_name: str) -> str:
    return f"automl-{trial_name}-metrics"[:253]


def collector_kind(spec: dict[str, Any]) -> str:
    return ((spec.get("metricsCollector") or {}).get("collector") or {}).get("kind", "StdOut")


def file_path(spec: dict[str, Any]) -> tuple[str, str]:
    fsp = ((spec.get("metricsCollector") or {}).get("source") or {}).get("fileSystemPath") or {}
    return fsp.get("path") or "/var/log/katib/metrics.log", fsp.get("format") or "TEXT"


def formats(spec: dict[str, Any]) -> list[str] | None:
    source = (spec.get("metricsCollector") or {}).get("source") or {}
    return ((source.get("filter") or {}).get("metricsFormat")) or None


async def reconcile_trial(ctl: AutoMLController, namespace: str, name: str) -> None:
    key = (namespace, name)
    trial = ctl._fresh.pop(key, None) or await ctl.store.find(TRIAL, namespace, name)
    if trial is None:  # deleted (with its experiment): so goes a PyTorchJob it made
        await training_trials.forget(ctl, namespace, name)
        return
    if is_finished(trial):
        if trial_state(trial) in ("Killed", "EarlyStopped"):
            await ctl._stop_workload(namespace, name)
        if training_trials.is_training_run(trial["spec"].get("runSpec")):
            stop = trial_state(trial) in ("Killed", "EarlyStopped")
            await training_trials.finish(ctl, trial, stop=stop)
        return
    running = ctl.watchers.get(key)
    if running is not None and not running.done():
        return
    spec = trial["spec"]
    status = dict(trial.get("status") or {})
    if not has_condition(status, "Created"):
        set_condition(status, "Created", REASONS["Created"], "Trial is created")
    try:
        started = await start_run(ctl, trial)
    except (TemplateError, ValueError) as exc:
        set_condition(status, "Failed", REASONS["Failed"], f"Trial cannot run: {exc}")
        status["completionTime"] = now()
        await complete(ctl, trial, status, None)
        return
    except QuotaRefused as exc:  # a claim or pod over the namespace's quota: nothing made
        if exc.final:
            set_condition(status, "Failed", REASONS["Failed"], f"Trial cannot run: {exc.message}")
            status["completionTime"] = now()
            await complete(ctl, trial, status, None)
            return
        if _created_says(status, f"{WAITING_FOR_ROOM}{exc.message}"):
            await ctl.store.update_status(TRIAL, namespace, name, status)
        raise  # tried again with the controller's back-off
    _created_says(status, "Trial is created")  # no longer waiting, if it was
    if not has_condition(status, "Running"):
        set_condition(status, "Running", REASONS["Running"], "Trial is running")
        status["startTime"] = started.strftime("%Y-%m-%dT%H:%M:%SZ") if started else now()
        status["parameterSummary"] = parameter_summary(spec.get("parameterAssignments", []))
        async with ctl.db.transaction() as s:
            trial = await ctl.store.update_status(TRIAL, namespace, name, status, session=s)
            await events.stage_trial_event(
                s,
                ctl.outbox,
                events.STARTED,
                event(ctl, trial, "Running", REASONS["Running"], "", None),
            )
    ctl.watchers[key] = asyncio.create_task(watch(ctl, trial), name=f"trial-{name}")


def _created_says(status: dict[str, Any], message: str) -> bool:
    """Make ``message`` the message of the trial's Created condition; whether it changed."""
    changed = False
    for condition in status.get("conditions") or []:
        if condition["type"] == "Created" and condition.get("message") != message:
            condition["message"], changed = message, True
    return changed


async def start_run(ctl: AutoMLController, trial: dict[str, Any]) -> datetime | None:
    """Start the trial's run (idempotent): a Job's workload, or a PyTorchJob object
    (services/automl/training/trials.py); the run's start time when known."""
    if training_trials.is_training_run(trial["spec"].get("runSpec")):
        await training_trials.start_job(ctl, trial, *await run_env(ctl, trial))
        return None
    workload = await pbt_checkpoints.with_checkpoints(ctl, trial, await workload_for(ctl, trial))
    return (await ctl.runtime.apply(workload)).start_time


async def workload_for(ctl: AutoMLController, trial: dict[str, Any]) -> dict[str, Any]:
    spec, meta = trial["spec"], trial["metadata"]
    env, extra = await run_env(ctl, trial)
    labels = {EXPERIMENT_LABEL: meta["labels"].get(EXPERIMENT_LABEL, "")}
    return job_workload(
        spec["runSpec"],
        spec.get("primaryContainerName"),
        namespace=meta["namespace"],
        trial_name=meta["name"],
        labels=labels,
        env=env,
        extra_volume=extra,
    )


async def run_env(
    ctl: AutoMLController, trial: dict[str, Any]
) -> tuple[dict[str, str], tuple[str, str, str] | None]:
    """The trial's environment for its run's container, and the collector's metrics volume
    to mount there (volume name, claim, path), made here if the collector needs one."""
    spec, meta = trial["spec"], trial["metadata"]
    if "runSpec" not in spec:
        error = (meta.get("annotations") or {}).get(
            "automl.shipyard.io/template-error", "the trial has no runSpec"
        )
        raise TemplateError(error)
    env = {"KATIB_TRIAL_NAME": meta["name"]}
    kind = collector_kind(spec)
    if kind == "Push":
        # Through the gateway, as the workload's own service account: a sandboxed trial
        # reaches nothing else ($(SHIPYARD_URL) is expanded by the runtime, inside).
        base = (ctl.settings.metrics_push_url or "$(SHIPYARD_URL)").rstrip("/")
        env["SHIPYARD_METRICS_URL"] = (
            f"{base}/apis/kubeflow.org/v1beta1/namespaces/"
            f"{meta['namespace']}/trials/{meta['name']}/metrics"
        )
        env["SHIPYARD_METRICS_TOKEN"] = trial_token(ctl.push_key, meta["namespace"], meta["name"])
    extra = None
    if kind in ("File", "TensorFlowEvent") or custom_collector.shares_volume(spec):
        path, _ = file_path(spec)
        claim = metrics_claim(meta["name"])
        await ctl.runtime.create_volume(meta["namespace"], claim, labels={SERVICE_LABEL: "automl"})
        # The volume is mounted on the metrics file's directory, or on the event directory.
        mount = path if kind != "TensorFlowEvent" else path.rstrip("/") + "/"
        extra = ("katib-metrics", claim, mount)
    return env, extra


def event(
    ctl: AutoMLController,
    trial: dict[str, Any],
    condition: str,
    reason: str,
    message: str,
    value: float | None,
) -> events.TrialEvent:
    meta = trial["metadata"]
    owner: dict[str, Any] = next(iter(meta.get("ownerReferences") or []), {})
    return events.TrialEvent(
        namespace=meta["namespace"],
        experiment=(meta.get("labels") or {}).get(EXPERIMENT_LABEL, ""),
        trial=meta["name"],
        experiment_uid=owner.get("uid", ""),
        condition=condition,
        reason=reason,
        message=message[:2000],
        has_objective=value is not None,
        objective_value=value or 0.0,
    )


async def complete(
    ctl: AutoMLController,
    trial: dict[str, Any],
    status: dict[str, Any],
    logs: list[collector.MetricLog] | None,
) -> bool:
    """Write a final trial status (+ observation log + event) unless one is already there."""
    meta = trial["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    async with ctl.db.transaction() as s:
        try:  # locked: a kill and the watcher may race to finish the same trial
            current = await ctl.store.load(s, TRIAL, namespace, name, lock=True)
        except ApiError:
            return False
        if is_finished(current):
            return False
        if logs is not None:
            await automl_store.replace_observations(s, namespace, name, logs)
        value = collector.objective_value(status.get("observation"), trial["spec"]["objective"])
        if value is not None:
            status["objectiveValue"] = repr(value)
        await ctl.store.write_status(s, TRIAL, current, {"status": status})
        state = trial_state({"status": status})
        reason = condition_reason(status, state) or ""
        await events.stage_trial_event(
            s, ctl.outbox, events.COMPLETED, event(ctl, trial, state, reason, "", value)
        )
    ctl.completed_here[(namespace, name)] = None
    if len(ctl.completed_here) > 10_000:
        ctl.completed_here.popitem(last=False)
    ctl.enqueue(TRIAL, namespace, name)
    experiment = (meta.get("labels") or {}).get(EXPERIMENT_LABEL)
    if experiment:
        ctl.enqueue(EXPERIMENT, namespace, experiment)
    return True


async def watch(ctl: AutoMLController, trial: dict[str, Any]) -> None:
    meta, spec = trial["metadata"], trial["spec"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        await follow_trial(ctl, trial)
    except asyncio.CancelledError:
        raise
    except Exception:
        if await ctl.store.find(TRIAL, namespace, name) is None:
            return  # deleted with its experiment
        log.exception("watching trial %s/%s failed; the next resync retries", namespace, name)
        await asyncio.sleep(1)
        ctl.enqueue(TRIAL, namespace, name)
    finally:
        if ctl.watchers.get((namespace, name)) is asyncio.current_task():
            ctl.watchers.pop((namespace, name), None)
    del spec


async def follow_trial(ctl: AutoMLController, trial: dict[str, Any]) -> None:
    """Wait for the trial's run (watching for early stopping), then record its end."""
    meta, spec = trial["metadata"], trial["spec"]
    namespace, name = meta["namespace"], meta["name"]
    training = training_trials.is_training_run(spec.get("runSpec"))
    # The workload whose output and files count: the Job's, or the primary replica's.
    wname = await training_trials.primary_workload(ctl, trial) if training else workload_name(name)
    objective = spec["objective"]
    kind = collector_kind(spec)
    rule = early_stopping.rule_for(spec)
    watch = None
    if rule is not None:
        watch = early_stopping.EarlyStopWatch(
            ctl.runtime, namespace, name, wname, rule, objective["objectiveMetricName"]
        )
        parser = collector.TextParser(collector.metric_names(objective), formats(spec))

        async def collected() -> list[collector.MetricLog]:
            return await collect(ctl, trial, kind, final=False, wname=wname)

        watch.start(kind, parser, collected)
    timeout = (
        float(
            ((spec.get("runSpec") or {}).get("spec") or {}).get("activeDeadlineSeconds")
            or ctl.settings.max_trial_seconds
        )
        + 60
    )
    try:
        outcome, detail = await wait_run(ctl, trial, wname, timeout)
    finally:
        if watch is not None:
            await watch.finish()
    stopped = watch is not None and watch.stopped.is_set()
    logs = await collect(ctl, trial, kind, final=True, wname=wname)
    # ``trial`` is the Running version this watcher was started with; ``_complete``
    # re-checks in its transaction that no one else finished the trial meanwhile.
    status = copy.deepcopy(trial.get("status") or {})
    obs = collector.observation(logs, objective)
    status["observation"] = obs
    status["completionTime"] = now()
    has_objective = collector.objective_value(obs, objective) is not None
    if stopped:
        set_condition(
            status,
            "EarlyStopped",
            REASONS["EarlyStopped"],
            "Trial is early stopped",
            false_types=("Running",),
        )
    elif outcome == "Succeeded":
        if has_objective or kind == "None":
            set_condition(
                status,
                "Succeeded",
                REASONS["Succeeded"],
                "Trial has succeeded",
                false_types=("Running",),
            )
        else:
            tail = await log_tail(ctl, namespace, wname)
            set_condition(
                status,
                "MetricsUnavailable",
                REASONS["MetricsUnavailable"],
                f"Metrics are not available: the objective metric "
                f"{objective['objectiveMetricName']!r} was not found in the "
                f"{kind} output. Last log lines:\n{tail}",
                false_types=("Running",),
            )
    else:
        tail = await log_tail(ctl, namespace, wname)
        set_condition(
            status,
            "Failed",
            REASONS["Failed"],
            f"Trial has failed: {detail}. Last log lines:\n{tail}",
            false_types=("Running",),
        )
    await complete(ctl, trial, status, None if kind == "Push" else logs)
    if training:
        await training_trials.finish(ctl, trial)


async def wait_run(
    ctl: AutoMLController,
    trial: dict[str, Any],
    wname: str,
    timeout: float,  # noqa: ASYNC109 - the trial's own deadline
) -> tuple[str, str]:
    """("Succeeded" | "Failed", the job's own words) once the trial's run has ended, decided
    as Katib does: the trial's failureCondition, then its successCondition, evaluated on the
    job object (services/automl/conditions.py). A Job's workload is shown as the batch/v1
    Job Kubernetes would report (template.job_document)."""
    if training_trials.is_training_run(trial["spec"].get("runSpec")):
        return await training_trials.wait_outcome(ctl, trial, timeout)
    final = await ctl.runtime.wait(trial["metadata"]["namespace"], wname, timeout=timeout)
    success, failure, _ = training_trials.trial_conditions(trial)
    found = conditions.job_outcome(job_document(final), success, failure)
    if found is None:
        return "Failed", (
            f"the Job ended ({final.phase.value}) but neither its successCondition nor its "
            "failureCondition holds"
        )
    state, condition = found
    return state, str(condition.get("message") or condition.get("reason") or "")


async def log_tail(ctl: AutoMLController, namespace: str, wname: str) -> str:
    lines: list[str] = []
    with contextlib.suppress(Exception):
        async for line in ctl.runtime.logs(namespace, wname, tail=LOG_TAIL_IN_MESSAGE):
            lines.append(line)
    return "\n".join(lines) or "(no output)"


async def collect(
    ctl: AutoMLController,
    trial: dict[str, Any],
    kind: str,
    final: bool,
    wname: str | None = None,
) -> list[collector.MetricLog]:
    """The trial's metrics so far (``final``: all of them); StdOut reads ``wname``'s output
    (the primary replica of a PyTorchJob; the Job's workload by default)."""
    meta, spec = trial["metadata"], trial["spec"]
    namespace, name = meta["namespace"], meta["name"]
    names = collector.metric_names(spec["objective"])
    if kind == "StdOut":
        parser = collector.TextParser(names, formats(spec))
        logs = ctl.runtime.logs(namespace, wname or workload_name(name))
        return await collector.feed_all(parser, logs)
    if kind == "File":
        path, fmt = file_path(spec)
        try:
            data = await ctl.runtime.read_file(
                namespace, metrics_claim(name), path.rsplit("/", 1)[-1], METRICS_FILE_LIMIT
            )
        except (VolumeNotFound, RuntimeBackendError, OSError, ValueError) as exc:
            log.info("trial %s/%s: no metrics file to read: %s", namespace, name, exc)
            return []
        text = data.decode(errors="replace")
        if fmt == "JSON":
            return collector.parse_json_lines(text.splitlines(), names)
        parser = collector.TextParser(names, formats(spec))
        return await collector.feed_all(parser, text.splitlines())
    if kind == "TensorFlowEvent" and final:
        return await collect_tfevents(ctl, trial)
    if kind == custom_collector.KIND and final:  # the user's collector container
        claim = metrics_claim(name) if custom_collector.shares_volume(spec) else None
        return await custom_collector.collect(ctl, trial, claim)
    if kind == "Push":
        async with ctl.db.sessions() as s:
            return await automl_store.read_observations(s, namespace, name)
    return []


TFEVENT_MOUNT = "/var/log/katib/tfevent"
TFEVENT_READ_SECONDS = 120.0


async def collect_tfevents(
    ctl: AutoMLController, trial: dict[str, Any]
) -> list[collector.MetricLog]:
    """The TensorFlowEvent collector (services/automl/tfevent.py): once the trial is done, a
    short job mounts its metrics volume read-only and prints the scalars it finds."""
    meta, spec = trial["metadata"], trial["spec"]
    namespace, name = meta["namespace"], meta["name"]
    names = collector.metric_names(spec["objective"])
    reader = f"{workload_name(name)}-tfevent"[:253]
    workload = {
        "kind": "job",
        "namespace": namespace,
        "name": reader,
        "command": ["python3", "-m", "services.automl.tfevent", TFEVENT_MOUNT, *names],
        "volumeMounts": [{"name": "tfevent", "mountPath": TFEVENT_MOUNT, "readOnly": True}],
        "volumes": [
            {"name": "tfevent", "persistentVolumeClaim": {"claimName": metrics_claim(name)}}
        ],
        "labels": {EXPERIMENT_LABEL: meta["labels"].get(EXPERIMENT_LABEL, "")},
        "restartPolicy": "Never",
    }
    lines: list[str] = []
    try:
        await ctl.runtime.apply(workload)
        final = await ctl.runtime.wait(namespace, reader, timeout=TFEVENT_READ_SECONDS)
        async for line in ctl.runtime.logs(namespace, reader):
            lines.append(line)
        if final.phase.value != "Succeeded":
            log.warning("trial %s/%s: tfevent reader %s", namespace, name, final.phase.value)
    except (VolumeNotFound, RuntimeBackendError, OSError, ValueError) as exc:
        log.info("trial %s/%s: no event files read: %s", namespace, name, exc)
    finally:
        with contextlib.suppress(Exception):
            await ctl.runtime.delete(namespace, reader)
    return collector.parse_json_lines(lines, names)
