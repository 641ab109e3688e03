"""A toy DARTS trial: Katib's DARTS arguments in, architecture weights learnt, a metric out.

It parses ``--algorithm-settings``, ``--search-space`` and ``--num-layers`` exactly as Katib's
DARTS trial program (run_trial.py) does: single quotes turned into double quotes, then JSON;
every setting read with int() or float(). The task is small and local (numpy only, no
downloads): a 1-D signal passes through ``num-layers`` mixed operations, each a softmax over
the search space's operations (pooling windows, skip connection); gradient descent on the
architecture weights (``alpha_lr``) fits a target made by one hidden architecture. It prints
``Validation-Accuracy=<value>`` and ``Best-Genotype=<operations>``.
"""

import argparse
import json

import numpy as np


def apply(op: str, x: np.ndarray) -> np.ndarray:
    if op == "skip_connection":
        return x
    kind, size = op.rsplit("_", 1)
    k = int(size.split("x")[0])
    padded = np.pad(x, k // 2, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, k)[: len(x)]
    return windows.max(axis=1) if "max" in kind else windows.mean(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description="TrainingContainer")
    parser.add_argument("--algorithm-settings", type=str, default="")
    parser.add_argument("--search-space", type=str, default="")
    parser.add_argument("--num-layers", type=str, default="")
    args = parser.parse_args()
    settings = json.loads(args.algorithm_settings.replace("'", '"'))
    space = json.loads(args.search_space.replace("'", '"'))
    layers = int(args.num_layers)
    epochs, alpha_lr = int(settings["num_epochs"]), float(settings["alpha_lr"])
    decay = float(settings["alpha_weight_decay"])
    batch = int(settings["batch_size"]) if settings["batch_size"] is not None else 32
    print(f"settings={settings}\nsearch-space={space}\nlayers={layers}")

    rng = np.random.default_rng(0)
    hidden = [space[i % len(space)] for i in range(layers)]  # the architecture to find
    alphas = np.zeros((layers, len(space)))

    def forward(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        outs = []
        for layer in range(layers):
            candidates = np.stack([apply(op, x) for op in space])
            outs.append(candidates)
            x = weights[layer] @ candidates
        return x, outs

    for epoch in range(epochs):
        x = rng.normal(size=batch)
        target = x
        for op in hidden:
            target = apply(op, target)
        weights = np.exp(alphas) / np.exp(alphas).sum(axis=1, keepdims=True)
        # Finite differences keep the toy free of autograd; every operation is cheap.
        base = np.mean((forward(x, weights)[0] - target) ** 2)
        grad = np.zeros_like(alphas)
        for i, j in np.ndindex(*alphas.shape):
            bumped = alphas.copy()
            bumped[i, j] += 1e-4
            w = np.exp(bumped) / np.exp(bumped).sum(axis=1, keepdims=True)
            grad[i, j] = (np.mean((forward(x, w)[0] - target) ** 2) - base) / 1e-4
        alphas -= alpha_lr * (grad + decay * alphas)
        print(f"epoch {epoch + 1}/{epochs} loss={base:.5f}")

    genotype = [space[int(j)] for j in alphas.argmax(axis=1)]
    accuracy = float(np.mean([g == h for g, h in zip(genotype, hidden, strict=True)]))
    print(f"Validation-Accuracy={accuracy:.4f}")
    print(f"Best-Genotype={','.join(genotype)}")


if __name__ == "__main__":
    main()
