"""Population-based training (``algorithmName: pbt``) as Katib's PBT suggestion runs it.

Katib's service (pkg/suggestion/v1beta1/pbt/service.py) keeps a queue of *jobs* (parameters,
generation, parent) and two pools of completed trials, ``current`` and ``previous``:

- the queue starts with ``n_population`` random members of generation 0;
- a trial that succeeds (or was early stopped with a value) joins ``current``; a failed or
  killed one is queued again with the same parameters, generation and parent;
- when a request finds the queue short, Katib *generates*: while ``current`` holds at most
  ``n_population`` trials it draws further random members (no generation yet) or, once a
  generation exists, more children of ``previous``; when ``current`` holds more than
  ``n_population``, it breeds the next generation from it and ``current`` becomes
  ``previous``;
- breeding ranks the pool by the objective (negated when minimizing): members below the
  ``truncation_threshold`` quantile are *exploited*, the others *explored*. An exploited
  member's child takes a top member's parameters (one at or above the ``1 - threshold``
  quantile); an explored member's child perturbs its own parameters (times 0.8 or 1.2 for
  numbers, one step along the list otherwise), or with ``resample_probability`` set,
  resamples each one with that probability.

Each job becomes a trial labelled ``pbt.suggestion.katib.kubeflow.org/generation`` and, past
generation 0, ``pbt.suggestion.katib.kubeflow.org/parent`` (the trial whose checkpoint it
starts from; :mod:`services.automl.pbt_checkpoints` copies it). One difference from Katib:
its exploit child names the *exploited* member as parent (so it resumes the weak member's
weights with the strong member's parameters); here the parent is the top member whose
parameters it copies, as in Jaderberg et al. (2017): exploit copies weights and
hyperparameters together.

Restart-safe: the queue, the pool epoch and a draw counter live in the study's ``state``;
each trial's generation, parent and pool in its row's ``system_attrs``. Every random draw
comes from a generator seeded by (random_state or experiment uid, draw counter), so a
restarted service suggests what the lost one would have. Kept free of Optuna imports (the
validation imports the settings check).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from typing import Any, Protocol

from services.common.errors import Cause

GENERATION_LABEL = "pbt.suggestion.katib.kubeflow.org/generation"
PARENT_LABEL = "pbt.suggestion.katib.kubeflow.org/parent"
DEFAULT_TRIAL_DIR = "/var/log/katib/checkpoints/"
SETTINGS = ("suggestion_trial_dir", "n_population", "truncation_threshold", "resample_probability")
REQUIRED = ("n_population", "truncation_threshold")
MIN_POPULATION = 5
PERTURB_FACTORS = (0.8, 1.2)
# Row system attributes.
GENERATION, PARENT, POOL = "pbt_generation", "pbt_parent", "pbt_pool"


# ------------------------------------------------------------------------------ settings
def check_settings(settings: list[dict[str, Any]] | None) -> list[Cause]:
    """Katib's ``ValidateAlgorithmSettings`` for pbt, one cause per problem with its path.

    Katib requires ``suggestion_trial_dir`` too; here it defaults to Katib's
    ``/var/log/katib/checkpoints/`` (the value Katib's UI fills in) and must be absolute:
    it is where the checkpoint volume is mounted in each trial.
    """
    base = "spec.algorithm.algorithmSettings"
    causes: list[Cause] = []
    seen: dict[str, str] = {}
    for i, setting in enumerate(settings or []):
        name, value = setting.get("name", ""), str(setting.get("value", ""))
        path = f"{base}[{i}]"
        seen[name] = value
        if name not in SETTINGS:
            causes.append(
                Cause(
                    f"{path}.name",
                    f"unknown setting {name!r} for algorithm pbt; valid: {', '.join(SETTINGS)}",
                    "FieldValueNotSupported",
                )
            )
            continue
        problem = _setting_problem(name, value)
        if problem:
            causes.append(Cause(f"{path}.value", problem))
    missing = [k for k in REQUIRED if k not in seen]
    if missing:
        causes.append(
            Cause(base, f"Required params missing: {', '.join(missing)}", "FieldValueRequired")
        )
    return causes


def _setting_problem(name: str, value: str) -> str | None:
    if name == "suggestion_trial_dir":
        parts = value.split("/")
        if not value.startswith("/") or ".." in parts or "\0" in value:
            return "suggestion_trial_dir must be an absolute path without '..'"
        return None
    if name == "n_population":
        try:
            ok = int(value) >= MIN_POPULATION
        except ValueError:
            ok = False
        return None if ok else f"Param(n_population) should be >= {MIN_POPULATION}"
    number = _number(value)
    if name == "truncation_threshold" and (number is None or not 0 <= number <= 1):
        return "Param(truncation_threshold) should be between 0 and 1, inclusive"
    if name == "resample_probability" and (number is None or not 0 <= number <= 1):
        return (
            "Param(resample_probability) should be null to perturb at 0.8 or 1.2, "
            "or be between 0 and 1, inclusive, to resample"
        )
    return None


def _number(value: str) -> float | None:
    try:
        out = float(value)
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def trial_dir(settings: dict[str, str]) -> str:
    return settings.get("suggestion_trial_dir") or DEFAULT_TRIAL_DIR


# ------------------------------------------------------------------------------ sampling
def sample(param: dict[str, Any], rng: random.Random) -> Any:
    """A value drawn uniformly from Katib's grid for the parameter (min..max by step, or
    the list); a double without a step is drawn from [min, max] (on a log scale for the
    log distributions)."""
    fs, ptype = param["feasibleSpace"], param["parameterType"]
    if ptype not in ("double", "int"):
        return rng.choice(list(fs["list"]))
    lo, hi = float(fs["min"]), float(fs["max"])
    if ptype == "int":
        stride = max(int(float(fs.get("step") or 1)), 1)
        return rng.randrange(int(lo), int(hi) + 1, stride)
    if fs.get("step"):
        step = float(fs["step"])
        return round(lo + rng.randrange(math.floor((hi - lo) / step + 1e-9) + 1) * step, 12)
    if fs.get("distribution") in ("logUniform", "logNormal"):
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return rng.uniform(lo, hi)


def perturb(param: dict[str, Any], value: Any, rng: random.Random) -> Any:
    """Katib's explore step: numbers times 0.8 or 1.2 (ints truncated) within [min, max];
    list values move one place up or down (past the end back to the start)."""
    fs, ptype = param["feasibleSpace"], param["parameterType"]
    factor = rng.choice(PERTURB_FACTORS)
    if ptype == "int":
        return int(max(float(fs["min"]), min(float(fs["max"]), int(int(value) * factor))))
    if ptype == "double":
        return max(float(fs["min"]), min(float(fs["max"]), round(float(value) * factor, 12)))
    choices = list(fs["list"])
    index = choices.index(value) + rng.choice((-1, 1))
    return choices[0] if index >= len(choices) else choices[index]


def quantile(values: list[float], q: float) -> float:
    """numpy's default (linear) quantile, as Katib computes the truncation bounds."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def seed_for(base: int, draw: int) -> int:
    digest = hashlib.blake2b(f"pbt:{base}:{draw}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


# ------------------------------------------------------------------------------ population
class Member(Protocol):
    """What PBT reads of a study row (``algorithms.StudyRow``)."""

    number: int
    trial_name: str
    params: dict[str, Any]
    system_attrs: dict[str, Any]
    state: str
    value: float | None


Job = dict[str, Any]  # {"params", "generation", "parent"}: a trial still to suggest


class Population:
    """One experiment's PBT bookkeeping, rebuilt from its rows and ``state["pbt"]``."""

    def __init__(
        self,
        spec: dict[str, Any],
        rows: Iterable[Member],
        state: dict[str, Any],
        base_seed: int,
    ) -> None:
        settings = {
            s["name"]: str(s.get("value", ""))
            for s in spec["algorithm"].get("algorithmSettings") or []
        }
        self.params: list[dict[str, Any]] = spec["parameters"]
        self.size = int(settings["n_population"])
        self.threshold = float(settings["truncation_threshold"])
        raw = settings.get("resample_probability")
        self.resample = float(raw) if raw not in (None, "", "None") else None
        self.sign = 1.0 if spec["objective"]["type"] == "maximize" else -1.0
        self.rows = {r.trial_name: r for r in rows}
        saved = state.get("pbt") or {}
        self.epoch: int = int(saved.get("epoch", 0))
        self.draws: int = int(saved.get("draws", 0))
        self.pending: list[Job] = [dict(j) for j in saved.get("pending", [])]
        self.rng = random.Random(seed_for(base_seed, self.draws))
        if "pbt" not in state:  # Katib seeds the whole first generation at once
            self._seed(self.size)

    def to_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "draws": self.draws + 1, "pending": self.pending}

    # -- outcomes
    def record(self, row: Member) -> None:
        """A trial finished: into the current pool, or (failed, killed) queued again."""
        if row.state in ("COMPLETE", "PRUNED") and row.value is not None:
            row.system_attrs = {**row.system_attrs, POOL: self.epoch}
            return
        self.pending.append(
            {
                "params": dict(row.params),
                "generation": int(row.system_attrs.get(GENERATION, 0)),
                "parent": row.system_attrs.get(PARENT),
            }
        )

    def pool(self, epoch: int) -> list[Member]:
        members = [r for r in self.rows.values() if r.system_attrs.get(POOL) == epoch]
        return sorted(members, key=lambda r: r.number)

    # -- jobs
    def take(self, count: int) -> list[Job]:
        """Up to ``count`` jobs, generating more first when the queue is short (Katib)."""
        if count <= 0:
            return []
        if len(self.pending) < count:
            self._generate(count)
        taken, self.pending = self.pending[:count], self.pending[count:]
        return taken

    def _seed(self, count: int) -> None:
        for _ in range(count):
            params = {p["name"]: sample(p, self.rng) for p in self.params}
            self.pending.append({"params": params, "generation": 0, "parent": None})

    def _generate(self, count: int) -> None:
        current = self.pool(self.epoch)
        if len(current) <= self.size:
            if self.epoch == 0:  # no generation bred yet: more random members
                self._seed(count)
                return
            self._breed(self.pool(self.epoch - 1), count)
            return
        self._breed(current, self.size)
        self.epoch += 1  # current becomes previous, a new current starts empty

    def _breed(self, pool: list[Member], count: int) -> None:
        scores = {r.trial_name: self.sign * float(r.value or 0.0) for r in pool}
        lower = quantile(list(scores.values()), self.threshold)
        upper = quantile(list(scores.values()), 1 - self.threshold)
        exploit = [r for r in pool if scores[r.trial_name] < lower]
        explore = [r for r in pool if scores[r.trial_name] >= lower]
        top = [r for r in pool if scores[r.trial_name] >= upper]
        self.rng.shuffle(exploit)
        self.rng.shuffle(explore)
        exploit = exploit[: int(count * self.threshold)]
        explore = explore[: count - len(exploit)]
        for _ in exploit:  # the weak member is replaced by a copy of a strong one
            donor = self.rng.choice(top)
            self.pending.append(self._child(donor, dict(donor.params)))
        for member in explore:
            params = {}
            for p in self.params:
                value = member.params[p["name"]]
                if self.resample is None:
                    params[p["name"]] = perturb(p, value, self.rng)
                elif self.rng.random() < self.resample:
                    params[p["name"]] = sample(p, self.rng)
                else:
                    params[p["name"]] = value
            self.pending.append(self._child(member, params))

    @staticmethod
    def _child(parent: Member, params: dict[str, Any]) -> Job:
        generation = int(parent.system_attrs.get(GENERATION, 0)) + 1
        return {"params": params, "generation": generation, "parent": parent.trial_name}


def labels(job: Job) -> dict[str, str]:
    """Katib's labels for the job's trial."""
    out = {GENERATION_LABEL: str(job["generation"])}
    if job.get("parent"):
        out[PARENT_LABEL] = str(job["parent"])
    return out


def system_attrs(job: Job) -> dict[str, Any]:
    return {GENERATION: job["generation"], PARENT: job.get("parent")}
