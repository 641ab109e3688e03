"""Katib's TensorFlowEvent collector: scalar summaries from tfevents files, without TensorFlow.

A trial writes event files (``tf.summary``, ``torch.utils.tensorboard.SummaryWriter``,
``tensorboardX``) under ``source.fileSystemPath`` (a directory, default
``/var/log/katib/tfevent/``), which is the trial's own metrics volume. When the trial has
finished, the automl service runs this module as a short job that mounts that volume
read-only (``python -m services.automl.tfevent DIR METRIC...``): Katib does the same with
its collector container beside the trial, and it keeps the runtime seam to what it has
(a workload reads the volume; no directory listing, no host path). It prints one JSON line
per matching value, ``{"<metric>": value, "step": n, "timestamp": wall_time}``, which
:func:`services.automl.collector.parse_json_lines` reads from the job's log.

Files are read with TensorBoard's ``EventFileLoader`` (it turns legacy ``simple_value``
scalars into tensors, as TensorBoard does). A metric matches as in Katib's
tfevent_loader.py: the tag starts with the metric name's last ``/`` component, and when the
name has a directory part (``test/accuracy``) the event file's directory must end with it.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np


def event_files(directory: str) -> Iterator[str]:
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if "tfevents" in name:
                yield os.path.join(root, name)


def matches(metric: str, tag: str, file_dir: str) -> bool:
    parts = metric.split("/")
    if not tag.startswith(parts[-1]):
        return False
    return len(parts) < 2 or file_dir.rstrip("/").endswith(os.path.dirname(metric))


def _scalar(value: Any) -> float | None:
    from tensorboard.util import tensor_util

    # str() of the numpy scalar, as Katib's str(tf.make_ndarray(...)): a float32 0.6 is
    # reported as 0.6, not 0.6000000238418579.
    if value.HasField("tensor"):
        array = tensor_util.make_ndarray(value.tensor)
        if array.size != 1 or array.dtype.kind not in "fiu":
            return None
        number = float(str(array.reshape(())[()]))
    elif value.HasField("simple_value"):
        number = float(str(np.float32(value.simple_value)))
    else:
        return None
    return number if math.isfinite(number) else None


def read_scalars(directory: str, metrics: list[str]) -> list[dict[str, Any]]:
    """Every value of ``metrics`` in the event files under ``directory``, oldest first."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    records: list[tuple[float, int, dict[str, Any]]] = []
    for path in event_files(directory):
        file_dir = os.path.dirname(path)
        try:
            events = list(EventFileLoader(path).Load())
        except Exception as exc:  # a truncated or foreign file: Katib skips it too
            print(f"skipping {path}: {exc}", file=sys.stderr)
            continue
        for event in events:
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                for metric in metrics:
                    if not matches(metric, value.tag, file_dir):
                        continue
                    number = _scalar(value)
                    if number is not None:
                        record = {metric: number, "step": event.step, "timestamp": event.wall_time}
                        records.append((event.wall_time, event.step, record))
    records.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in records]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m services.automl.tfevent DIR METRIC...", file=sys.stderr)
        return 2
    for record in read_scalars(argv[0], argv[1:]):
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
