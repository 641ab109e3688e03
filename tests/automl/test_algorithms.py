"""Every algorithm runs end to end; grid enumerates exactly; hyperband follows its schedule.

Real automl service and trial processes; the trials evaluate a quadratic and print it.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from services.automl.algorithms import hyperband_schedule
from tests.automl.conftest import AutoML, python_experiment, reason_of, unique

QUADRATIC = "import sys; x=float(sys.argv[1]); y=float(sys.argv[2]); print(f'loss={x*x+y:.6f}')"
PARAMS = [
    {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "-2", "max": "2"}},
    {"name": "y", "parameterType": "int", "feasibleSpace": {"min": "0", "max": "3"}},
]
ALGORITHMS = {
    "random": {"random_state": "3"},
    "tpe": {"random_state": "3", "n_EI_candidates": "8"},
    "multivariate-tpe": {"random_state": "3", "n_startup_trials": "2"},
    "cmaes": {"random_state": "3", "sigma": "0.5"},
    "sobol": {},
    "bayesianoptimization": {"random_state": "3", "n_initial_points": "2"},
}


async def test_run_every_algorithm(automl: AutoML) -> None:
    names = {alg: unique(alg.replace("-", "")) for alg in ALGORITHMS}
    for alg, settings in ALGORITHMS.items():
        await automl.create(
            "experiments",
            python_experiment(
                names[alg],
                QUADRATIC,
                parameters=PARAMS,
                algorithm=alg,
                settings=settings,
                maxTrialCount=4,
                parallelTrialCount=2,
            ),
        )
    results = await asyncio.gather(*(automl.wait_finished(n, timeout=150) for n in names.values()))
    for alg, exp in zip(ALGORITHMS, results, strict=True):
        assert reason_of(exp) == ("Succeeded", "ExperimentMaxTrialsReached"), alg
        assert exp["status"]["trialsSucceeded"] == 4, alg
        best = exp["status"]["currentOptimalTrial"]
        assert best["bestTrialName"], alg
        trials = await automl.trials(names[alg])
        combos = {tuple(a["value"] for a in t["spec"]["parameterAssignments"]) for t in trials}
        assert len(combos) == 4, (alg, combos)


async def test_run_grid_exactly(automl: AutoML) -> None:
    name = unique("grid")
    params = [
        {
            "name": "x",
            "parameterType": "double",
            "feasibleSpace": {"min": "-1", "max": "1", "step": "1"},
        },
        {"name": "y", "parameterType": "categorical", "feasibleSpace": {"list": ["0", "2"]}},
    ]
    await automl.create(
        "experiments",
        python_experiment(
            name, QUADRATIC, parameters=params, algorithm="grid", parallelTrialCount=3
        ),
    )
    exp = await automl.wait_finished(name, timeout=60)
    assert reason_of(exp) == ("Succeeded", "ExperimentSuggestionEndReached")
    trials = await automl.trials(name)
    seen = sorted(
        (float(a[0]["value"]), a[1]["value"])
        for a in (t["spec"]["parameterAssignments"] for t in trials)
    )
    assert seen == sorted(itertools.product([-1.0, 0.0, 1.0], ["0", "2"]))


@pytest.mark.parametrize(
    ("r_l", "eta", "expected"),
    [
        (
            9,
            3,
            [(2, 0, 9, 1), (2, 1, 3, 3), (2, 2, 1, 9), (1, 0, 5, 3), (1, 1, 1, 9), (0, 0, 3, 9)],
        ),
        (
            4,
            2,
            [(2, 0, 4, 1), (2, 1, 2, 2), (2, 2, 1, 4), (1, 0, 3, 2), (1, 1, 1, 4), (0, 0, 3, 4)],
        ),
    ],
)
def test_hyperband_schedule_brackets(
    r_l: float, eta: float, expected: list[tuple[int, int, int, float]]
) -> None:
    assert [(s, i, n, round(r, 6)) for s, i, n, r in hyperband_schedule(r_l, eta)] == expected


async def test_run_hyperband_schedule(automl: AutoML) -> None:
    name = unique("hyperband")
    params = [
        {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "-2", "max": "2"}},
        {"name": "epochs", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "4"}},
    ]
    code = "import sys; x=float(sys.argv[1]); e=int(sys.argv[2]); print(f'loss={x*x + 1.0/e:.6f}')"
    await automl.create(
        "experiments",
        python_experiment(
            name,
            code,
            parameters=params,
            algorithm="hyperband",
            settings={"resource_name": "epochs", "eta": "2", "r_l": "4"},
            parallelTrialCount=4,
        ),
    )
    exp = await automl.wait_finished(name, timeout=90)
    assert reason_of(exp) == ("Succeeded", "ExperimentSuggestionEndReached")
    trials = sorted(
        await automl.trials(name),
        key=lambda t: (t["metadata"]["creationTimestamp"], int(t["metadata"]["resourceVersion"])),
    )
    assert len(trials) == 4 + 2 + 1 + 3 + 1 + 3

    def values(t: dict) -> tuple[str, str]:
        a = {p["name"]: p["value"] for p in t["spec"]["parameterAssignments"]}
        return a["x"], a["epochs"]

    def loss(t: dict) -> float:
        return float(t["status"]["observation"]["metrics"][0]["min"])

    rung0, rung1, rung2 = trials[0:4], trials[4:6], trials[6:7]
    assert {values(t)[1] for t in rung0} == {"1"} and {values(t)[1] for t in rung1} == {"2"}
    assert values(rung2[0])[1] == "4"
    best_two = sorted(rung0, key=loss)[:2]
    assert {values(t)[0] for t in rung1} == {values(t)[0] for t in best_two}
    assert values(rung2[0])[0] == values(min(rung1, key=loss))[0]
    assert {values(t)[1] for t in trials[7:10]} == {"2"}
    assert {values(t)[1] for t in trials[11:14]} == {"4"}
