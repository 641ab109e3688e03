"""Katib's trial success and failure conditions, evaluated as its Trial controller does on the
job object a trial runs.

Katib stores ``successCondition`` and ``failureCondition`` as GJSON paths, for example its
default for a batch/v1 Job, ``status.conditions.#(type=="Complete")#|#(status=="True")#``,
and evaluates them with tidwall/gjson. The paths are read by the platform's one GJSON
implementation (:mod:`services.common.gjson`, shared with KServe's InferenceGraph router),
which has the length and nesting limits that make it safe on tenant input. What is Katib's
own is here: the trial's job has succeeded (or failed) when the path gives an object or a
non-empty array; the failure condition is tried first; the first element of an array is the
condition whose ``reason`` and ``message`` the trial reports; a template that names no
conditions gets Katib's defaults for its kind; and :func:`check` refuses, when the
experiment is created, a condition outside the supported language (a 422 naming the field).
"""

from __future__ import annotations

from typing import Any

from services.common import gjson

MISSING: Any = gjson.MISSING
#: Longest condition accepted (they are tenant input, evaluated on every trial check).
MAX_CONDITION = gjson.MAX_PATH


class ConditionError(ValueError):
    """The condition is not a GJSON path the platform evaluates (the message says why)."""


def get(document: Any, path: str) -> Any:
    """The value at ``path`` in ``document`` (parsed JSON), or :data:`MISSING`."""
    try:
        compiled = gjson.compiled(path)
    except gjson.PathError as exc:
        raise ConditionError(str(exc)) from None
    return gjson.get(compiled, document)


def check(condition: str) -> None:
    """Raise :class:`ConditionError` unless ``condition`` is a GJSON path the platform
    evaluates; the message says what is wrong and where."""
    try:
        gjson.compiled(condition)
    except gjson.PathError as exc:
        raise ConditionError(f"not a supported GJSON path: {exc}") from None


def met(document: dict[str, Any], condition: str | None) -> dict[str, Any] | None:
    """The condition's first matching object when it holds (Katib: an object or a non-empty
    array), else None. The object is ``{}`` when a match is not itself an object."""
    if not condition:
        return None
    value = get(document, condition)
    if isinstance(value, list):
        if not value:
            return None
        value = value[0]
    elif not isinstance(value, dict):
        return None
    return value if isinstance(value, dict) else {}


def job_outcome(
    document: dict[str, Any], success: str | None, failure: str | None
) -> tuple[str, dict[str, Any]] | None:
    """("Failed" | "Succeeded", the matching condition) as Katib decides it, failure first;
    None while the job is still running."""
    failed = met(document, failure)
    if failed is not None:
        return "Failed", failed
    succeeded = met(document, success)
    if succeeded is not None:
        return "Succeeded", succeeded
    return None


#: Katib's defaults (its experiment webhook): batch/v1 Job, and the Training Operator's kinds.
JOB_SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
TRAINING_SUCCESS = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
TRAINING_FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
TRAINING_PRIMARY_POD_LABELS = {"training.kubeflow.org/job-role": "master"}
TRAINING_KINDS = ("TFJob", "PyTorchJob", "XGBoostJob", "MPIJob", "PaddleJob", "JAXJob")


def defaults(kind: str | None) -> tuple[str | None, str | None, dict[str, str] | None]:
    """(successCondition, failureCondition, primaryPodLabels) Katib gives a trial template of
    ``kind`` that names none; Nones for other kinds."""
    if kind == "Job":
        return JOB_SUCCESS, JOB_FAILURE, None
    if kind in TRAINING_KINDS:
        return TRAINING_SUCCESS, TRAINING_FAILURE, dict(TRAINING_PRIMARY_POD_LABELS)
    return None, None, None
