"""Suggestion algorithms: Optuna samplers through ask/tell, plus Katib's hyperband schedule.

The study is a pure function of what the database holds (``study_trials`` rows and the
study-level system attributes), so a restarted service rebuilds it and suggests exactly
what it would have suggested had it never stopped. To make that true for stateful
samplers too, every ask uses a *fresh* sampler seeded from ``(random_state, trial
number)`` (constant seed for the sequence-based ``grid`` and ``sobol``), and the sampler's
per-trial system attributes (CMA-ES keeps its optimizer there) are stored with each trial.
A built study is cached in memory between calls only as a speed-up: it is checked against
the rows and rebuilt whenever they disagree.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import warnings
import zlib
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.trial import TrialState, create_trial

from services.automl import enas, nas, pbt, search_space
from services.automl.validation import settings_map

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

STATES = {
    "RUNNING": TrialState.RUNNING,
    "COMPLETE": TrialState.COMPLETE,
    "FAIL": TrialState.FAIL,
    "PRUNED": TrialState.PRUNED,
}


@dataclass
class StudyRow:
    """One suggested trial as stored in ``study_trials``."""

    number: int
    trial_name: str
    params: dict[str, Any]
    distributions: dict[str, str]
    system_attrs: dict[str, Any]
    state: str = "RUNNING"
    value: float | None = None
    rung: int | None = None


@dataclass
class Suggestion:
    assignments: list[dict[str, str]]  # Katib parameterAssignments
    row: StudyRow
    labels: dict[str, str] = field(default_factory=dict)  # put on the trial (pbt's)


@dataclass
class SuggestResult:
    new: list[Suggestion] = field(default_factory=list)
    updated: list[StudyRow] = field(default_factory=list)  # rows whose outcome was told
    study_attrs: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    exhausted: bool = False


def base_seed(spec: dict[str, Any], experiment_uid: str) -> int:
    settings = settings_map((spec.get("algorithm") or {}).get("algorithmSettings"))
    if "random_state" in settings:
        return int(settings["random_state"])
    return zlib.crc32(experiment_uid.encode())


def _seed(base: int, number: int) -> int:
    """The seed of trial ``number``'s sampler: a hash, not arithmetic, of the two.

    NumPy's legacy RandomState seeds MT19937 with init_genrand, and seeds that are linearly
    related (base + k*number) give correlated streams: the random start-up trials then
    cluster. On Hartmann6 that left bayesianoptimization in a local optimum in 11 of 17
    seeds, against 5 of 17 for one sampler per study; hashed seeds give 6 of 17.
    """
    digest = hashlib.blake2b(f"{base}:{number}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


def make_sampler(
    name: str, settings: dict[str, str], seed: int, grid: dict[str, list[Any]] | None = None
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for a Katib algorithm name and its settings."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid or {}, seed=seed)
    if name == "tpe":
        kwargs: dict[str, Any] = {"seed": seed}
        if "n_EI_candidates" in settings:
            kwargs["n_ei_candidates"] = int(settings["n_EI_candidates"])
        if "prior_weight" in settings:
            kwargs["prior_weight"] = float(settings["prior_weight"])
        if "gamma" in settings:
            ratio = float(settings["gamma"])
            kwargs["gamma"] = lambda n: min(math.ceil(ratio * n), 25)
        return optuna.samplers.TPESampler(**kwargs)
    if name == "multivariate-tpe":
        kwargs = {"seed": seed, "multivariate": True}
        if "n_ei_candidates" in settings:
            kwargs["n_ei_candidates"] = int(settings["n_ei_candidates"])
        if "n_startup_trials" in settings:
            kwargs["n_startup_trials"] = int(settings["n_startup_trials"])
        return optuna.samplers.TPESampler(**kwargs)
    if name == "cmaes":
        restart = settings.get("restart_strategy", "none")
        kwargs = {"seed": seed, "warn_independent_sampling": False}
        if "sigma" in settings:
            kwargs["sigma0"] = float(settings["sigma"])
        if restart != "none":
            kwargs["restart_strategy"] = restart
        return optuna.samplers.CmaEsSampler(**kwargs)
    if name == "sobol":
        return optuna.samplers.QMCSampler(
            qmc_type="sobol", seed=seed, scramble=True, warn_independent_sampling=False
        )
    if name == "bayesianoptimization":
        n_initial = int(settings.get("n_initial_points", "10"))
        return WindowedGPSampler(seed=seed, n_startup_trials=n_initial)
    raise ValueError(f"unknown algorithm {name!r}")


GP_WINDOW = 64
GP_KERNEL_ATTR = "shipyard:gp_kernel"
GP_KERNEL_PARAMS = ("inverse_squared_lengthscales", "kernel_scale", "noise_var")


class WindowedGPSampler(optuna.samplers.GPSampler):
    """Optuna's GP sampler, fitted on at most ``window`` finished trials.

    A Gaussian process costs O(n^3) to fit; Optuna's refits its kernel on every ask, which
    takes about a second at 500 trials here. Up to ``window`` finished trials this sampler
    *is* Optuna's (the same suggestions, trial for trial); past it, the GP sees the best
    half of the window and the most recent trials for the rest: the regions worth refining
    and where it has just looked. The suggestion cost then stays that of a ``window``-trial
    GP (about 50 ms here) however long the experiment runs.

    Like Optuna's sampler used for a whole study, each kernel fit starts from the previous
    one's parameters; they are kept in a study attribute (stored with the study), not in
    the sampler, so a rebuilt study warm-starts exactly as the lost one would have.
    """

    def __init__(self, *, window: int = GP_WINDOW, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._window = window

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        storage, study_id = study._storage, study._study_id
        kernel = storage.get_study_system_attrs(study_id).get(GP_KERNEL_ATTR)
        if kernel is not None:
            import torch  # only this sampler needs it; keep it off the service's start

            previous: Any = SimpleNamespace(  # all that a fit reads of the previous one
                **{k: torch.tensor(v, dtype=torch.float64) for k, v in kernel.items()}
            )
            self._gprs_cache_list = [previous]
        view: Any = _TrialWindow(study, self._window)
        params = super().sample_relative(view, trial, search_space)
        if self._gprs_cache_list:
            fitted = self._gprs_cache_list[0]
            storage.set_study_system_attr(
                study_id,
                GP_KERNEL_ATTR,
                {k: getattr(fitted, k).tolist() for k in GP_KERNEL_PARAMS},
            )
        return params


class _TrialWindow:
    """A study whose trial list keeps every unfinished trial and ``limit`` complete ones."""

    def __init__(self, study: optuna.Study, limit: int) -> None:
        self._study, self._limit = study, limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
        trials = self._study._get_trials(**kwargs)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if len(complete) <= self._limit:
            return trials
        sign = 1.0 if self._study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
        best = sorted(complete, key=lambda t: (sign * (t.value or 0.0), t.number))
        keep = {t.number for t in best[: self._limit // 2]}
        rest = [t.number for t in complete if t.number not in keep]
        keep.update(rest[len(rest) - (self._limit - len(keep)) :])
        return [t for t in trials if t.state != TrialState.COMPLETE or t.number in keep]


class SuggestionEngine:
    """Suggests parameter assignments for experiments; one instance per service."""

    def __init__(self) -> None:
        self._studies: dict[str, optuna.Study] = {}

    def forget(self, experiment_uid: str) -> None:
        self._studies.pop(experiment_uid, None)

    # ------------------------------------------------------------------ optuna
    def _build(
        self, uid: str, direction: str, rows: list[StudyRow], study_attrs: dict[str, Any]
    ) -> optuna.Study:
        study = optuna.create_study(
            direction=optuna.study.StudyDirection[direction.upper()],
            storage=optuna.storages.InMemoryStorage(),
        )
        for key, value in study_attrs.items():
            study._storage.set_study_system_attr(study._study_id, key, value)
        for row in sorted(rows, key=lambda r: r.number):
            dists = {k: json_to_distribution(v) for k, v in row.distributions.items()}
            state = STATES[row.state]
            study.add_trial(
                create_trial(
                    state=state,
                    params=row.params,
                    distributions=dists,
                    value=row.value if state == TrialState.COMPLETE else None,
                    system_attrs=row.system_attrs,
                )
            )
        self._studies[uid] = study
        return study

    def _study(
        self, uid: str, direction: str, rows: list[StudyRow], study_attrs: dict[str, Any]
    ) -> optuna.Study:
        study = self._studies.get(uid)
        if study is not None:
            trials = study.get_trials(deepcopy=False)
            ordered = sorted(rows, key=lambda r: r.number)
            consistent = len(trials) == len(rows) and all(
                t.state == STATES[r.state] for t, r in zip(trials, ordered, strict=True)
            )
            if consistent and study.direction.name.lower() == direction:
                return study
        return self._build(uid, direction, rows, study_attrs)

    def suggest(
        self,
        spec: dict[str, Any],
        uid: str,
        rows: list[StudyRow],
        outcomes: dict[str, tuple[str, float | None]],
        study_attrs: dict[str, Any],
        state: dict[str, Any],
        count: int,
    ) -> SuggestResult:
        """Tell finished outcomes, then ask up to ``count`` new assignments.

        ``outcomes`` maps trial name -> (COMPLETE|FAIL|PRUNED, objective value) for trials
        that finished. Runs in a worker thread (samplers are CPU-bound).
        """
        try:
            return self._suggest(spec, uid, rows, outcomes, study_attrs, state, count)
        except Exception:
            self.forget(uid)  # never keep a study that may be ahead of the database
            raise

    def _suggest(
        self,
        spec: dict[str, Any],
        uid: str,
        rows: list[StudyRow],
        outcomes: dict[str, tuple[str, float | None]],
        study_attrs: dict[str, Any],
        state: dict[str, Any],
        count: int,
    ) -> SuggestResult:
        algorithm = spec["algorithm"]["algorithmName"]
        settings = settings_map(spec["algorithm"].get("algorithmSettings"))
        direction = spec["objective"]["type"]
        result = SuggestResult(study_attrs=dict(study_attrs), state=dict(state))
        updated = []
        for row in rows:
            if row.state == "RUNNING" and row.trial_name in outcomes:
                row.state, row.value = outcomes[row.trial_name]
                if row.state == "COMPLETE" and row.value is None:
                    row.state = "FAIL"
                updated.append(row)
        if algorithm == "pbt":
            result.updated = updated
            return _pbt(spec, uid, rows, updated, state, count, result)
        if algorithm == "darts":
            result.updated = updated
            return _darts(spec, rows, count, result)
        if algorithm == "enas":
            result.updated = updated
            return _enas(spec, uid, rows, updated, count, result)
        params = spec["parameters"]
        if algorithm == "hyperband":
            result.updated = updated
            return self._hyperband(spec, uid, rows, settings, state, count, result)
        study = self._study(
            uid,
            direction,
            [r for r in rows if r not in updated] + [_as_running(r) for r in updated],
            study_attrs,
        )
        for row in updated:
            if row.state == "COMPLETE":
                study.tell(row.number, row.value)
            else:
                study.tell(row.number, state=STATES[row.state])
            row.system_attrs = dict(
                study._storage.get_trial(
                    study._storage.get_trial_id_from_study_id_trial_number(
                        study._study_id, row.number
                    )
                ).system_attrs
            )
        result.updated = updated
        base = base_seed(spec, uid)
        if algorithm == "grid":
            grid = {p["name"]: search_space.grid_values(p) for p in params}
            size = math.prod(len(v) for v in grid.values())
            dists: dict[str, BaseDistribution] = {
                name: CategoricalDistribution(values) for name, values in grid.items()
            }
            count = min(count, size - len(rows))
            result.exhausted = len(rows) + count >= size
        else:
            grid = None
            dists = search_space.distributions(params)
        by_name = {p["name"]: p for p in params}
        for _ in range(max(count, 0)):
            number = len(study.get_trials(deepcopy=False))
            seed = base if algorithm in ("grid", "sobol") else _seed(base, number)
            with warnings.catch_warnings():  # experimental/deprecation notes, not user errors
                warnings.simplefilter("ignore")
                study.sampler = make_sampler(algorithm, settings, seed, grid)
            trial = study.ask(fixed_distributions=dists)
            values = dict(trial.params)
            frozen = study._storage.get_trial(trial._trial_id)
            row = StudyRow(
                number=trial.number,
                trial_name="",
                params=dict(frozen.params),
                distributions={k: distribution_to_json(v) for k, v in frozen.distributions.items()},
                system_attrs=dict(frozen.system_attrs),
            )
            assignments = [
                {"name": n, "value": search_space.format_value(by_name[n], values[n])}
                for n in (p["name"] for p in params)
            ]
            result.new.append(Suggestion(assignments, row))
        result.study_attrs = dict(study._storage.get_study_system_attrs(study._study_id))
        return result

    # --------------------------------------------------------------- hyperband
    def _hyperband(
        self,
        spec: dict[str, Any],
        uid: str,
        rows: list[StudyRow],
        settings: dict[str, str],
        state: dict[str, Any],
        count: int,
        result: SuggestResult,
    ) -> SuggestResult:
        schedule = hyperband_schedule(float(settings["r_l"]), float(settings.get("eta", "3")))
        resource = settings["resource_name"]
        params = spec["parameters"]
        by_name = {p["name"]: p for p in params}
        minimize = spec["objective"]["type"] == "minimize"
        position = int(state.get("rung_index", 0))
        base = base_seed(spec, uid)

        def ranked(rung: int) -> list[StudyRow]:
            done = [r for r in rows if r.rung == rung and r.state == "COMPLETE"]
            return sorted(
                done, key=lambda r: ((r.value or 0.0) if minimize else -(r.value or 0.0), r.number)
            )

        while position < len(schedule):
            bracket, stage, n_i, r_i = schedule[position]
            rung = bracket * 100 + stage
            if stage > 0:  # only configurations that completed can be promoted
                n_i = min(n_i, len(ranked(rung - 1)))
            in_rung = [r for r in rows if r.rung == rung]
            if len(in_rung) < n_i:
                break
            if any(r.state == "RUNNING" for r in in_rung):
                result.state["rung_index"] = position
                return result  # wait for the whole rung before promoting
            position += 1
        result.state["rung_index"] = position
        if position >= len(schedule):
            result.exhausted = True
            return result
        candidates = [r.params for r in ranked(rung - 1)[:n_i]] if stage > 0 else None
        number = len(rows)
        for k in range(len(in_rung), min(n_i, len(in_rung) + max(count, 0))):
            if candidates is None:
                rng = random.Random(_seed(base, number))
                values = {p["name"]: _random_value(p, rng) for p in params if p["name"] != resource}
            else:
                values = {n: v for n, v in candidates[k].items() if n != resource}
            values[resource] = r_i
            assignments = [
                {
                    "name": p["name"],
                    "value": search_space.format_value(by_name[p["name"]], values[p["name"]]),
                }
                for p in params
            ]
            row = StudyRow(
                number=number,
                trial_name="",
                params=values,
                distributions={},
                system_attrs={},
                rung=rung,
            )
            result.new.append(Suggestion(assignments, row))
            number += 1
        return result


def _pbt(
    spec: dict[str, Any],
    uid: str,
    rows: list[StudyRow],
    updated: list[StudyRow],
    state: dict[str, Any],
    count: int,
    result: SuggestResult,
) -> SuggestResult:
    """Katib's population-based training (services/automl/pbt.py): record the trials that
    finished, then hand out ``count`` queued members with their generation and parent."""
    population = pbt.Population(spec, rows, state, base_seed(spec, uid))
    for row in sorted(updated, key=lambda r: r.number):
        population.record(row)
    by_name = {p["name"]: p for p in spec["parameters"]}
    for k, job in enumerate(population.take(count)):
        assignments = [
            {"name": n, "value": search_space.format_value(p, job["params"][n])}
            for n, p in by_name.items()
        ]
        row = StudyRow(len(rows) + k, "", job["params"], {}, pbt.system_attrs(job))
        result.new.append(Suggestion(assignments, row, pbt.labels(job)))
    result.state["pbt"] = population.to_state()
    return result


def _darts(
    spec: dict[str, Any], rows: list[StudyRow], count: int, result: SuggestResult
) -> SuggestResult:
    """Katib's DARTS searches inside a single trial: one suggestion, then exhausted."""
    if not rows and count > 0:
        assignments = nas.darts_assignments(spec)
        values = {a["name"]: a["value"] for a in assignments}
        result.new.append(Suggestion(assignments, StudyRow(0, "", values, {}, {})))
    result.exhausted = True
    return result


