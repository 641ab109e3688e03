"""Katib's ENAS suggestion: an LSTM controller that samples architectures, trained by REINFORCE.

The controller follows Katib's (pkg/suggestion/v1beta1/nas/enas/Controller.py, after Pham et
al., 2018): for each layer an LSTM step picks an operation (a softmax over the expanded
search space, ``logits / temperature`` then ``tanh_const * tanh``), a second step embeds it,
and from the second layer on an attention over the earlier layers' states decides, for each
earlier layer, whether a skip connection reaches this one. Training is policy gradient with
a moving-average baseline: reward = objective (negated when minimizing) + entropy_weight *
the sample's entropy, baseline <- baseline - (1 - baseline_decay) * (baseline - reward), loss
= -log p(architecture) * (reward - baseline) + skip_weight * KL(skip probabilities ||
skip_target), ``controller_train_steps`` Adam steps each time trials finish.

Two deliberate differences from Katib: the gradient is taken on the architectures the
finished trials actually ran (Katib feeds the mean objective to freshly drawn samples), and
the controller is not a file in the suggestion pod: its weights, Adam moments, step and
baseline are returned as a study attribute that the service stores with the study, so a
restarted service continues with exactly the controller it had (and each suggestion draws
from a generator seeded by the experiment's seed and the trial number, so it is the same
suggestion too). torch is imported only when the controller runs (in the worker thread).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.common.errors import Cause

if TYPE_CHECKING:  # numpy and torch load with the controller, not with the validation
    import numpy as np

log = logging.getLogger(__name__)

CONTROLLER_ATTR = "shipyard:enas_controller"

# Katib's defaults, in Katib's order.
DEFAULTS: dict[str, Any] = {
    "controller_hidden_size": 64,
    "controller_temperature": 5.0,
    "controller_tanh_const": 2.25,
    "controller_entropy_weight": 1e-5,
    "controller_baseline_decay": 0.999,
    "controller_learning_rate": 5e-5,
    "controller_skip_target": 0.4,
    "controller_skip_weight": 0.8,
    "controller_train_steps": 50,
    "controller_log_every_steps": 10,
}
# Katib's validator: type and range. Floats must lie in (low, high], ints in [low, inf).
_RANGES: dict[str, tuple[Callable[[str], Any], float, float]] = {
    "controller_hidden_size": (int, 1, math.inf),
    "controller_temperature": (float, 0.0, math.inf),
    "controller_tanh_const": (float, 0.0, math.inf),
    "controller_entropy_weight": (float, 0.0, math.inf),
    "controller_baseline_decay": (float, 0.0, 1.0),
    "controller_learning_rate": (float, 0.0, 1.0),
    "controller_skip_target": (float, 0.0, 1.0),
    "controller_skip_weight": (float, 0.0, math.inf),
    "controller_train_steps": (int, 1, math.inf),
    "controller_log_every_steps": (int, 1, math.inf),
}
# Settings that may be "None" (the term is then left out, as in Katib).
NONE_ALLOWED = (
    "controller_temperature",
    "controller_tanh_const",
    "controller_entropy_weight",
    "controller_skip_weight",
)
# Adam as TensorFlow's AdamOptimizer (Katib's): beta1, beta2, epsilon.
_ADAM = (0.9, 0.999, 1e-8)
_INIT = 0.01  # Katib's uniform initializer range
_THREADS_LOCK = threading.Lock()


def _bound(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:g}"


def setting_problem(name: str, value: str) -> str | None:
    """Katib's enas ``ValidateAlgorithmSettings`` rule for one setting, as a message."""
    if name not in _RANGES:
        return f"unknown setting {name!r} for algorithm enas; valid: {', '.join(DEFAULTS)}"
    if value == "None" and name in NONE_ALLOWED:
        return None
    parse, low, high = _RANGES[name]
    kind = "int" if parse is int else "float"
    try:
        number = parse(value)
    except ValueError:
        return f"{name} must be {kind} type, not {value!r}"
    if parse is float:
        if not math.isfinite(number) or number <= low or number > high:
            return f"{name}: {value} must be in range ({_bound(low)}, {_bound(high)}]"
    elif number < low:
        return f"{name}: {value} must be in range [{_bound(low)}, {_bound(high)})"
    return None


