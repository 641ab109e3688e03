"""A KFP run's state, derived from its Workflow (pure function, no services)."""

from __future__ import annotations

from services.pipeline.kfp_runs import run_state
from services.pipeline.models import RETRY_ANNOTATION


def _wf(phase: str | None, **extra: object) -> dict:
    wf: dict = {"metadata": {"annotations": {}}, "spec": {}, "status": {"phase": phase}}
    for key, value in extra.items():
        section, field = key.split("__")
        wf[section][field] = value
    return wf


def test_states_follow_the_workflow_phase() -> None:
    assert run_state(_wf(None), "PENDING") == "PENDING"
    assert run_state(_wf("Running"), "PENDING") == "RUNNING"
    assert run_state(_wf("Running", spec__suspend=True), "RUNNING") == "PAUSED"
    assert run_state(_wf("Running", spec__shutdown="Terminate"), "RUNNING") == "CANCELING"
    assert run_state(_wf("Succeeded"), "RUNNING") == "SUCCEEDED"
    assert run_state(_wf("Failed"), "RUNNING") == "FAILED"
    assert run_state(_wf("Failed", spec__shutdown="Terminate"), "RUNNING") == "CANCELED"
    assert run_state(None, "FAILED") == "FAILED"


def test_a_retried_run_is_running_before_the_controller_resets_it() -> None:
    """Between ``:retry`` and the controller's reset the Workflow still says Failed; a client
    that retries and then waits for completion must not see that as the retry's outcome."""
    retried = _wf("Failed", metadata__annotations={RETRY_ANNOTATION: "1"})
    assert run_state(retried, "RUNNING") == "RUNNING"
    retried["status"]["retryGeneration"] = 1  # the controller applied it; the phase is real
    assert run_state(retried, "RUNNING") == "FAILED"
