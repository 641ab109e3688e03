"""PBT against random search on the toy task of examples/automl/pbt.yaml, same budget.

Both run the automl service's suggestion engine (services/automl/algorithms.py) in process,
driven as the controller drives it (``parallelTrialCount`` trials at a time, each finished
trial told before the next ask, the study rows and state carried between calls as the
database carries them). The trial is examples/automl/pbt_trial.py's training step, run in
process: each trial trains ``EPOCHS`` epochs at its learning rate, a PBT child from a copy of
its parent's checkpoint, a random-search trial from scratch. The score is the best
``Validation-accuracy`` of the experiment; PASS when PBT's mean (over seeds) is at least
random search's. What PBT adds here is what it is for: training carried over between
generations while the learning rate follows the changing optimum.

    .venv/bin/python bench/bench_automl.py --part pbt
"""

from __future__ import annotations

import copy
import importlib.util
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.automl.algorithms import StudyRow, SuggestionEngine  # noqa: E402

EXAMPLE = ROOT / "examples" / "automl" / "pbt.yaml"
TRIAL = ROOT / "examples" / "automl" / "pbt_trial.py"
EPOCHS = 10
TRIALS = 60
PARALLEL = 3


def _toy() -> Any:
    spec = importlib.util.spec_from_file_location("pbt_trial", TRIAL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(algorithm: str, seed: int, trials: int = TRIALS, parallel: int = PARALLEL) -> float:
    """The best accuracy (0..1) an experiment of ``trials`` toy trials reaches."""
    toy = _toy()
    spec = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text())["spec"])
    if algorithm != "pbt":  # pbt's draws are seeded by the experiment's uid
        spec["algorithm"] = {
            "algorithmName": algorithm,
            "algorithmSettings": [{"name": "random_state", "value": str(seed)}],
        }
    uid = f"bench-{algorithm}-{seed}"
    engine = SuggestionEngine()
    rows: list[StudyRow] = []
    state: dict[str, Any] = {}
    running: list[StudyRow] = []
    checkpoints: dict[str, tuple[int, float]] = {}
    results: dict[str, float] = {}
    noise = random.Random(seed)
    while len(rows) < trials or running:
        outcomes: dict[str, tuple[str, float | None]] = {}
        if running:
            row = running.pop(0)
            outcomes[row.trial_name] = ("COMPLETE", results[row.trial_name])
        need = min(parallel - len(running), trials - len(rows))
        result = engine.suggest(spec, uid, rows, outcomes, {}, state, max(need, 0))
        state = dict(result.state, exhausted=result.exhausted)
        for suggestion in result.new:
            row = suggestion.row
            row.trial_name = f"t{row.number}"
            rows.append(row)
            running.append(row)
            parent = suggestion.labels.get("pbt.suggestion.katib.kubeflow.org/parent")
            step, accuracy = checkpoints.get(parent or "", (1, 0.0))
            lr = float(row.params["lr"])
            for _ in range(EPOCHS):
                accuracy = toy.train_step(accuracy, lr, noise)
                step += 1
            checkpoints[row.trial_name] = (step, accuracy)
            results[row.trial_name] = accuracy / 100
    return max(results.values())


def report(seeds: int = 5, trials: int = TRIALS) -> bool:
    """Print the PBT line: mean best for pbt and random, their ratio, PASS or FAIL."""
    pbt = [run("pbt", seed, trials) for seed in range(seeds)]
    rnd = [run("random", seed, trials) for seed in range(seeds)]
    mean_pbt, mean_rnd = statistics.mean(pbt), statistics.mean(rnd)
    ok = mean_pbt >= mean_rnd
    ratio = mean_pbt / mean_rnd if mean_rnd else float("inf")
    print(
        f"pbt vs random (toy PBT task, {trials} trials x {EPOCHS} epochs, {PARALLEL} parallel, "
        f"{seeds} seeds): mean best accuracy pbt {mean_pbt:.4f}, random {mean_rnd:.4f}, "
        f"ratio {ratio:.2f}  {'PASS' if ok else 'FAIL'} (pbt >= random)"
    )
    return ok


if __name__ == "__main__":
    sys.exit(0 if report() else 1)
