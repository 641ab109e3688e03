"""Object specs the tests and benchmarks build again and again, written once.

``experiment`` is a Katib Experiment whose trial Job (``trial_job``) runs one command in a
container named ``main``; ``python_experiment`` runs ``python -c code`` with each parameter
as an argument.
"""

from __future__ import annotations

import sys
from typing import Any

#: One double parameter ``x`` in [0, 1]: enough for a random search.
X_PARAMETER: list[dict[str, Any]] = [
    {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}}
]


def experiment(
    name: str,
    command: list[str],
    *,
    parameters: list[dict[str, Any]] | None = None,
    algorithm: str = "random",
    settings: dict[str, str] | None = None,
    objective: str = "minimize",
    metric: str = "loss",
    goal: float | None = None,
    env: list[dict[str, str]] | None = None,
    labels: dict[str, str] | None = None,
    trial_spec: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An Experiment whose trials run ``command`` (``${trialParameters.<p>}`` in it is
    filled in per trial; a parameter ``a-b`` is the trial parameter ``a_b``) in the Job
    ``trial_job`` builds, or in ``trial_spec`` when given (``command`` is then unused)."""
    parameters = X_PARAMETER if parameters is None else parameters
    trial_params = [
        {"name": p["name"].replace("-", "_"), "reference": p["name"]} for p in parameters
    ]
    objective_spec: dict[str, Any] = {"type": objective, "objectiveMetricName": metric}
    if goal is not None:
        objective_spec["goal"] = goal
    algorithm_spec: dict[str, Any] = {"algorithmName": algorithm}
    if settings:
        algorithm_spec["algorithmSettings"] = [{"name": k, "value": v} for k, v in settings.items()]
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": metadata,
        "spec": {
            "objective": objective_spec,
            "algorithm": algorithm_spec,
            "parameters": parameters,
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": trial_params,
                "trialSpec": trial_spec or trial_job(command, env=env),
            },
            **spec,
        },
    }


def trial_job(
    command: list[str],
    *,
    image: str = "python:3.11",
    env: list[dict[str, str]] | None = None,
    volume_mounts: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A trial's Job: one container named ``main`` runs ``command``, never restarted."""
    container: dict[str, Any] = {"name": "main", "image": image, "command": command}
    if env:
        container["env"] = env
    if volume_mounts:
        container["volumeMounts"] = volume_mounts
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    return {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": pod}}}


def python_experiment(
    name: str, code: str, *, parameters: list[dict[str, Any]] | None = None, **options: Any
) -> dict[str, Any]:
    """An Experiment whose trial runs ``python -c code`` with each parameter as an argument."""
    parameters = X_PARAMETER if parameters is None else parameters
    args = [f"${{trialParameters.{p['name'].replace('-', '_')}}}" for p in parameters]
    return experiment(name, [sys.executable, "-c", code, *args], parameters=parameters, **options)
