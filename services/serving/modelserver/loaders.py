"""Loading a model directory by format.

``sklearn`` (joblib/pickle) and ``python`` (model.py) are here; ``xgboost`` and ``lightgbm``
(:mod:`.boosters`), ``onnx`` (:mod:`.onnx_model`) and ``pytorch`` (TorchScript,
:mod:`.torchscript`) and ``huggingface`` (transformers, :mod:`.huggingface`) live beside
this module. Each format's library is imported only when a
model of that format loads (:func:`import_library`), so the server starts without the ones it
does not use, and a missing one is a :class:`ModelLoadError` that says what to install: the
server exits with it, and the InferenceService's Ready condition quotes it.

A loaded model is a :class:`Model`: ``predict(instances)`` takes and returns plain lists (the
V1 protocol's shape), ``predict_array`` takes and returns numpy arrays, and ``infer`` maps the
V2 request's named tensors to named output tensors.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

SKLEARN_FILES = ("model.joblib", "model.pkl", "model.pickle")
PYTHON_FILE = "model.py"


class ModelLoadError(Exception):
    """The model directory does not hold a loadable model of the requested format."""


#: The optional dependencies of the model server's formats (pyproject.toml).
EXTRA_HINT = (
    "install shipyard's serving-formats extra where the model server runs "
    "(pip install -e '.[serving-formats]'; make install does)"
)

Tensors = list[tuple[str, np.ndarray]]


class Model(Protocol):
    name: str
    #: Its calls take long (a text generation): the server runs them in a worker thread so
    #: that other requests and the readiness probe are answered meanwhile.
    in_thread: bool

    def predict(self, instances: list[Any]) -> list[Any]: ...
    def predict_array(self, inputs: np.ndarray) -> np.ndarray: ...
    def infer(self, inputs: Tensors) -> Tensors: ...
    def metadata(self) -> dict[str, Any]: ...


class ArrayModel:
    """V2 for a model of one feature matrix: the request's tensors (one, or several stacked as
    columns) in, ``output-0`` out, as KServe's sklearn, xgboost and lightgbm servers answer."""

    in_thread = False  # microseconds to milliseconds: a thread hop would cost more

    def predict_array(self, inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def infer(self, inputs: Tensors) -> Tensors:
        arrays = [a for _, a in inputs]
        features = arrays[0] if len(arrays) == 1 else np.column_stack(arrays)
        return [("output-0", self.predict_array(features))]


def import_library(module: str, model_format: str) -> ModuleType:
    """Import the library of ``model_format``; a ModelLoadError saying what to install if it
    cannot be imported (missing, or broken: any ImportError)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelLoadError(
            f"model format {model_format!r} needs the Python package {module!r}, which the "
            f"model server cannot import ({exc}): {EXTRA_HINT}"
        ) from None


def first_line(exc: Exception) -> str:
    """An exception's first line: libraries' messages can carry whole C++ backtraces."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def find_model_file(
    model_dir: Path, names: tuple[str, ...], suffixes: tuple[str, ...] = ()
) -> Path:
    """The model file: ``model_dir`` itself if it is a file, else the first of ``names`` in
    it, else its one file ending in one of ``suffixes`` (several are an error: which one?)."""
    if model_dir.is_file():
        return model_dir
    if not model_dir.is_dir():
        raise ModelLoadError(
            f"model directory {model_dir} does not exist (is the storageUri "
            "right, and visible to the workload?)"
        )
    for name in names:
        if (model_dir / name).is_file():
            return model_dir / name
    candidates = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in suffixes)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ModelLoadError(
            f"more than one model file in {model_dir}: {[p.name for p in candidates]}; "
            f"keep one, or name it {names[0]}"
        )
    found = sorted(p.name for p in model_dir.iterdir())[:20]
    wanted = " or ".join([*names, *(f"*{s}" for s in suffixes if f"model{s}" not in names)])
    raise ModelLoadError(f"no {wanted} in {model_dir} (found: {found})")


