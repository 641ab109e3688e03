"""A stand-in for Katib's mxnet-mnist trial: same arguments, same log lines, no dataset.

It "trains" for ``--num-epochs`` epochs and prints, per epoch, lines in the shape the
mxnet example prints (``Epoch[0] Train-accuracy=0.91``, ``Epoch[0] Validation-accuracy=0.90``),
which Katib's default StdOut filter picks up. Accuracy is a smooth function of the
hyperparameters (best near lr=0.02, 3-4 layers, adam), so search algorithms have something
to find, and it never reaches 0.99.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import time


def accuracy(lr: float, layers: int, optimizer: str, epoch: int, seed: int) -> float:
    base = {"adam": 0.93, "sgd": 0.90, "ftrl": 0.86}.get(optimizer, 0.8)
    shape = math.exp(-(((lr - 0.02) / 0.012) ** 2)) * 0.04 - 0.01 * abs(layers - 3.5)
    progress = 1 - 0.5 ** (epoch + 1)
    noise = random.Random(seed * 1000 + epoch).uniform(-0.003, 0.003)
    return max(0.0, min(0.985, (base + shape) * progress + noise))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--epoch-seconds", type=float, default=0.05)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    log = logging.getLogger("mnist")
    seed = int(args.lr * 1e6) + args.num_layers * 7 + len(args.optimizer)
    for epoch in range(args.num_epochs):
        time.sleep(args.epoch_seconds)
        train = accuracy(args.lr, args.num_layers, args.optimizer, epoch, seed) + 0.01
        valid = accuracy(args.lr, args.num_layers, args.optimizer, epoch, seed + 1)
        log.info("Epoch[%d] Train-accuracy=%.6f", epoch, min(train, 0.999))
        log.info("Epoch[%d] Validation-accuracy=%.6f", epoch, valid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
