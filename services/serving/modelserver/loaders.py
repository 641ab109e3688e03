"""Loading a model directory by format: ``sklearn`` (joblib/pickle) and ``python`` (model.py).

A loaded model is a :class:`Model`: ``predict(instances)`` takes and returns plain lists (the
V1 protocol's shape) and ``predict_array`` takes and returns numpy arrays (the V2 tensors).
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

SKLEARN_FILES = ("model.joblib", "model.pkl", "model.pickle")
PYTHON_FILE = "model.py"


class ModelLoadError(Exception):
    """The model directory does not hold a loadable model of the requested format."""


class Model(Protocol):
    name: str

    def predict(self, instances: list[Any]) -> list[Any]: ...
    def predict_array(self, inputs: np.ndarray) -> np.ndarray: ...
    def metadata(self) -> dict[str, Any]: ...


def _find(model_dir: Path, names: tuple[str, ...]) -> Path:
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
    found = sorted(p.name for p in model_dir.iterdir())[:20]
    raise ModelLoadError(f"no {' or '.join(names)} in {model_dir} (found: {found})")


class SklearnModel:
    """A scikit-learn estimator saved with joblib.dump or pickle (KServe's sklearn format)."""

    def __init__(self, name: str, model_dir: Path) -> None:
        self.name = name
        path = _find(model_dir, SKLEARN_FILES)
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


class PythonModel:
    """A ``model.py`` exposing ``predict(instances) -> list``; needs nothing installed.

    It may also define ``METADATA = {"inputs": [...], "outputs": [...]}`` for V2 metadata.
    """

    def __init__(self, name: str, model_dir: Path) -> None:
        self.name = name
        path = _find(model_dir, (PYTHON_FILE,))
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


LOADERS: dict[str, type[SklearnModel] | type[PythonModel]] = {
    "sklearn": SklearnModel,
    "python": PythonModel,
}


def load_model(name: str, model_format: str, model_dir: Path) -> Model:
    """Load ``model_dir`` as ``model_format``; raises ModelLoadError with what to fix."""
    try:
        loader = LOADERS[model_format.lower()]
    except KeyError:
        raise ModelLoadError(
            f"unknown model format {model_format!r}; supported: {', '.join(LOADERS)}"
        ) from None
    return loader(name, model_dir)
