"""A toy ENAS trial: Katib's ``--architecture`` and ``--nn_config`` in, a validation accuracy out.

It reads the two arguments as Katib's ENAS trial program (RunTrial.py) does: single quotes
turned into double quotes, then JSON; and wires the layers as Katib's ModelConstructor does:
layer ``l`` takes the previous layer's output plus the outputs of every earlier layer whose
skip bit is set (layer 0 being the input), applies its operation (looked up by id in
``nn_config.embedding``) and hands on its output. The task is local and small (numpy only, no
downloads, well under a second): 1-D signals of length ``input_sizes[0]`` are labelled, one
label per layer, by a hidden network of the same kind with a head on every layer; the
candidate's layer ``l`` predicts label ``l`` through the hidden head's projection (only its
sign and class boundaries fitted on the training half). The closer the candidate's layers are
to the hidden network's, the higher the mean accuracy on the validation half (0.99 for the
hidden network itself, about 0.78 for the median architecture of the example's search
space). It prints ``Validation-Accuracy=<value>``.

Operations: ``convolution`` (``filter_size``: ReLU, then a fixed difference kernel) and
``reduction`` (``reduction_type`` max_pooling or avg_pooling, ``pool_size``), stride 1.
"""

import argparse
import json

import numpy as np

# The hidden network, one (operation type, parameters, skip from layer) per layer, repeated
# when the search has more layers.
HIDDEN = [
    ("convolution", {"filter_size": "5"}, None),
    ("reduction", {"reduction_type": "max_pooling", "pool_size": 3}, 0),
    ("reduction", {"reduction_type": "avg_pooling", "pool_size": 5}, 1),
]
SAMPLES = 1000


def apply(op: dict, x: np.ndarray) -> np.ndarray:
    """One operation on a batch of signals (rows), keeping their length."""
    params = op["opt_params"]
    if op["opt_type"] == "convolution":
        k = int(params.get("filter_size", 3))
        kernel = np.linspace(-1.0, 1.0, k)
        x = np.maximum(x, 0.0)
        padded = np.pad(x, ((0, 0), (k // 2, k // 2)), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, k, axis=1)
        return windows @ kernel
    k = int(params.get("pool_size", 2))
    padded = np.pad(x, ((0, 0), (k // 2, k - 1 - k // 2)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, k, axis=1)
    if params.get("reduction_type", "max_pooling") == "max_pooling":
        return windows.max(axis=2)
    return windows.mean(axis=2)


def forward(architecture: list, embedding: dict, x: np.ndarray) -> list[np.ndarray]:
    """Katib's layer wiring, with concatenation as an average (the signals are 1-D); the
    outputs of every layer, the input first."""
    layers = [x]
    for index, layer in enumerate(architecture, start=1):
        inputs = [layers[index - 1]]
        inputs += [layers[i] for i in range(index - 1) if layer[1 + i] == 1]
        layers.append(apply(embedding[str(layer[0])], np.mean(inputs, axis=0)))
    return layers


def hidden_network(num_layers: int) -> tuple[list, dict]:
    architecture, embedding = [], {}
    for layer in range(num_layers):
        kind, params, skip = HIDDEN[layer % len(HIDDEN)]
        embedding[str(layer)] = {"opt_type": kind, "opt_params": params}
        architecture.append([layer] + [int(i == skip) for i in range(layer)])
    return architecture, embedding


def evaluate(architecture: list, nn_config: dict) -> float:
    """The candidate's validation accuracy (deterministic: the data has a fixed seed).

    The hidden network has a head on every layer (deep supervision): layer ``l``'s output,
    through a fixed projection, gives label ``l``. The candidate's layer ``l`` predicts label
    ``l`` through the same projection with only its sign and class boundaries fitted, so the
    accuracy (the mean over the heads) measures how close the candidate's layers are to the
    hidden network's, not how much a classifier can make of any features.
    """
    length, classes = nn_config["input_sizes"][0], nn_config["output_sizes"][-1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, length)).cumsum(axis=1) / np.sqrt(length)
    projections = rng.normal(size=(nn_config["num_layers"], length))
    hidden = forward(*hidden_network(nn_config["num_layers"]), x)[1:]
    candidate = forward(architecture, nn_config["embedding"], x)[1:]
    half, quantiles = SAMPLES // 2, np.linspace(0, 1, classes + 1)[1:-1]
    correct = []
    for target, output, projection in zip(hidden, candidate, projections, strict=True):
        score, feature = target @ projection, output @ projection
        labels = np.searchsorted(np.quantile(score, quantiles), score)
        # The read-out fitted on the training half: the feature's orientation and the class
        # boundaries (its quantiles), applied to the validation half.
        if np.corrcoef(feature[:half], score[:half])[0, 1] < 0:
            feature = -feature
        predicted = np.searchsorted(np.quantile(feature[:half], quantiles), feature[half:])
        correct.append(np.mean(predicted == labels[half:]))
    return float(np.mean(correct))


def main() -> None:
    parser = argparse.ArgumentParser(description="TrainingContainer")
    parser.add_argument("--architecture", type=str, default="")
    parser.add_argument("--nn_config", type=str, default="")
    args = parser.parse_args()
    architecture = json.loads(args.architecture.replace("'", '"'))
    nn_config = json.loads(args.nn_config.replace("'", '"'))
    print(f">>> arch received by trial\n{architecture}")
    print(f">>> nn_config received by trial\n{nn_config}")
    print(f"Validation-Accuracy={evaluate(architecture, nn_config):.4f}")


if __name__ == "__main__":
    main()
