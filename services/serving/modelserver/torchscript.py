"""The ``pytorch`` format: a TorchScript module (``model.pt``, saved with ``torch.jit.save``).

This is what Triton's libtorch backend serves for KServe's ``pytorch`` format: a scripted or
traced module, no Python class of the user's needed to load it (TorchServe's ``.mar``
archives are not read). It runs on the CPU in ``torch.inference_mode`` with ``nthread``
intra-op threads. Floating-point inputs are cast to the dtype of the module's parameters
(JSON numbers arrive as FP64; most modules are FP32); integer inputs, such as token ids, are
passed as they are. Several V2 inputs are passed in the order of ``forward``'s parameters
when their names match them, else in request order. Outputs: a tensor is ``output-0``, a
tuple or list of tensors ``output-0``, ``output-1``..., a dict of tensors by its keys.
V1 ``predictions`` are the first output's rows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .loaders import ModelLoadError, Tensors, find_model_file, first_line, import_library

log = logging.getLogger(__name__)

PYTORCH_FILES = ("model.pt",)


class PyTorchModel:
    """A TorchScript module, loaded with ``torch.jit.load`` onto the CPU."""

    in_thread = False

    def __init__(self, name: str, model_dir: Path, nthread: int = 1) -> None:
        torch = import_library("torch", "pytorch")
        self.name, self._torch = name, torch
        path = find_model_file(model_dir, PYTORCH_FILES, (".pt", ".pth"))
        torch.set_num_threads(nthread)
        try:
            self.module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise ModelLoadError(
                f"{path} is not a TorchScript module (save it with torch.jit.save of a "
                f"scripted or traced model): {first_line(exc)}"
            ) from None
        self.module.eval()
        floats = [p.dtype for p in self.module.parameters() if p.dtype.is_floating_point]
        self.float_dtype = floats[0] if floats else torch.float32
        try:
            arguments = self.module.forward.schema.arguments[1:]  # less self
            self.arg_names = [a.name for a in arguments]
        except (AttributeError, RuntimeError):
            self.arg_names = []
        log.info("loaded pytorch model %s from %s (forward%s)", name, path, self.arg_names)

    def _tensor(self, array: np.ndarray) -> Any:
        if array.dtype == object:
            raise ValueError("a TorchScript model takes numbers, not BYTES")
        tensor = self._torch.from_numpy(np.ascontiguousarray(array))
        return tensor.to(self.float_dtype) if tensor.is_floating_point() else tensor

    def _call(self, arrays: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
        torch = self._torch
        with torch.inference_mode():
            try:
                out = self.module(*(self._tensor(a) for a in arrays))
            except RuntimeError as exc:  # a shape or dtype the module does not take
                # The interpreter's message ends with the error (its first lines are a trace).
                lines = [line for line in str(exc).splitlines() if line.strip()]
                raise ValueError(lines[-1].strip() if lines else "the module failed") from None
        if isinstance(out, torch.Tensor):
            named = [("output-0", out)]
        elif isinstance(out, tuple | list):
            named = [(f"output-{i}", t) for i, t in enumerate(out)]
        elif isinstance(out, dict):
            named = [(str(k), t) for k, t in out.items()]
        else:
            raise ValueError(f"the model returned a {type(out).__name__}, not tensors")
        return [(n, t.detach().cpu().numpy()) for n, t in named if isinstance(t, torch.Tensor)]

    def infer(self, inputs: Tensors) -> Tensors:
        names = [n for n, _ in inputs]
        if len(inputs) > 1 and sorted(names) == sorted(self.arg_names):
            by_name = dict(inputs)
            return self._call([by_name[n] for n in self.arg_names])
        return self._call([a for _, a in inputs])

    def predict_array(self, inputs: np.ndarray) -> np.ndarray:
        return self._call([inputs])[0][1]

    def predict(self, instances: list[Any]) -> list[Any]:
        return self.predict_array(np.asarray(instances)).tolist()  # type: ignore[no-any-return]

    def metadata(self) -> dict[str, Any]:
        # A TorchScript module does not declare its tensors' shapes or dtypes.
        return {
            "inputs": [{"name": n, "datatype": "FP32", "shape": [-1]} for n in self.arg_names],
            "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1]}],
        }
