"""A toy PBT trial in the shape of Katib's simple-pbt (examples/v1beta1/trial-images/simple-pbt).

The model is one number, its accuracy (0..100), trained with a learning rate ``--lr`` for
``--epochs`` epochs. The best learning rate changes as the accuracy grows (a triangle wave:
0.001 at 0, 0.01 at 50, 0.001 again at 100), so no fixed rate trains well for long: a
population that keeps the best checkpoints and adapts their rates does.

Like Katib's trial it resumes from ``training.ckpt`` in the ``--checkpoint`` directory (the
checkpoint volume, a copy of its parent's directory in a later generation) and saves its
state there when done; JSON here, where Katib's pickles. It prints what it resumed from
(``resumed-step``, ``resumed-accuracy``) and the objective, ``Validation-accuracy``. Stdlib
only, no downloads, a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from typing import Any

MIDPOINT = 50.0  # the best learning rate rises until this accuracy, then falls
TOLERANCE = 3.0  # a rate off by more than this factor stops helping
NOISE = 0.5


def best_lr(accuracy: float) -> float:
    if accuracy < MIDPOINT:
        optimal = 0.01 * accuracy / MIDPOINT
    else:
        optimal = 0.01 - 0.01 * (accuracy - MIDPOINT) / MIDPOINT
    return min(0.01, max(0.001, optimal))


def train_step(accuracy: float, lr: float, rng: random.Random) -> float:
    """One epoch: the accuracy grows fastest at the best rate, falls when far above it."""
    optimal = best_lr(accuracy)
    q_err = max(lr, optimal) / (min(lr, optimal) + 1e-12)
    if q_err < TOLERANCE:
        accuracy += (1.0 / q_err) * rng.random()
    elif lr > optimal:
        accuracy -= (q_err - TOLERANCE) * rng.random()
    accuracy += NOISE * rng.gauss(0.0, 1.0)
    return max(0.0, min(100.0, accuracy))


def main() -> None:
    parser = argparse.ArgumentParser(description="PBT toy trial")
    parser.add_argument("--lr", type=float, default=0.0001)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--checkpoint", type=str, default="/var/log/katib/checkpoints/")
    opt = parser.parse_args()

    path = os.path.join(opt.checkpoint, "training.ckpt")
    state: dict[str, Any] = {"step": 1, "accuracy": 0.0, "trial": None}
    if os.path.exists(path):
        with open(path) as f:
            state = json.load(f)
    else:
        os.makedirs(opt.checkpoint, exist_ok=True)
    print(f"resumed-from={state.get('trial')}")
    print(f"resumed-step={state['step']}")
    print(f"resumed-accuracy={state['accuracy'] / 100:.6f}")

    rng = random.Random()
    accuracy, step = float(state["accuracy"]), int(state["step"])
    for _ in range(opt.epochs):
        accuracy = train_step(accuracy, opt.lr, rng)
        step += 1
    with open(path, "w") as f:
        json.dump(
            {"step": step, "accuracy": accuracy, "trial": os.environ.get("KATIB_TRIAL_NAME")}, f
        )
    print(f"epoch {step}:\nlr={opt.lr:0.4f}")
    print(f"step={step}")
    print(f"Validation-accuracy={accuracy / 100:.6f}")


if __name__ == "__main__":
    main()
