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


def workflow(
    name: str,
    templates: list[dict[str, Any]],
    *,
    kind: str = "Workflow",
    generate_name: bool = False,
    labels: dict[str, str] | None = None,
    entrypoint: str = "main",
    **spec: Any,
) -> dict[str, Any]:
    """An Argo ``kind`` (Workflow, WorkflowTemplate) named ``name`` (a ``generateName``
    with ``generate_name``) that starts at ``entrypoint``; ``spec`` adds to its spec."""
    metadata: dict[str, Any] = {"generateName" if generate_name else "name": name}
    if labels:
        metadata["labels"] = labels
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": kind,
        "metadata": metadata,
        "spec": {"entrypoint": entrypoint, **spec, "templates": templates},
    }


def counted_step(name: str, then: str = "") -> dict[str, Any]:
    """A template ``name`` that appends the line ``ran`` to ``/m/<name>`` on the workflow's
    claim, then runs the shell command ``then``: the file's lines count the step's runs."""
    return {
        "name": name,
        "container": {
            "image": "alpine",
            "command": ["sh", "-c", f"echo ran >> /m/{name}; {then}"],
            "volumeMounts": [{"name": "m", "mountPath": "/m"}],
        },
    }


def counted_workflow(
    name: str,
    claim: str,
    steps: dict[str, str],
    *,
    dag: bool = False,
    generate_name: bool = False,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Workflow whose ``counted_step`` s (name -> ``then``, in order) each run after the
    one before, as steps or, with ``dag``, as DAG tasks; ``claim`` is mounted at ``/m``.
    Whether a failure made a step run twice is then read from the claim."""
    order = list(steps)
    main: dict[str, Any] = {"name": "main"}
    if dag:
        main["dag"] = {
            "tasks": [
                {"name": s, "template": s, **({"dependencies": [order[i - 1]]} if i else {})}
                for i, s in enumerate(order)
            ]
        }
    else:
        main["steps"] = [[{"name": s, "template": s}] for s in order]
    return workflow(
        name,
        [main, *(counted_step(s, then) for s, then in steps.items())],
        generate_name=generate_name,
        labels=labels,
        volumes=[{"name": "m", "persistentVolumeClaim": {"claimName": claim}}],
    )


def http_server_workload(namespace: str, name: str, **extra: Any) -> dict[str, Any]:
    """A runtime ``server`` workload: Python's http.server on the runtime's ``$(PORT)``, ready
    once it answers ``GET /``; ``extra`` fields added."""
    return {
        "kind": "server",
        "namespace": namespace,
        "name": name,
        "command": ["python3", "-m", "http.server", "$(PORT)", "--bind", "0.0.0.0"],
        "readinessProbe": {"httpGet": {"path": "/"}},
        **extra,
    }


def claim(name: str, storage: str = "1Mi") -> dict[str, Any]:
    """A PersistentVolumeClaim ``name`` (ReadWriteOnce) asking for ``storage``."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}},
    }


def notebook(
    name: str,
    image: str = "jupyter",
    *,
    container_name: str | None = None,
    volumes: list[dict[str, Any]] | None = None,
    **container: Any,
) -> dict[str, Any]:
    """A Kubeflow Notebook ``name``: one container (named ``name`` unless said) running
    ``image``, with ``container``'s other fields (command, env, volumeMounts, ...)."""
    pod: dict[str, Any] = {
        "containers": [{"name": container_name or name, "image": image, **container}]
    }
    if volumes:
        pod["volumes"] = volumes
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Notebook",
        "metadata": {"name": name},
        "spec": {"template": {"spec": pod}},
    }