class SklearnModel(ArrayModel):
    """A scikit-learn estimator saved with joblib.dump or pickle (KServe's sklearn format)."""

    def __init__(self, name: str, model_dir: Path) -> None:
        self.name = name
        path = find_model_file(model_dir, SKLEARN_FILES)
        try:
            import joblib
        except ImportError:  # plain pickles still load without joblib
            with path.open("rb") as f:
                self.estimator = pickle.load(f)  # noqa: S301 - the user's own model file
        else:
            # joblib reads plain pickles too, and a model.pkl written by joblib.dump is common.
            self.estimator = joblib.load(path)
        if not hasattr(self.estimator, "predict"):
            raise ModelLoadError(
                f"{path} holds a {type(self.estimator).__name__}, which has no predict()"
            )
        log.info("loaded sklearn model %s from %s", name, path)

    def predict_array(self, inputs: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(inputs))

    def predict(self, instances: list[Any]) -> list[Any]:
        return self.predict_array(np.asarray(instances)).tolist()  # type: ignore[no-any-return]

    def metadata(self) -> dict[str, Any]:
        features = getattr(self.estimator, "n_features_in_", -1)
        return {
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, features]}],
            "outputs": [{"name": "output-0", "datatype": "INT64", "shape": [-1]}],
        }


class PythonModel(ArrayModel):
    """A ``model.py`` exposing ``predict(instances) -> list``; needs nothing installed.

    It may also define ``METADATA = {"inputs": [...], "outputs": [...]}`` for V2 metadata.
    """

    def __init__(self, name: str, model_dir: Path) -> None:
        self.name = name
        path = find_model_file(model_dir, (PYTHON_FILE,))
        spec = importlib.util.spec_from_file_location(
            f"shipyard_model_{name.replace('-', '_')}", path
        )
        if spec is None or spec.loader is None:
            raise ModelLoadError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelLoadError(f"importing {path} failed: {exc!r}") from exc
        if not callable(getattr(module, "predict", None)):
            raise ModelLoadError(f"{path} must define predict(instances)")
        self.module = module
        log.info("loaded python model %s from %s", name, path)

    def predict(self, instances: list[Any]) -> list[Any]:
        return list(self.module.predict(instances))

    def predict_array(self, inputs: np.ndarray) -> np.ndarray:
        out = self.predict(inputs.tolist())
        if out and all(isinstance(v, str | bytes) for v in out):
            return np.array(out, dtype=object)
        return np.asarray(out)

    def metadata(self) -> dict[str, Any]:
        meta = getattr(self.module, "METADATA", None) or {}
        return {"inputs": list(meta.get("inputs", [])), "outputs": list(meta.get("outputs", []))}


def _sklearn(name: str, model_dir: Path, nthread: int) -> Model:
    return SklearnModel(name, model_dir)


def _python(name: str, model_dir: Path, nthread: int) -> Model:
    return PythonModel(name, model_dir)


def _xgboost(name: str, model_dir: Path, nthread: int) -> Model:
    from .boosters import XGBoostModel

    return XGBoostModel(name, model_dir, nthread)


def _lightgbm(name: str, model_dir: Path, nthread: int) -> Model:
    from .boosters import LightGBMModel

    return LightGBMModel(name, model_dir, nthread)


def _onnx(name: str, model_dir: Path, nthread: int) -> Model:
    from .onnx_model import OnnxModel

    return OnnxModel(name, model_dir, nthread)


def _pytorch(name: str, model_dir: Path, nthread: int) -> Model:
    from .torchscript import PyTorchModel

    return PyTorchModel(name, model_dir, nthread)


def _huggingface(name: str, model_dir: Path, nthread: int) -> Model:
    from .huggingface import HuggingFaceModel

    return HuggingFaceModel(name, model_dir, nthread)


#: Format name (KServe's modelFormat.name) -> loader(name, model_dir, nthread).
LOADERS: dict[str, Callable[[str, Path, int], Model]] = {
    "sklearn": _sklearn,
    "xgboost": _xgboost,
    "lightgbm": _lightgbm,
    "onnx": _onnx,
    "pytorch": _pytorch,
    "huggingface": _huggingface,
    "python": _python,
}


def load_model(name: str, model_format: str, model_dir: Path, nthread: int = 1) -> Model:
    """Load ``model_dir`` as ``model_format``, its library using ``nthread`` threads where it
    has a setting for it; raises ModelLoadError with what to fix."""
    try:
        loader = LOADERS[model_format.lower()]
    except KeyError:
        raise ModelLoadError(
            f"unknown model format {model_format!r}; supported: {', '.join(LOADERS)}"
        ) from None
    return loader(name, model_dir, max(1, nthread))
