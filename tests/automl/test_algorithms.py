"""Every algorithm runs end to end; grid enumerates exactly; hyperband follows its schedule.

Real automl service and trial processes; the trials evaluate a quadratic and print it.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import math
import random
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import create_trial

from services.automl.algorithms import (
    GP_KERNEL_ATTR,
    GP_WINDOW,
    StudyRow,
    SuggestionEngine,
    WindowedGPSampler,
    hyperband_schedule,
)
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


def _branin_study(trials: int, seed: int = 0) -> optuna.Study:
    rng = random.Random(seed)
    dists: dict[str, BaseDistribution] = {
        "x1": FloatDistribution(-5, 10),
        "x2": FloatDistribution(0, 15),
    }
    study = optuna.create_study()
    for _ in range(trials):
        x1, x2 = rng.uniform(-5, 10), rng.uniform(0, 15)
        value = (x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2 + 10 * (
            1 - 1 / (8 * math.pi)
        ) * math.cos(x1)
        study.add_trial(create_trial(params={"x1": x1, "x2": x2}, distributions=dists, value=value))
    return study


def test_bayesianoptimization_is_optunas_gp_up_to_the_window() -> None:
    asked = []
    for sampler in (WindowedGPSampler(seed=7), optuna.samplers.GPSampler(seed=7)):
        study = _branin_study(GP_WINDOW - 4)
        study.sampler = sampler
        asked.append(study.ask(study.trials[0].distributions).params)
    ours, optunas = asked
    assert ours == optunas


def test_bayesianoptimization_fits_the_best_half_and_the_most_recent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = _branin_study(GP_WINDOW * 3)
    seen: list[list[int]] = []
    fit = optuna.samplers.GPSampler._sample_relative_impl

    def spy(self: Any, view: Any, completed: list[Any], *args: Any) -> Any:
        seen.append([t.number for t in completed])
        return fit(self, view, completed, *args)

    monkeypatch.setattr(optuna.samplers.GPSampler, "_sample_relative_impl", spy)
    study.sampler = WindowedGPSampler(seed=7)
    study.ask(study.trials[0].distributions)
    (numbers,) = seen
    trials = study.trials[: GP_WINDOW * 3]
    best = sorted(trials, key=lambda t: (t.value, t.number))[: GP_WINDOW // 2]
    rest = [t.number for t in trials if t not in best]
    assert sorted(numbers) == sorted({t.number for t in best} | set(rest[-GP_WINDOW // 2 :]))
    assert len(numbers) == GP_WINDOW


def test_bayesianoptimization_suggests_the_same_after_a_restart() -> None:
    """A service rebuilt from the stored rows and study attributes (kernel warm start
    included) suggests what the one that kept running does, past the GP window too."""
    spec = {
        "objective": {"type": "minimize"},
        "parameters": PARAMS,
        "algorithm": {
            "algorithmName": "bayesianoptimization",
            "algorithmSettings": [
                {"name": "random_state", "value": "5"},
                {"name": "n_initial_points", "value": "3"},
            ],
        },
    }
    running = SuggestionEngine()
    rows: list[StudyRow] = []
    attrs: dict[str, Any] = {}
    for number in range(GP_WINDOW + 4):
        outcomes = {
            r.trial_name: ("COMPLETE", float(r.params["x"]) ** 2 + r.params["y"])
            for r in rows
            if r.state == "RUNNING"
        }
        if number in (GP_WINDOW // 2, GP_WINDOW + 3):
            restarted = SuggestionEngine().suggest(
                spec, "exp", copy.deepcopy(rows), dict(outcomes), dict(attrs), {}, 1
            )
        result = running.suggest(spec, "exp", rows, outcomes, attrs, {}, 1)
        if number in (GP_WINDOW // 2, GP_WINDOW + 3):
            assert restarted.new[0].assignments == result.new[0].assignments, number
            assert restarted.study_attrs == result.study_attrs
            # The stored kernel matters: a cold fit lands elsewhere.
            cold = SuggestionEngine().suggest(
                spec,
                "exp",
                copy.deepcopy(rows),
                dict(outcomes),
                {k: v for k, v in attrs.items() if k != GP_KERNEL_ATTR},
                {},
                1,
            )
            assert cold.study_attrs[GP_KERNEL_ATTR] != result.study_attrs[GP_KERNEL_ATTR]
        attrs = result.study_attrs
        for suggestion in result.new:
            suggestion.row.trial_name = f"t{suggestion.row.number}"
            rows.append(suggestion.row)
    assert GP_KERNEL_ATTR in attrs
