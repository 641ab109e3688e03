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
import logging
import secrets
import statistics
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from services.automl import collector, pbt_checkpoints, trial_runs
from services.automl import store as automl_store
from services.automl.algorithms import SuggestionEngine
from services.automl.configmaps import trial_template
from services.automl.models import EXPERIMENT, EXPERIMENT_LABEL, FINALIZER, SUGGESTION, TRIAL
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
    set_condition,
    summarize,
    trial_state,
)
from services.automl.tables import observation_logs
from services.automl.template import (
    TRIAL_LABEL,
    TemplateError,
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
FOLLOW_UP_SECONDS = 0.25
SUGGESTION_DONE = {
    "Never": "Suggestion is succeeded, can't be restarted",
    "FromVolume": "Suggestion is succeeded, suggestion volume is not deleted, can be restarted",
}


def suggestion_claim(experiment: dict[str, Any]) -> str:
    """The suggestion's volume of a FromVolume experiment: Katib's PVC name for it
    (``<suggestion>-<algorithm>``; the Suggestion is named as its experiment)."""
    name = experiment["metadata"]["name"]
    return f"{name}-{experiment['spec']['algorithm']['algorithmName']}"[:253]


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
            await trial_runs.reconcile_trial(self, namespace, name)

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
            await self._sync_suggestion(experiment, rows, exhausted, trials, suggestion, True)
            return
        done = completion(spec, summary, exhausted)
        if done is not None:
            ctype, reason, message = done
            set_condition(status, ctype, reason, message, false_types=("Running", "Restarting"))
            status["completionTime"] = now()
            await self._write_status(EXPERIMENT, experiment, status)
            log.info("experiment %s/%s %s: %s", namespace, name, ctype, reason)
            await self._kill_active(trials)
            await self._sync_suggestion(experiment, rows, exhausted, trials, suggestion, True)
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
        await self._sync_suggestion(experiment, rows, exhausted, trials, suggestion, False)

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
                    trial["metadata"]["labels"].update(suggestion.labels)  # pbt's
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
        finished: bool,
    ) -> None:
        """Keep the Suggestion object (Katib's record of requests and assignments) in step.

        It is derived from the study rows, which commit with the trials, so it can be
        brought up to date at any later reconcile (it is off the trial-start path). As
        Katib's, it succeeds when the search space is exhausted, or when its ``finished``
        experiment's resumePolicy is Never or FromVolume (LongRunning keeps it running).
        """
        spec, meta = experiment["spec"], experiment["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        status = (current or {}).get("status") or {}
        policy = spec.get("resumePolicy", "Never")
        done = exhausted or (finished and policy in ("Never", "FromVolume"))
        if (
            current is not None
            and status.get("suggestionCount") == len(rows)
            and done == has_condition(status, "Succeeded")
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
        elif done:  # Katib's reason and messages
            set_condition(
                status,
                "Succeeded",
                "Experiment is succeeded",
                SUGGESTION_DONE[policy],
                false_types=("Running",),
            )
        else:  # running, or running again after a restart
            set_condition(
                status,
                "Running",
                "SuggestionRunning",
                "Suggestion is running",
                false_types=("Succeeded",),
            )
        if current is None and policy == "FromVolume":
            await self.runtime.create_volume(
                namespace, suggestion_claim(experiment), labels={SERVICE_LABEL: "automl"}
            )
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
            await trial_runs.complete(self, trial, status, None)
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
            if trial_runs.collector_kind(trial["spec"]) in ("File", "TensorFlowEvent", "Custom"):
                await self.runtime.delete_volume(namespace, trial_runs.metrics_claim(name))
        await pbt_checkpoints.delete_volume(self.runtime, experiment)
        if experiment["spec"].get("resumePolicy") == "FromVolume":
            await self.runtime.delete_volume(namespace, suggestion_claim(experiment))
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


def _condition_states(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c.get("type", ""), c.get("status", "")) for c in status.get("conditions") or []]


def _suffix() -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


__all__ = ["AutoMLController", "TERMINAL"]
