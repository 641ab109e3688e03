"""NAS quality: ENAS against random architectures on the toy task of examples/automl/enas.yaml.

For each seed, ENAS runs the example's experiment (its nasConfig and controller settings,
``parallelTrialCount`` trials at a time) through shipyard's ``SuggestionEngine``, the code the
automl service runs, with the study round-tripped through JSON between suggestions as the
service stores it; each trial's accuracy is examples/automl/enas_trial.py's ``evaluate``, the
function the trial program runs, called in process (hundreds of trial processes would make
this part take longer than it measures). Random draws each layer's operation and each skip
bit uniformly. The line printed: the mean over seeds of the best accuracy after N trials for
each, and their ratio; PASS if ENAS's mean is at least random's.

    .venv/bin/python bench/bench_automl.py --part nas [--seeds 5]
"""

from __future__ import annotations

import copy
import importlib.util
import json
import random
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from services.automl import enas, nas
from services.automl.algorithms import StudyRow, SuggestionEngine

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "automl"


def _trial_program() -> ModuleType:
    spec = importlib.util.spec_from_file_location("enas_trial", EXAMPLES / "enas_trial.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _accuracy(program: ModuleType, assignments: list[dict[str, str]]) -> float:
    values = {a["name"]: json.loads(a["value"].replace("'", '"')) for a in assignments}
    return float(program.evaluate(values["architecture"], values["nn_config"]))


def enas_best(spec: dict[str, Any], program: ModuleType, seed: int, trials: int) -> float:
    """The best accuracy ENAS finds in ``trials`` trials, ``parallelTrialCount`` at a time."""
    engine, uid = SuggestionEngine(), f"bench-nas-{seed}"
    rows: list[StudyRow] = []
    attrs: dict[str, Any] = {}
    state: dict[str, Any] = {}
    finished: dict[str, tuple[str, float | None]] = {}
    best = 0.0
    while len(rows) < trials:
        count = min(spec["parallelTrialCount"], trials - len(rows))
        result = engine.suggest(spec, uid, rows, finished, attrs, state, count)
        attrs = json.loads(json.dumps(result.study_attrs))
        state = json.loads(json.dumps(result.state))
        finished = {}
        for suggestion in result.new:
            suggestion.row.trial_name = f"trial-{suggestion.row.number}"
            rows.append(suggestion.row)
            value = _accuracy(program, suggestion.assignments)
            finished[suggestion.row.trial_name] = ("COMPLETE", value)
            best = max(best, value)
    return best


def random_best(spec: dict[str, Any], program: ModuleType, seed: int, trials: int) -> float:
    nas_config = spec["nasConfig"]
    layers = int(nas_config["graphConfig"]["numLayers"])
    ops = len(nas.enas_operations(nas_config))
    rng = random.Random(seed)
    best = 0.0
    for _ in range(trials):
        arc = [
            bit
            for layer in range(layers)
            for bit in [rng.randrange(ops)] + [rng.randrange(2) for _ in range(layer)]
        ]
        best = max(best, _accuracy(program, nas.enas_assignments(nas_config, arc)))
    return best


def quality(seeds: int = 5, trials: int = 40) -> bool:
    """Print the NAS quality line; True if ENAS did at least as well as random."""
    example = yaml.safe_load((EXAMPLES / "enas.yaml").read_text())
    spec = copy.deepcopy(example["spec"])
    program = _trial_program()
    started = time.perf_counter()
    found = [enas_best(spec, program, seed, trials) for seed in range(seeds)]
    took = time.perf_counter() - started
    drawn = [random_best(spec, program, seed, trials) for seed in range(seeds)]
    mean_enas, mean_random = statistics.mean(found), statistics.mean(drawn)
    passed = mean_enas >= mean_random
    settings = enas.parse_settings(spec["algorithm"].get("algorithmSettings"))
    print(
        f"nas  enas vs random architectures, mean best Validation-Accuracy after {trials} trials "
        f"over {seeds} seeds: enas {mean_enas:.4f} random {mean_random:.4f} "
        f"ratio {mean_enas / mean_random:.3f}  {'PASS' if passed else 'FAIL'} (enas >= random)"
    )
    print(
        f"     per seed enas {[round(v, 3) for v in found]} random {[round(v, 3) for v in drawn]}"
        f"; controller hidden {settings['controller_hidden_size']}, "
        f"lr {settings['controller_learning_rate']}, {took:.0f} s for enas"
    )
    return passed
