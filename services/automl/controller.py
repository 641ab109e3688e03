"""The AutoML controller: experiments ask for trials, trials run as runtime jobs.

``reconcile`` handles both kinds (one work queue, so a trial's completion and its
experiment's next suggestion are never far apart):

- **Experiment**: recompute the status from its trials (Katib's rules, see ``status.py``);
  if it is not finished, ask the suggestion engine for ``parallelTrialCount - active``
  trials (never past ``maxTrialCount``) and create them. The Trial objects and the study rows
  commit in one transaction *before* any workload exists, so a crash (SIGKILL) at any point
  can neither lose a trial nor make one too many: the next reconcile counts what the
  database holds.
- **Trial**: create its workload (idempotent by name), then a watcher task follows it:
  it parses metrics as they appear (for early stopping), waits for the exit through
  ``runtime.wait`` (a pidfd locally, no polling), collects the final metrics and writes the
  trial's condition, its observation log and a ``shipyard.automl.trial.completed`` event in
  one transaction.

Deleting an experiment marks it (finalizer); the reconcile then deletes every trial
workload, metrics volume, Trial object and study row before letting the object go.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import secrets
import statistics
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from services.automl import collector, events
from services.automl import store as automl_store
from services.automl.algorithms import SuggestionEngine
from services.automl.configmaps import trial_template
from services.automl.models import EXPERIMENT, EXPERIMENT_LABEL, FINALIZER, SUGGESTION, TRIAL
from services.automl.push import trial_token
from services.automl.settings import Settings
from services.automl.status import (
    REASONS,
    TERMINAL,
    completion,
    condition_reason,
    has_condition,
    is_finished,
    mark_created,
    now,
    parameter_summary,
    set_condition,
    summarize,
    trial_state,
)
from services.automl.tables import observation_logs
from services.automl.template import (
    TRIAL_LABEL,
    TemplateError,
    job_workload,
    render_trial_spec,
    workload_name,
)
from services.common.controller import Controller, Key
from services.common.db import Database
from services.common.errors import ApiError
from services.common.resources import ResourceKind, ResourceStore, WatchEvent
from services.common.resources.store import owned_by, owner_reference, sort_by_creation
from services.common.runtime import (
    SERVICE_LABEL,
    Runtime,
    RuntimeBackendError,
    VolumeNotFound,
    WorkloadNotFound,
)

log = logging.getLogger(__name__)

EXPERIMENT_SHORT_LABEL = "experiment"  # `shipyard get trials -l experiment=NAME`
STATE_TO_STUDY = {
    "Succeeded": "COMPLETE",
    "EarlyStopped": "PRUNED",
    "Failed": "FAIL",
    "Killed": "FAIL",
    "MetricsUnavailable": "FAIL",
}
EARLY_STOP_POLL = 0.5
FOLLOW_UP_SECONDS = 0.25
LOG_TAIL_IN_MESSAGE = 10
METRICS_FILE_LIMIT = 16 * 1024 * 1024  # a File collector's metrics file (runtime.read_file)


def metrics_claim(trial_name: str) -> str:
    return f"automl-{trial_name}-metrics"[:253]


def _collector_kind(spec: dict[str, Any]) -> str:
    return ((spec.get("metricsCollector") or {}).get("collector") or {}).get("kind", "StdOut")


def _file_path(spec: dict[str, Any]) -> tuple[str, str]:
    fsp = ((spec.get("metricsCollector") or {}).get("source") or {}).get("fileSystemPath") or {}
    return fsp.get("path") or "/var/log/katib/metrics.log", fsp.get("format") or "TEXT"


def _formats(spec: dict[str, Any]) -> list[str] | None:
    source = (spec.get("metricsCollector") or {}).get("source") or {}
    return ((source.get("filter") or {}).get("metricsFormat")) or None


@dataclass
class ExperimentState:
    """What one experiment reconcile reads: the object, its trials, its study, its Suggestion,
    and its trial template with the Job inline (``error`` set when it cannot be read)."""

    experiment: dict[str, Any] | None
    trials: list[dict[str, Any]] = field(default_factory=list)
    study: Any = None
    suggestion: dict[str, Any] | None = None
    template: dict[str, Any] | None = None


class AutoMLController(Controller):
    kinds = (EXPERIMENT, TRIAL)

    def __init__(
        self,
        store: ResourceStore,
        db: Database,
        outbox: Any,
        runtime: Runtime,
        settings: Settings,
        push_key: bytes,
    ) -> None:
        self.resync_seconds = settings.resync_seconds
        super().__init__(store)
        self.db, self.outbox, self.runtime, self.settings = db, outbox, runtime, settings
        self.push_key = push_key
        self.engine = SuggestionEngine()
        self.watchers: dict[tuple[str, str], asyncio.Task[None]] = {}
        # The state (generation, deletion mark, status) of each object as this controller
        # last wrote it: a change event carrying exactly that state is the controller's own
        # status write and needs no reconcile of the same object (it acted on that state;
        # trial changes still wake their experiment through their own events).
        self._own_writes: dict[tuple[str, str, str], tuple[Any, Any, dict[str, Any]]] = {}
        # Trials whose completion this replica wrote: their completion event (consumed for
        # other replicas' sake) needs no second experiment reconcile here.
        self.completed_here: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._fresh: dict[tuple[str, str], dict[str, Any]] = {}  # just-created trials
        self._soon: set[Key] = set()  # keys with a pending _enqueue_soon
        # Run inside each trial-creating transaction; raises unless this replica still leads.
        self.fence: Callable[[Any], Awaitable[None]] | None = None

    # ------------------------------------------------------------------ plumbing
    def keys_for(self, kind: ResourceKind, event: WatchEvent) -> list[Key]:
        meta = event.object.get("metadata", {})
        written = self._own_writes.get((kind.kind, meta.get("namespace", ""), meta.get("name", "")))
        own = event.type == "MODIFIED" and written == (
            meta.get("generation"),
            meta.get("deletionTimestamp"),
            event.object.get("status"),
        )
        keys = [] if own else list(super().keys_for(kind, event))
        if kind.kind == TRIAL.kind:
            experiment = (meta.get("labels") or {}).get(EXPERIMENT_LABEL)
            if experiment:
                key = Key(EXPERIMENT.kind, meta.get("namespace", ""), experiment)
                if event.type == "DELETED" or is_finished(event.object):
                    keys.append(key)  # a finished trial frees a slot: the critical path
                else:
                    self._enqueue_soon(key)  # created, running: counters only
        return keys

    def _enqueue_soon(self, key: Key) -> None:
        """Reconcile ``key`` in FOLLOW_UP_SECONDS: bookkeeping that need not compete with
        trial starts and short trials' completions for the event loop (several requests
        within that time make one reconcile)."""
        if key in self._soon:
            return
        self._soon.add(key)

        def fire() -> None:
            self._soon.discard(key)
            self.enqueue(key.kind, key.namespace, key.name)

        asyncio.get_running_loop().call_later(FOLLOW_UP_SECONDS, fire)

    async def stop(self) -> None:
        await super().stop()
        for task in list(self.watchers.values()):
            task.cancel()
        for task in list(self.watchers.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.watchers.clear()

    async def reconcile(self, kind: ResourceKind, namespace: str, name: str) -> None:
        if kind.kind == EXPERIMENT.kind:
            await self.reconcile_experiment(namespace, name)
        elif kind.kind == TRIAL.kind:
            await self.reconcile_trial(namespace, name)

    async def _trials_of(
        self, experiment: dict[str, Any], session: Any = None
    ) -> list[dict[str, Any]]:
        meta = experiment["metadata"]
        if session is None:
            async with self.db.sessions() as s:
                return await self._trials_of(experiment, s)
        trials = await automl_store.experiment_trials(
            session, self.store.objects, meta["namespace"], meta["name"], EXPERIMENT_LABEL
        )
        return sort_by_creation([t for t in trials if owned_by(t, meta["uid"])])

    async def _experiment_state(self, namespace: str, name: str) -> ExperimentState:
        """The experiment, its trials and its study, read in one session (one connection)."""
        async with self.db.sessions() as s:
            experiment = await self.store.find(EXPERIMENT, namespace, name, session=s)
            if experiment is None or experiment["metadata"].get("deletionTimestamp"):
                return ExperimentState(experiment)
            trials = await self._trials_of(experiment, s)
            study = await automl_store.load_study(s, experiment["metadata"]["uid"])
            suggestion = await self.store.find(SUGGESTION, namespace, name, session=s)
            try:
                template = await trial_template(self.store, s, experiment)
            except TemplateError as exc:  # each new trial fails, saying why
                template = dict(experiment["spec"]["trialTemplate"], error=str(exc))
            return ExperimentState(experiment, trials, study, suggestion, template)

    # ---------------------------------------------------------------- experiment
    async def reconcile_experiment(self, namespace: str, name: str) -> None:
        state = await self._experiment_state(namespace, name)
        experiment, trials, study, suggestion = (
            state.experiment,
            state.trials,
            state.study,
            state.suggestion,
        )
        if experiment is None:
            return
        if experiment["metadata"].get("deletionTimestamp"):
            await self._finalize_experiment(experiment)
            return
        spec = experiment["spec"]
        # Before summarize: its status copy is shallow, set_condition edits the list in place.
        conditions_before = _condition_states(experiment.get("status") or {})
        summary = summarize(experiment, trials)
        status = summary.status
        mark_created(status)  # set on create already; kept for objects from before that
        rows, attrs, study_state = study
        exhausted = bool(study_state.get("exhausted"))
        finished = has_condition(status, "Succeeded") or has_condition(status, "Failed")
        if finished and self._restartable(experiment, summary.completed):
            set_condition(
                status,
                "Restarting",
                "ExperimentRestarting",
                "Experiment is restarting",
                false_types=("Succeeded",),
            )
            status.pop("completionTime", None)
            finished = False
        if finished:
            await self._kill_active(trials)
            await self._write_status(EXPERIMENT, experiment, status)
            await self._sync_suggestion(experiment, rows, exhausted, trials, suggestion)
            return
        done = completion(spec, summary, exhausted)
        if done is not None:
            ctype, reason, message = done
            set_condition(status, ctype, reason, message, false_types=("Running", "Restarting"))
            status["completionTime"] = now()
            await self._write_status(EXPERIMENT, experiment, status)
            log.info("experiment %s/%s %s: %s", namespace, name, ctype, reason)
            await self._kill_active(trials)
            await self._sync_suggestion(experiment, rows, exhausted, trials, suggestion)
            return
        set_condition(
            status,
            "Running",
            "ExperimentRunning",
            "Experiment is running",
            false_types=("Restarting",),
        )
        need = spec.get("parallelTrialCount", 3) - summary.active
        if spec.get("maxTrialCount") is not None:
            need = min(need, spec["maxTrialCount"] - len(trials))
        if need > 0 and not exhausted:
            # Trial start is the critical path: create first; the status (whose counters
            # the new trials change anyway) is written by the reconcile this one enqueues.
            # A condition change (Created, Running, Restarting) is written first: clients
            # (the Katib SDK reads conditions[-1]) must see it at once.
            if _condition_states(status) != conditions_before:
                await self._write_status(EXPERIMENT, experiment, status)
            await self._create_trials(state, rows, attrs, study_state, need)
            return
        await self._write_status(EXPERIMENT, experiment, status)
        await self._sync_suggestion(experiment, rows, exhausted, trials, suggestion)

    def _restartable(self, experiment: dict[str, Any], completed: int) -> bool:
        spec, status = experiment["spec"], experiment.get("status") or {}
        return (
            spec.get("resumePolicy") in ("LongRunning", "FromVolume")
            and condition_reason(status, "Succeeded") == "ExperimentMaxTrialsReached"
            and spec.get("maxTrialCount") is not None
            and completed < spec["maxTrialCount"]
        )

    async def _write_status(
        self, kind: ResourceKind, obj: dict[str, Any], status: dict[str, Any]
    ) -> None:
        if status != (obj.get("status") or {}):
            meta = obj["metadata"]
            key = (kind.kind, meta["namespace"], meta["name"])
            self._own_writes.pop(key, None)
            if len(self._own_writes) > 10_000:
                self._own_writes.pop(next(iter(self._own_writes)))
            # Set before the write: the store calls its listeners before returning.
            self._own_writes[key] = (meta.get("generation"), meta.get("deletionTimestamp"), status)
            await self.store.update_status(kind, meta["namespace"], meta["name"], status)

    async def _create_trials(
        self,
        state: ExperimentState,
        rows: list[Any],
        attrs: dict[str, Any],
        study_state: dict[str, Any],
        need: int,
    ) -> None:
        experiment, trials = state.experiment, state.trials
        assert experiment is not None and state.template is not None
        spec, meta = experiment["spec"], experiment["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        by_name = {t["metadata"]["name"]: t for t in trials}
        outcomes: dict[str, tuple[str, float | None]] = {}
        for row in rows:
            trial = by_name.get(row.trial_name)
            if row.state == "RUNNING" and trial is not None and is_finished(trial):
                trial_outcome = trial_state(trial)
                value = collector.objective_value(
                    (trial.get("status") or {}).get("observation"), spec["objective"]
                )
                outcomes[row.trial_name] = (STATE_TO_STUDY[trial_outcome], value)
        result = await asyncio.to_thread(
            self.engine.suggest, spec, uid, rows, outcomes, attrs, study_state, need
        )
        rules = await self._early_stopping_rules(experiment, trials)
        created: list[str] = []
        fresh: dict[str, dict[str, Any]] = {}
        new_state = dict(result.state, exhausted=result.exhausted)
        try:
            async with self.db.transaction() as s:
                if self.fence is not None:
                    await self.fence(s)
                for suggestion in result.new:
                    trial_name = f"{meta['name']}-{_suffix()}"
                    suggestion.row.trial_name = trial_name
                    trial = self._new_trial(
                        experiment, state.template, trial_name, suggestion.assignments, rules
                    )
                    fresh[trial_name] = await self.store.create(TRIAL, namespace, trial, session=s)
                    created.append(trial_name)
                await automl_store.save_study(
                    s,
                    uid,
                    [x.row for x in result.new],
                    result.updated,
                    result.study_attrs,
                    new_state,
                    exists=bool(attrs) or bool(study_state) or bool(rows),
                )
        except Exception:
            self.engine.forget(uid)
            raise
        self._wake_relay()
        # The trial reconcile starts from the committed bodies instead of reading them back
        # (trial start is the critical path).
        for trial_name in created:
            self._fresh[(namespace, trial_name)] = fresh[trial_name]
            self.enqueue(TRIAL, namespace, trial_name)
        # The status and Suggestion bookkeeping this reconcile skipped follows a moment later;
        # a trial finishing before then runs it sooner.
        self._enqueue_soon(Key(EXPERIMENT.kind, namespace, meta["name"]))
        if created:
            log.info(
                "experiment %s/%s: created trials %s", namespace, meta["name"], ", ".join(created)
            )

    def _new_trial(
        self,
        experiment: dict[str, Any],
        template: dict[str, Any],
        trial_name: str,
        assignments: list[dict[str, str]],
        rules: list[dict[str, Any]],
    ) -> dict[str, Any]:
        spec, meta = experiment["spec"], experiment["metadata"]
        trial_meta = {"name": trial_name, "namespace": meta["namespace"]}
        annotations = {}
        try:
            if "error" in template:
                raise TemplateError(template["error"])
            run_spec: dict[str, Any] | None = render_trial_spec(template, trial_meta, assignments)
        except TemplateError as exc:
            run_spec, annotations = None, {"automl.shipyard.io/template-error": str(exc)}
        labels = {EXPERIMENT_LABEL: meta["name"], EXPERIMENT_SHORT_LABEL: meta["name"]}
        trial_spec: dict[str, Any] = {
            "objective": spec["objective"],
            "parameterAssignments": assignments,
            "metricsCollector": spec.get("metricsCollectorSpec") or {},
            "primaryContainerName": template.get("primaryContainerName"),
            "successCondition": template.get("successCondition"),
            "failureCondition": template.get("failureCondition"),
            "retainRun": template.get("retain"),
            "labels": template.get("primaryPodLabels"),
        }
        if run_spec is not None:
            trial_spec["runSpec"] = run_spec
        if rules:
            trial_spec["earlyStoppingRules"] = rules
        return {
            "apiVersion": TRIAL.api_version,
            "kind": TRIAL.kind,
            "metadata": {
                "name": trial_name,
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [owner_reference(experiment)],
            },
            "spec": {k: v for k, v in trial_spec.items() if v is not None},
        }

    async def _sync_suggestion(
        self,
        experiment: dict[str, Any],
        rows: list[Any],
        exhausted: bool,
        trial_list: list[dict[str, Any]],
        current: dict[str, Any] | None,
    ) -> None:
        """Keep the Suggestion object (Katib's record of requests and assignments) in step.

        It is derived from the study rows, which commit with the trials, so it can be
        brought up to date at any later reconcile (it is off the trial-start path).
        """
        spec, meta = experiment["spec"], experiment["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        status = (current or {}).get("status") or {}
        if (
            current is not None
            and status.get("suggestionCount") == len(rows)
            and exhausted == has_condition(status, "Succeeded")
            and has_condition(status, "Created")
        ):
            return  # already in step: the common case, kept cheap
        trials = {t["metadata"]["name"]: t for t in trial_list}
        status = dict(status)
        status.update(
            suggestionCount=len(rows),
            suggestions=[
                {
                    "name": r.trial_name,
                    "parameterAssignments": (trials.get(r.trial_name) or {})
                    .get("spec", {})
                    .get("parameterAssignments", []),
                }
                for r in rows
            ],
        )
        if not has_condition(status, "Created"):
            set_condition(status, "Created", "SuggestionCreated", "Suggestion is created")
            status["startTime"] = now()
        if exhausted:
            set_condition(
                status,
                "Succeeded",
                "SuggestionExhausted",
                "The search space is exhausted",
                false_types=("Running",),
            )
        else:
            set_condition(status, "Running", "SuggestionRunning", "Suggestion is running")
        async with self.db.transaction() as s:  # one transaction: create, requests, status
            if current is None:
                current = await self.store.create(
                    SUGGESTION,
                    namespace,
                    {
                        "metadata": {
                            "name": name,
                            "namespace": namespace,
                            "labels": {EXPERIMENT_LABEL: name},
                            "ownerReferences": [owner_reference(experiment)],
                        },
                        "spec": {
                            "algorithm": spec["algorithm"],
                            "requests": 0,
                            "earlyStopping": spec.get("earlyStopping"),
                            "resumePolicy": spec.get("resumePolicy", "Never"),
                        },
                    },
                    session=s,
                )
            if int(current["spec"].get("requests", 0)) != len(rows):
                await self.store.patch(
                    SUGGESTION, namespace, name, {"spec": {"requests": len(rows)}}, session=s
                )
            await self.store.update_status(SUGGESTION, namespace, name, status, session=s)
        self._wake_relay()

    async def _early_stopping_rules(
        self, experiment: dict[str, Any], trials: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Katib's medianstop: the mean of each succeeded trial's first start_step values.

        Katib's service calls it the median but averages the per-trial averages; a rule
        exists once ``min_trials_required`` trials succeeded.
        """
        es = experiment["spec"].get("earlyStopping")
        if not es:
            return []
        settings = {s["name"]: s.get("value") for s in es.get("algorithmSettings") or []}
        min_trials = int(settings.get("min_trials_required") or 3)
        start_step = int(settings.get("start_step") or 4)
        objective = experiment["spec"]["objective"]
        metric = objective["objectiveMetricName"]
        succeeded = [t["metadata"]["name"] for t in trials if trial_state(t) == "Succeeded"]
        if len(succeeded) < min_trials:
            return []
        averages = []
        async with self.db.sessions() as s:
            for name in succeeded:
                rows = (
                    (
                        await s.execute(
                            select(observation_logs.c.value)
                            .where(
                                observation_logs.c.namespace == experiment["metadata"]["namespace"],
                                observation_logs.c.trial_name == name,
                                observation_logs.c.metric_name == metric,
                            )
                            .order_by(observation_logs.c.id)
                            .limit(start_step)
                        )
                    )
                    .scalars()
                    .all()
                )
                if rows:
                    averages.append(statistics.fmean(float(v) for v in rows))
        if len(averages) < min_trials:
            return []
        comparison = "LESS" if objective["type"] == "maximize" else "GREATER"
        return [
            {
                "name": metric,
                "value": repr(statistics.fmean(averages)),
                "comparison": comparison,
                "startStep": start_step,
            }
        ]

    async def _kill_active(self, trials: list[dict[str, Any]]) -> None:
        for trial in trials:
            if is_finished(trial):
                continue
            meta = trial["metadata"]
            status = dict(trial.get("status") or {})
            set_condition(
                status,
                "Killed",
                REASONS["Killed"],
                "Trial is killed: the experiment finished",
                false_types=("Running",),
            )
            status["completionTime"] = now()
            await self._complete(trial, status, None)
            await self._stop_workload(meta["namespace"], meta["name"])

    async def _stop_workload(self, namespace: str, trial_name: str) -> None:
        wname = workload_name(trial_name)
        with contextlib.suppress(WorkloadNotFound):
            current = await self.runtime.status(namespace, wname)
            if not current.finished:
                await self.runtime.stop_all({SERVICE_LABEL: "automl", TRIAL_LABEL: trial_name})

    async def _finalize_experiment(self, experiment: dict[str, Any]) -> None:
        meta = experiment["metadata"]
        namespace = meta["namespace"]
        trials = await self._trials_of(experiment)
        for trial in trials:
            # Watchers are not cancelled (a cancel inside a transaction can poison a pooled
            # connection): the workload's deletion ends their wait and they find no trial.
            name = trial["metadata"]["name"]
            await self.runtime.delete(namespace, workload_name(name))
            if _collector_kind(trial["spec"]) == "File":
                await self.runtime.delete_volume(namespace, metrics_claim(name))
        async with self.db.transaction() as s:
            for trial in trials:
                with contextlib.suppress(ApiError):
                    await self.store.delete(TRIAL, namespace, trial["metadata"]["name"], session=s)
            if await self.store.find(SUGGESTION, namespace, meta["name"], session=s) is not None:
                await self.store.delete(SUGGESTION, namespace, meta["name"], session=s)
            await automl_store.delete_trial_data(
                s, namespace, [t["metadata"]["name"] for t in trials], meta["uid"]
            )
        self.engine.forget(meta["uid"])
        await self.store.remove_finalizer(EXPERIMENT, namespace, meta["name"], FINALIZER)
        log.info("experiment %s/%s deleted with %d trials", namespace, meta["name"], len(trials))

    # --------------------------------------------------------------------- trial
    async def reconcile_trial(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        trial = self._fresh.pop(key, None) or await self.store.find(TRIAL, namespace, name)
        if trial is None:
            return
        if is_finished(trial):
            if trial_state(trial) in ("Killed", "EarlyStopped"):
                await self._stop_workload(namespace, name)
            return
        running = self.watchers.get(key)
        if running is not None and not running.done():
            return
        spec = trial["spec"]
        status = dict(trial.get("status") or {})
        if not has_condition(status, "Created"):
            set_condition(status, "Created", REASONS["Created"], "Trial is created")
        try:
            workload = await self._workload_for(trial)
            wstatus = await self.runtime.apply(workload)
        except (TemplateError, ValueError) as exc:
            set_condition(status, "Failed", REASONS["Failed"], f"Trial cannot run: {exc}")
            status["completionTime"] = now()
            await self._complete(trial, status, None)
            return
        if not has_condition(status, "Running"):
            set_condition(status, "Running", REASONS["Running"], "Trial is running")
            status["startTime"] = (
                wstatus.start_time.strftime("%Y-%m-%dT%H:%M:%SZ") if wstatus.start_time else now()
            )
            status["parameterSummary"] = parameter_summary(spec.get("parameterAssignments", []))
            async with self.db.transaction() as s:
                trial = await self.store.update_status(TRIAL, namespace, name, status, session=s)
                await events.stage_trial_event(
                    s,
                    self.outbox,
                    events.STARTED,
                    self._event(trial, "Running", REASONS["Running"], "", None),
                )
            self._wake_relay()
        self.watchers[key] = asyncio.create_task(self._watch(trial), name=f"trial-{name}")

    def _wake_relay(self) -> None:
        """Publish what a controller-owned transaction staged now, not at the relay's poll."""
        wake = getattr(self.store, "_after_commit", None)
        if wake is not None:
            wake()

    async def _workload_for(self, trial: dict[str, Any]) -> dict[str, Any]:
        spec, meta = trial["spec"], trial["metadata"]
        if "runSpec" not in spec:
            error = (meta.get("annotations") or {}).get(
                "automl.shipyard.io/template-error", "the trial has no runSpec"
            )
            raise TemplateError(error)
        env = {"KATIB_TRIAL_NAME": meta["name"]}
        kind = _collector_kind(spec)
        if kind == "Push":
            # Through the gateway, as the workload's own service account: a sandboxed trial
            # reaches nothing else ($(SHIPYARD_URL) is expanded by the runtime, inside).
            base = (self.settings.metrics_push_url or "$(SHIPYARD_URL)").rstrip("/")
            env["SHIPYARD_METRICS_URL"] = (
                f"{base}/apis/kubeflow.org/v1beta1/namespaces/"
                f"{meta['namespace']}/trials/{meta['name']}/metrics"
            )
            env["SHIPYARD_METRICS_TOKEN"] = trial_token(
                self.push_key, meta["namespace"], meta["name"]
            )
        extra = None
        if kind == "File":
            path, _ = _file_path(spec)
            claim = metrics_claim(meta["name"])
            await self.runtime.create_volume(
                meta["namespace"], claim, labels={SERVICE_LABEL: "automl"}
            )
            extra = ("katib-metrics", claim, path)
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

    def _event(
        self, trial: dict[str, Any], condition: str, reason: str, message: str, value: float | None
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

    async def _complete(
        self, trial: dict[str, Any], status: dict[str, Any], logs: list[collector.MetricLog] | None
    ) -> bool:
        """Write a final trial status (+ observation log + event) unless one is already there."""
        meta = trial["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        async with self.db.transaction() as s:
            try:  # locked: a kill and the watcher may race to finish the same trial
                current = await self.store.load(s, TRIAL, namespace, name, lock=True)
            except ApiError:
                return False
            if is_finished(current):
                return False
            if logs is not None:
                await automl_store.replace_observations(s, namespace, name, logs)
            value = collector.objective_value(status.get("observation"), trial["spec"]["objective"])
            if value is not None:
                status["objectiveValue"] = repr(value)
            await self.store.write_status(s, TRIAL, current, {"status": status})
            state = trial_state({"status": status})
            reason = condition_reason(status, state) or ""
            await events.stage_trial_event(
                s, self.outbox, events.COMPLETED, self._event(trial, state, reason, "", value)
            )
        self._wake_relay()
        self.completed_here[(namespace, name)] = None
        if len(self.completed_here) > 10_000:
            self.completed_here.popitem(last=False)
        self.enqueue(TRIAL, namespace, name)
        experiment = (meta.get("labels") or {}).get(EXPERIMENT_LABEL)
        if experiment:
            self.enqueue(EXPERIMENT, namespace, experiment)
        return True

    async def _watch(self, trial: dict[str, Any]) -> None:
        meta, spec = trial["metadata"], trial["spec"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            await self._follow_trial(trial)
        except asyncio.CancelledError:
            raise
        except Exception:
            if await self.store.find(TRIAL, namespace, name) is None:
                return  # deleted with its experiment
            log.exception("watching trial %s/%s failed; the next resync retries", namespace, name)
            await asyncio.sleep(1)
            self.enqueue(TRIAL, namespace, name)
        finally:
            if self.watchers.get((namespace, name)) is asyncio.current_task():
                self.watchers.pop((namespace, name), None)
        del spec

    async def _follow_trial(self, trial: dict[str, Any]) -> None:
        meta, spec = trial["metadata"], trial["spec"]
        namespace, name = meta["namespace"], meta["name"]
        wname = workload_name(name)
        objective = spec["objective"]
        names = collector.metric_names(objective)
        kind = _collector_kind(spec)
        rule = next(
            (
                r
                for r in spec.get("earlyStoppingRules") or []
                if r.get("name") == objective["objectiveMetricName"]
            ),
            None,
        )
        stopped = asyncio.Event()

        def breaks_rule(values: list[float]) -> bool:
            if rule is None or len(values) < int(rule.get("startStep", 1)):
                return False
            limit, value = float(rule["value"]), values[-1]
            comparison = rule.get("comparison")
            return (
                value < limit
                if comparison == "LESS"
                else value > limit
                if comparison == "GREATER"
                else value == limit
            )

        async def early_stop() -> None:
            stopped.set()
            log.info("trial %s/%s: early stopped by %s", namespace, name, rule)
            await self.runtime.stop_all({SERVICE_LABEL: "automl", TRIAL_LABEL: name})

        async def follow_stdout() -> None:
            parser = collector.TextParser(names, _formats(spec))
            seen: list[float] = []
            turns = collector.LoopTurns()
            async for line in self.runtime.logs(namespace, wname, follow=True):
                await turns.tick()
                for entry in parser.feed(line):
                    if entry.name == objective["objectiveMetricName"]:
                        seen.append(float(entry.value))
                        if breaks_rule(seen):
                            await early_stop()
                            return

        async def poll_collected() -> None:
            while True:
                await asyncio.sleep(EARLY_STOP_POLL)
                logs = await self._collect(trial, kind, final=False)
                values = [
                    float(m.value) for m in logs if m.name == objective["objectiveMetricName"]
                ]
                if breaks_rule(values):
                    await early_stop()
                    return

        helper: asyncio.Task[None] | None = None
        if kind == "StdOut" and rule is not None:
            helper = asyncio.create_task(follow_stdout())
        elif kind in ("File", "Push") and rule is not None:
            helper = asyncio.create_task(poll_collected())
        timeout = (
            float(
                ((spec.get("runSpec") or {}).get("spec") or {}).get("activeDeadlineSeconds")
                or self.settings.max_trial_seconds
            )
            + 60
        )
        try:
            final = await self.runtime.wait(namespace, wname, timeout=timeout)
        finally:
            if helper is not None:
                if stopped.is_set():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(helper, 5)
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await helper
        logs = await self._collect(trial, kind, final=True)
        # ``trial`` is the Running version this watcher was started with; ``_complete``
        # re-checks in its transaction that no one else finished the trial meanwhile.
        status = copy.deepcopy(trial.get("status") or {})
        obs = collector.observation(logs, objective)
        status["observation"] = obs
        status["completionTime"] = now()
        has_objective = collector.objective_value(obs, objective) is not None
        if stopped.is_set():
            set_condition(
                status,
                "EarlyStopped",
                REASONS["EarlyStopped"],
                "Trial is early stopped",
                false_types=("Running",),
            )
        elif final.phase.value == "Succeeded":
            if has_objective or kind == "None":
                set_condition(
                    status,
                    "Succeeded",
                    REASONS["Succeeded"],
                    "Trial has succeeded",
                    false_types=("Running",),
                )
            else:
                tail = await self._log_tail(namespace, wname)
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
            tail = await self._log_tail(namespace, wname)
            detail = final.message or final.reason or f"exit code {final.exit_code}"
            set_condition(
                status,
                "Failed",
                REASONS["Failed"],
                f"Trial has failed: {detail}. Last log lines:\n{tail}",
                false_types=("Running",),
            )
        await self._complete(trial, status, None if kind == "Push" else logs)

    async def _log_tail(self, namespace: str, wname: str) -> str:
        lines: list[str] = []
        with contextlib.suppress(Exception):
            async for line in self.runtime.logs(namespace, wname, tail=LOG_TAIL_IN_MESSAGE):
                lines.append(line)
        return "\n".join(lines) or "(no output)"

    async def _collect(
        self, trial: dict[str, Any], kind: str, final: bool
    ) -> list[collector.MetricLog]:
        meta, spec = trial["metadata"], trial["spec"]
        namespace, name = meta["namespace"], meta["name"]
        names = collector.metric_names(spec["objective"])
        if kind == "StdOut":
            parser = collector.TextParser(names, _formats(spec))
            return await collector.feed_all(
                parser, self.runtime.logs(namespace, workload_name(name))
            )
        if kind == "File":
            path, fmt = _file_path(spec)
            try:
                data = await self.runtime.read_file(
                    namespace, metrics_claim(name), path.rsplit("/", 1)[-1], METRICS_FILE_LIMIT
                )
            except (VolumeNotFound, RuntimeBackendError, OSError, ValueError) as exc:
                log.info("trial %s/%s: no metrics file to read: %s", namespace, name, exc)
                return []
            text = data.decode(errors="replace")
            if fmt == "JSON":
                return collector.parse_json_lines(text.splitlines(), names)
            parser = collector.TextParser(names, _formats(spec))
            return await collector.feed_all(parser, text.splitlines())
        if kind == "Push":
            async with self.db.sessions() as s:
                return await automl_store.read_observations(s, namespace, name)
        return []


def _condition_states(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c.get("type", ""), c.get("status", "")) for c in status.get("conditions") or []]


def _suffix() -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


__all__ = ["AutoMLController", "TERMINAL"]