def check_settings(settings: list[dict[str, Any]]) -> list[Cause]:
    causes = []
    for i, s in enumerate(settings):
        problem = setting_problem(s["name"], str(s.get("value", "")))
        if problem:
            field = "name" if problem.startswith("unknown setting") else "value"
            causes.append(Cause(f"spec.algorithm.algorithmSettings[{i}].{field}", problem))
    return causes


def parse_settings(settings: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Katib's defaults overridden by ``algorithmSettings`` (validated), ``"None"`` -> None."""
    out = dict(DEFAULTS)
    for s in settings or []:
        value = str(s.get("value", ""))
        out[s["name"]] = None if value == "None" else _RANGES[s["name"]][0](value)
    return out


def organize(arc: list[int], num_layers: int) -> list[list[int]]:
    """Katib's ``architecture``: per layer ``[operation, skip from layer 0, ..., layer-1]``."""
    out, at = [], 0
    for layer in range(num_layers):
        out.append(arc[at : at + layer + 1])
        at += layer + 1
    return out


def _shapes(hidden: int, num_ops: int) -> dict[str, tuple[int, int]]:
    return {
        "w_lstm": (2 * hidden, 4 * hidden),
        "g_emb": (1, hidden),
        "w_emb": (num_ops, hidden),
        "w_soft": (hidden, num_ops),
        "attn_w_1": (hidden, hidden),
        "attn_w_2": (hidden, hidden),
        "attn_v": (hidden, 1),
    }


@dataclass
class TrainStats:
    loss: float
    entropy: float
    baseline: float
    skip_rate: float


class Controller:
    """The ENAS controller of one experiment: sample architectures, learn from rewards.

    Weights live as float32 NumPy arrays between calls (so that ``dump``/``load`` are exact);
    each ``sample`` or ``train`` turns them into torch tensors for the computation.
    """

    def __init__(self, num_layers: int, num_ops: int, settings: dict[str, Any], seed: int) -> None:
        import numpy as np

        self.num_layers, self.num_ops, self.settings = num_layers, num_ops, settings
        hidden = int(settings["controller_hidden_size"])
        rng = np.random.default_rng(seed)
        self.params = {
            name: rng.uniform(-_INIT, _INIT, size=shape).astype(np.float32)
            for name, shape in _shapes(hidden, num_ops).items()
        }
        self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.step = 0
        self.baseline = 0.0

    # ---------------------------------------------------------------- persistence
    def dump(self) -> dict[str, Any]:
        """JSON-ready state: weights and Adam moments as zlib'd base64 float32 bytes."""
        arrays = [self.params, self.m, self.v]
        blob = b"".join(a[k].tobytes() for a in arrays for k in self.params)
        return {
            "num_layers": self.num_layers,
            "num_operations": self.num_ops,
            "hidden_size": int(self.settings["controller_hidden_size"]),
            "train_step": self.step,
            "baseline": self.baseline,
            "tensors": base64.b64encode(zlib.compress(blob)).decode(),
        }

    @classmethod
    def load(
        cls,
        saved: dict[str, Any] | None,
        num_layers: int,
        num_ops: int,
        settings: dict[str, Any],
        seed: int,
    ) -> Controller:
        """The saved controller, or a fresh one (seeded) if none fits this search space."""
        import numpy as np

        out = cls(num_layers, num_ops, settings, seed)
        hidden = int(settings["controller_hidden_size"])
        if not saved or (saved["num_layers"], saved["num_operations"], saved["hidden_size"]) != (
            num_layers,
            num_ops,
            hidden,
        ):
            return out
        flat = np.frombuffer(zlib.decompress(base64.b64decode(saved["tensors"])), np.float32)
        at = 0
        for target in (out.params, out.m, out.v):
            for name, shape in _shapes(hidden, num_ops).items():
                size = shape[0] * shape[1]
                target[name] = flat[at : at + size].reshape(shape).copy()
                at += size
        out.step, out.baseline = int(saved["train_step"]), float(saved["baseline"])
        return out

    # ------------------------------------------------------------------ policy
    def _squash(self, logits: Any) -> Any:
        import torch

        temperature = self.settings["controller_temperature"]
        tanh_const = self.settings["controller_tanh_const"]
        if temperature is not None:
            logits = logits / temperature
        if tanh_const is not None:
            logits = tanh_const * torch.tanh(logits)
        return logits

    def _run(
        self, w: dict[str, Any], arc: list[int] | None, rng: np.random.Generator | None
    ) -> tuple[list[int], Any, float, Any]:
        """One pass over the layers, sampling (``rng``) or following ``arc``.

        Returns the flat architecture, its log-probability, its entropy term (Katib's
        sum of -log p * p over the decisions) and the mean skip penalty.
        """
        import numpy as np
        import torch
        import torch.nn.functional as F

        target = float(self.settings["controller_skip_target"])
        skip_targets = torch.tensor([1.0 - target, target])
        hidden = w["g_emb"].shape[1]
        c = h = torch.zeros(1, hidden)
        inputs = w["g_emb"]
        all_h: list[Any] = []
        all_h_w: list[Any] = []
        out: list[int] = []
        log_probs, entropy, penalties = [], 0.0, []

        def lstm(x: Any, c: Any, h: Any) -> tuple[Any, Any]:
            i, f, o, g = torch.cat([x, h], dim=1).matmul(w["w_lstm"]).chunk(4, dim=1)
            c = torch.sigmoid(i) * torch.tanh(g) + torch.sigmoid(f) * c
            return c, torch.sigmoid(o) * torch.tanh(c)

        def choose(logits: Any) -> list[int]:
            """One pick per row of ``logits``: drawn with ``rng`` or read from ``arc``."""
            if arc is not None:
                picked = arc[len(out) : len(out) + logits.shape[0]]
            else:
                assert rng is not None
                probs = torch.softmax(logits.detach().double(), dim=1).numpy()
                cumulative = probs.cumsum(axis=1)
                draws = rng.random(logits.shape[0])
                picked = [
                    min(int(np.searchsorted(row, u * row[-1], side="right")), len(row) - 1)
                    for row, u in zip(cumulative, draws, strict=True)
                ]
            out.extend(picked)
            return picked

        for layer in range(self.num_layers):
            c, h = lstm(inputs, c, h)
            logits = self._squash(h.matmul(w["w_soft"]))
            (op,) = choose(logits)
            log_p = F.log_softmax(logits, dim=1)[0, op]
            log_probs.append(log_p)
            entropy += float(-log_p.detach() * log_p.detach().exp())
            c, h = lstm(w["w_emb"][op : op + 1], c, h)
            if layer > 0:
                query = torch.tanh(h.matmul(w["attn_w_2"]) + torch.cat(all_h_w, dim=0))
                query = query.matmul(w["attn_v"])
                logits = self._squash(torch.cat([-query, query], dim=1))
                skips = choose(logits)
                log_p = F.log_softmax(logits, dim=1)[torch.arange(layer), torch.tensor(skips)]
                log_probs.append(log_p.sum())
                entropy += float((-log_p.detach() * log_p.detach().exp()).sum())
                skip_prob = torch.sigmoid(logits)
                penalties.append((skip_prob * torch.log(skip_prob / skip_targets)).sum())
                mask = torch.tensor([skips], dtype=torch.float32)
                inputs = mask.matmul(torch.cat(all_h, dim=0)) / (1.0 + mask.sum())
            else:
                inputs = w["g_emb"]
            all_h.append(h)
            all_h_w.append(h.matmul(w["attn_w_1"]))
        penalty = torch.stack(penalties).mean() if penalties else torch.zeros(())
        return out, torch.stack(log_probs).sum(), entropy, penalty

    def _tensors(self, grad: bool) -> dict[str, Any]:
        import torch

        return {k: torch.tensor(v, requires_grad=grad) for k, v in self.params.items()}

    def sample(self, seed: int) -> list[int]:
        """A flat architecture drawn from the policy with a generator seeded by ``seed``."""
        import numpy as np
        import torch

        with torch.no_grad():
            arc, _, _, _ = self._run(self._tensors(False), None, np.random.default_rng(seed))
        return arc

    def probabilities(self) -> list[float]:
        """The first layer's operation probabilities (for tests and logs)."""
        import torch

        with torch.no_grad():
            w = self._tensors(False)
            hidden = w["g_emb"].shape[1]
            zero = torch.zeros(1, hidden)
            x = torch.cat([w["g_emb"], zero], dim=1).matmul(w["w_lstm"])
            i, _f, o, g = x.chunk(4, dim=1)
            h = torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))
            return [float(p) for p in torch.softmax(self._squash(h.matmul(w["w_soft"])), dim=1)[0]]

    def train(self, batch: list[tuple[list[int], float]]) -> TrainStats:
        """``controller_train_steps`` policy-gradient steps on (architecture, reward) pairs."""
        import numpy as np
        import torch

        s = self.settings
        entropy_weight = s["controller_entropy_weight"] or 0.0
        skip_weight = s["controller_skip_weight"]
        decay, lr = float(s["controller_baseline_decay"]), float(s["controller_learning_rate"])
        beta1, beta2, eps = _ADAM
        stats = TrainStats(0.0, 0.0, self.baseline, 0.0)
        skips = [a for arc, _ in batch for a in _skip_bits(arc, self.num_layers)]
        stats.skip_rate = sum(skips) / len(skips) if skips else 0.0
        log_every = int(s["controller_log_every_steps"])
        for step in range(1, int(s["controller_train_steps"]) + 1):
            w = self._tensors(True)
            runs = [self._run(w, arc, None) for arc, _ in batch]
            rewards = [r + entropy_weight * run[2] for (_, r), run in zip(batch, runs, strict=True)]
            self.baseline -= (1 - decay) * (self.baseline - sum(rewards) / len(rewards))
            loss = torch.stack(
                [-run[1] * (r - self.baseline) for run, r in zip(runs, rewards, strict=True)]
            ).mean()
            if skip_weight is not None:
                loss = loss + skip_weight * torch.stack([run[3] for run in runs]).mean()
            grads = torch.autograd.grad(loss, list(w.values()))
            self.step += 1
            for (name, value), grad in zip(self.params.items(), grads, strict=True):
                g = grad.numpy()
                self.m[name] = (beta1 * self.m[name] + (1 - beta1) * g).astype(np.float32)
                self.v[name] = (beta2 * self.v[name] + (1 - beta2) * g * g).astype(np.float32)
                m_hat = self.m[name] / (1 - beta1**self.step)
                v_hat = self.v[name] / (1 - beta2**self.step)
                self.params[name] = (value - lr * m_hat / (np.sqrt(v_hat) + eps)).astype(np.float32)
            stats.loss = float(loss.detach())
            stats.entropy = sum(run[2] for run in runs) / len(runs)
            if step % log_every == 0:
                log.debug(
                    "enas controller step %d: loss %.4f entropy %.6f baseline %.4f",
                    self.step,
                    stats.loss,
                    stats.entropy,
                    self.baseline,
                )
        stats.baseline = self.baseline
        return stats


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the controller on one intra-op thread: its tensors are tiny, and on a busy
    machine torch's thread pool costs a hundred times the arithmetic (6 ms a log_softmax
    under load against 0.05 ms on one thread). The setting is process-wide, so controllers
    (of several experiments, in worker threads) take turns: one saves and restores it at a
    time."""
    import torch

    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _skip_bits(arc: list[int], num_layers: int) -> list[int]:
    return [bit for layer in organize(arc, num_layers) for bit in layer[1:]]