def _enas(
    spec: dict[str, Any],
    uid: str,
    rows: list[StudyRow],
    updated: list[StudyRow],
    count: int,
    result: SuggestResult,
) -> SuggestResult:
    """Katib's ENAS: train the stored controller on the trials that just finished, then
    sample ``count`` architectures; the controller goes back into the study attributes."""
    nas_config = spec["nasConfig"]
    settings = enas.parse_settings(spec["algorithm"].get("algorithmSettings"))
    base = base_seed(spec, uid)
    controller = enas.Controller.load(
        result.study_attrs.get(enas.CONTROLLER_ATTR),
        int(nas_config["graphConfig"]["numLayers"]),
        len(nas.enas_operations(nas_config)),
        settings,
        base,
    )
    sign = -1.0 if spec["objective"]["type"] == "minimize" else 1.0
    batch = [
        (list(row.params["arc"]), sign * float(row.value))
        for row in sorted(updated, key=lambda r: r.number)
        if row.state == "COMPLETE" and row.value is not None
    ]
    with enas.one_torch_thread():
        if batch:
            controller.train(batch)
        arcs = [controller.sample(_seed(base, len(rows) + k)) for k in range(max(count, 0))]
    for k, arc in enumerate(arcs):
        number = len(rows) + k
        assignments = nas.enas_assignments(nas_config, arc)
        params: dict[str, Any] = {"arc": arc, **{a["name"]: a["value"] for a in assignments}}
        result.new.append(Suggestion(assignments, StudyRow(number, "", params, {}, {})))
    result.study_attrs[enas.CONTROLLER_ATTR] = controller.dump()
    return result


