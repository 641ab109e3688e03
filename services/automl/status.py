"""Experiment and trial status, computed as Katib's experiment controller computes them.

See Katib's ``experiment/util/status_util.go``: trials are bucketed Killed > Failed >
Succeeded > EarlyStopped > MetricsUnavailable > Running > Pending; the optimal trial is the
first with the best objective (a later trial must be strictly better); completion is checked
goal -> failures > maxFailedTrialCount -> completed >= maxTrialCount -> suggestions exhausted
with nothing active.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.automl.collector import objective_value

TERMINAL = ("Succeeded", "Failed", "Killed", "EarlyStopped", "MetricsUnavailable")
REASONS = {
    "Created": "TrialCreated",
    "Running": "TrialRunning",
    "Succeeded": "TrialSucceeded",
    "Failed": "TrialFailed",
    "Killed": "TrialKilled",
    "EarlyStopped": "TrialEarlyStopped",
    "MetricsUnavailable": "TrialMetricsUnavailable",
}
GOAL, FAILED, MAX_TRIALS, SUGGESTION_END = (
    "ExperimentGoalReached",
    "ExperimentFailed",
    "ExperimentMaxTrialsReached",
    "ExperimentSuggestionEndReached",
)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def has_condition(status: dict[str, Any] | None, ctype: str) -> bool:
    return any(
        c.get("type") == ctype and c.get("status") == "True"
        for c in (status or {}).get("conditions") or []
    )


def condition_reason(status: dict[str, Any] | None, ctype: str) -> str | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == ctype and c.get("status") == "True":
            return str(c.get("reason", ""))
    return None


def mark_created(status: dict[str, Any]) -> None:
    """Katib's first experiment condition, Created, with the start time (once)."""
    if not has_condition(status, "Created"):
        set_condition(status, "Created", "ExperimentCreated", "Experiment is created")
        status["startTime"] = now()


def set_condition(
    status: dict[str, Any],
    ctype: str,
    reason: str,
    message: str,
    *,
    false_types: tuple[str, ...] = (),
) -> None:
    """Add or update condition ``ctype`` (True); the ``false_types`` become False."""
    conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
    stamp = now()
    for c in conditions:
        if c["type"] in false_types and c.get("status") == "True":
            c.update(status="False", lastUpdateTime=stamp, lastTransitionTime=stamp)
    for c in conditions:
        if c["type"] == ctype:
            if c.get("status") != "True" or c.get("reason") != reason:
                c.update(
                    status="True",
                    reason=reason,
                    message=message,
                    lastUpdateTime=stamp,
                    lastTransitionTime=stamp,
                )
                conditions.remove(c)
                conditions.append(c)
            return
    conditions.append(
        {
            "type": ctype,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastUpdateTime": stamp,
            "lastTransitionTime": stamp,
        }
    )


def trial_state(trial: dict[str, Any]) -> str:
    """Killed, Failed, Succeeded, EarlyStopped, MetricsUnavailable, Running or Pending."""
    status = trial.get("status") or {}
    for ctype in ("Killed", "Failed", "Succeeded", "EarlyStopped", "MetricsUnavailable", "Running"):
        if has_condition(status, ctype):
            return ctype
    return "Pending"


def is_finished(trial: dict[str, Any]) -> bool:
    return trial_state(trial) in TERMINAL


@dataclass
class Summary:
    status: dict[str, Any]
    goal_reached: bool
    active: int
    completed: int
    failed: int
    buckets: dict[str, list[str]] = field(default_factory=dict)


_LISTS = {
    "Running": "runningTrialList",
    "Pending": "pendingTrialList",
    "Failed": "failedTrialList",
    "Succeeded": "succeededTrialList",
    "Killed": "killedTrialList",
    "EarlyStopped": "earlyStoppedTrialList",
    "MetricsUnavailable": "metricsUnavailableTrialList",
}
_COUNTERS = {
    "Running": "trialsRunning",
    "Pending": "trialsPending",
    "Failed": "trialsFailed",
    "Succeeded": "trialsSucceeded",
    "Killed": "trialsKilled",
    "EarlyStopped": "trialsEarlyStopped",
    "MetricsUnavailable": "trialMetricsUnavailable",
}


def summarize(experiment: dict[str, Any], trials: list[dict[str, Any]]) -> Summary:
    """Counters, trial lists and currentOptimalTrial, in a copy of the experiment status.

    ``trials`` must be in creation order: ties keep the earlier trial.
    """
    spec = experiment["spec"]
    objective = spec["objective"]
    status = dict(experiment.get("status") or {})
    buckets: dict[str, list[str]] = {k: [] for k in _LISTS}
    best: tuple[float, dict[str, Any]] | None = None
    minimize = objective["type"] == "minimize"
    goal = objective.get("goal")
    goal_reached = False
    for trial in trials:
        buckets[trial_state(trial)].append(trial["metadata"]["name"])
        value = objective_value(
            (trial.get("status") or {}).get("observation"),
            trial["spec"].get("objective") or objective,
        )
        if value is None:
            continue
        if best is None or (value < best[0] if minimize else value > best[0]):
            best = (value, trial)
        if goal is not None and (best[0] <= goal if minimize else best[0] >= goal):
            goal_reached = True
    status["trials"] = len(trials)
    for state, key in _COUNTERS.items():
        status[key] = len(buckets[state])
    for state, key in _LISTS.items():
        if buckets[state]:
            status[key] = buckets[state]
        else:
            status.pop(key, None)
    if best is not None:
        trial = best[1]
        assignments = trial["spec"].get("parameterAssignments") or []
        status["currentOptimalTrial"] = {
            "bestTrialName": trial["metadata"]["name"],
            "parameterAssignments": assignments,
            "observation": (trial.get("status") or {}).get("observation") or {"metrics": []},
            "parameterSummary": parameter_summary(assignments),
        }
    else:
        status["currentOptimalTrial"] = {
            "bestTrialName": "",
            "parameterAssignments": [],
            "observation": {"metrics": []},
        }
    completed = sum(len(buckets[s]) for s in TERMINAL)
    return Summary(
        status,
        goal_reached,
        len(buckets["Running"]) + len(buckets["Pending"]),
        completed,
        len(buckets["Failed"]),
        buckets,
    )


def completion(
    spec: dict[str, Any], summary: Summary, suggestions_exhausted: bool
) -> tuple[str, str, str] | None:
    """(condition, reason, message) when the experiment is finished, in Katib's order."""
    if summary.goal_reached:
        return ("Succeeded", GOAL, "Experiment has succeeded because Objective goal has reached")
    max_failed = spec.get("maxFailedTrialCount")
    if max_failed is not None and summary.failed > max_failed:
        return ("Failed", FAILED, "Experiment has failed because max failed count has reached")
    max_trials = spec.get("maxTrialCount")
    if max_trials is not None and summary.completed >= max_trials:
        return (
            "Succeeded",
            MAX_TRIALS,
            "Experiment has succeeded because max trial count has reached",
        )
    if suggestions_exhausted and summary.active == 0:
        return (
            "Succeeded",
            SUGGESTION_END,
            "Experiment has succeeded because suggestion service has reached the end",
        )
    return None


def parameter_summary(assignments: list[dict[str, str]]) -> str:
    return ",".join(f"{a['name']}={a['value']}" for a in assignments)
