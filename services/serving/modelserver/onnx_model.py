"""The ``onnx`` format: a ``model.onnx`` run by onnxruntime on the CPU.

KServe serves ONNX through Triton (V2 only); this answers as Triton's onnxruntime backend
does: V2 inputs are matched to the graph's inputs by name (a single-input graph takes one
tensor under any name, as KServe's V1 clients send ``input-0``), each is cast to the
input's declared element type, and every graph output comes back under its own name and
dtype (``outputs`` in the request picks some). Outputs that are not tensors (skl2onnx's
ZipMap, a list of dicts) cannot be V2 tensors and are left out: export classifiers with
``options={"zipmap": False}``. V1 ``predictions`` are the first output's rows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .loaders import ModelLoadError, Tensors, find_model_file, import_library

log = logging.getLogger(__name__)

ONNX_FILES = ("model.onnx",)
#: ONNX element types (as onnxruntime names them) -> (numpy dtype, OIP datatype).
ELEMENT_TYPES: dict[str, tuple[Any, str]] = {
    "tensor(float)": (np.float32, "FP32"),
    "tensor(double)": (np.float64, "FP64"),
    "tensor(float16)": (np.float16, "FP16"),
    "tensor(int8)": (np.int8, "INT8"),
    "tensor(int16)": (np.int16, "INT16"),
    "tensor(int32)": (np.int32, "INT32"),
    "tensor(int64)": (np.int64, "INT64"),
    "tensor(uint8)": (np.uint8, "UINT8"),
    "tensor(uint16)": (np.uint16, "UINT16"),
    "tensor(uint32)": (np.uint32, "UINT32"),
    "tensor(uint64)": (np.uint64, "UINT64"),
    "tensor(bool)": (np.bool_, "BOOL"),
    "tensor(string)": (object, "BYTES"),
}


def _shape(dims: list[Any]) -> list[int]:
    """A graph's shape with symbolic or unknown dimensions as -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in dims]


class OnnxModel:
    """An onnxruntime ``InferenceSession`` over the model file."""

    in_thread = False

    def __init__(self, name: str, model_dir: Path, nthread: int = 1) -> None:
        ort = import_library("onnxruntime", "onnx")
        self.name = name
        path = find_model_file(model_dir, ONNX_FILES, (".onnx",))
        options = ort.SessionOptions()
        options.intra_op_num_threads = nthread
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own pybind11 error types
            raise ModelLoadError(f"{path} is not an ONNX model onnxruntime runs: {exc}") from None
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        log.info("loaded onnx model %s from %s (inputs %s)", name, path, list(self.inputs))

    def _feed(self, inputs: Tensors) -> dict[str, np.ndarray]:
        names = list(self.inputs)
        if len(inputs) == 1 and len(names) == 1:
            pairs = [(names[0], inputs[0][1])]
        else:
            unknown = [n for n, _ in inputs if n not in self.inputs]
            missing = [n for n in names if n not in {m for m, _ in inputs}]
            if unknown or missing:
                raise ValueError(
                    f"the model's inputs are {names}; got {[n for n, _ in inputs]}"
                    + (f" (missing {missing})" if missing else "")
                )
            pairs = list(inputs)
        feed = {}
        for name, array in pairs:
            dtype = ELEMENT_TYPES.get(self.inputs[name].type, (None, ""))[0]
            if dtype is not None and array.dtype != dtype:
                if (dtype is object) != (array.dtype.kind in "OSU"):
                    raise ValueError(f"input {name}: the model takes {self.inputs[name].type}")
                array = array.astype(dtype)
            feed[name] = array
        return feed

    def _run(self, feed: dict[str, np.ndarray]) -> list[Any]:
        try:
            return list(self.session.run(None, feed))
        except Exception as exc:  # InvalidArgument and friends: what was sent does not fit
            raise ValueError(str(exc).strip().splitlines()[0]) from None

    def infer(self, inputs: Tensors) -> Tensors:
        results = self._run(self._feed(inputs))
        return [
            (name, value)
            for name, value in zip(self.outputs, results, strict=True)
            if isinstance(value, np.ndarray)
        ]

    def predict_array(self, inputs: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(self._feed([("input-0", inputs)]))[0])

    def predict(self, instances: list[Any]) -> list[Any]:
        if instances and isinstance(instances[0], dict):
            # Objects keyed by input name: one tensor per input, a row per instance.
            columns = {k for inst in instances for k in inst}
            tensors = [(k, np.asarray([inst.get(k) for inst in instances])) for k in columns]
            first = self._run(self._feed(tensors))[0]
        else:
            first = self._run(self._feed([("input-0", np.asarray(instances))]))[0]
        return first.tolist() if isinstance(first, np.ndarray) else list(first)

    def metadata(self) -> dict[str, Any]:
        def tensor(node: Any) -> dict[str, Any]:
            datatype = ELEMENT_TYPES.get(node.type, (None, node.type))[1]
            return {"name": node.name, "datatype": datatype, "shape": _shape(list(node.shape))}

        return {
            "inputs": [tensor(i) for i in self.inputs.values()],
            "outputs": [tensor(o) for o in self.session.get_outputs()],
        }