def _as_running(row: StudyRow) -> StudyRow:
    return StudyRow(
        row.number,
        row.trial_name,
        row.params,
        row.distributions,
        row.system_attrs,
        "RUNNING",
        None,
        row.rung,
    )


def _random_value(param: dict[str, Any], rng: random.Random) -> Any:
    dist = search_space.distribution(param)
    if isinstance(dist, CategoricalDistribution):
        return rng.choice(list(dist.choices))
    lo, hi = float(dist.low), float(dist.high)  # type: ignore[attr-defined]
    if getattr(dist, "log", False):
        value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    else:
        value = rng.uniform(lo, hi)
    step = getattr(dist, "step", None)
    if step:
        value = lo + round((value - lo) / step) * step
    return value


def hyperband_schedule(r_l: float, eta: float) -> list[tuple[int, int, int, float]]:
    """Hyperband's rungs in order: (bracket s, stage i, trials n_i, resource r_i).

    s_max = floor(log_eta(r_l)), B = (s_max + 1) * r_l; bracket s starts
    n = ceil(B / r_l * eta^s / (s + 1)) configurations at r = r_l * eta^-s, and each stage
    keeps the best floor(n_i / eta) at eta times the resource (Li et al., 2018).
    """
    s_max = int(math.floor(math.log(r_l) / math.log(eta) + 1e-9))
    budget = (s_max + 1) * r_l
    rungs = []
    for s in range(s_max, -1, -1):
        n = int(math.ceil(budget / r_l * eta**s / (s + 1)))
        r = r_l * eta ** (-s)
        for i in range(s + 1):
            n_i = int(math.floor(n * eta ** (-i)))
            r_i = r * eta**i
            if n_i < 1:
                break
            rungs.append((s, i, n_i, r_i))
    return rungs
