"""Gradient-boosted trees: the ``xgboost`` and ``lightgbm`` formats.

They load what KServe's xgbserver and lgbserver load: a Booster saved by the library itself
(``model.bst`` in the model directory, or its one ``.bst``/``.json``/``.ubj`` file for
xgboost, ``.bst``/``.txt`` for lightgbm), and answer as those servers do: V1 ``predictions``
are the booster's ``predict`` output as lists, V2 is one ``output-0`` tensor of its dtype
(FP32 from xgboost, FP64 from lightgbm) and shape (``[n]``, or ``[n, classes]`` for
multi-class probabilities). ``nthread`` is the library's thread count for loading and
predicting (KServe's ``--nthread``, 1 by default: requests are small and concurrent).

A V1 instance may be an object keyed by feature name, as KServe's lgbserver accepts: its
values are put in the booster's feature order (a missing one is a missing value, NaN).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .loaders import ArrayModel, ModelLoadError, find_model_file, first_line, import_library

log = logging.getLogger(__name__)

XGBOOST_FILES = ("model.bst", "model.json", "model.ubj")
LIGHTGBM_FILES = ("model.bst", "model.txt")


def feature_rows(instances: list[Any], names: list[str] | None) -> np.ndarray:
    """V1 instances as a float matrix: rows of numbers, or objects keyed by feature name."""
    if instances and isinstance(instances[0], dict):
        if not names:
            raise ValueError("instances are objects, but the model has no feature names")
        unknown = sorted({k for inst in instances for k in inst} - set(names))
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; the model's features: {names}")
        instances = [[inst.get(f) for f in names] for inst in instances]
    # None (a JSON null) becomes NaN: the boosters' missing value.
    array = np.asarray(instances, dtype=np.float64)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    return array


def _numeric(inputs: np.ndarray) -> np.ndarray:
    if inputs.dtype == object:
        raise ValueError("a booster takes numbers, not BYTES")
    return inputs if inputs.ndim == 2 else inputs.reshape(inputs.shape[0] if inputs.ndim else 1, -1)


class XGBoostModel(ArrayModel):
    """An ``xgboost.Booster``, predicting through a ``DMatrix``."""

    def __init__(self, name: str, model_dir: Path, nthread: int = 1) -> None:
        xgb = import_library("xgboost", "xgboost")
        self.name, self.nthread, self._xgb = name, nthread, xgb
        path = find_model_file(model_dir, XGBOOST_FILES, (".bst", ".json", ".ubj"))
        try:
            # The suffix says the encoding: .json JSON, .ubj UBJSON, else the binary format.
            self.booster = xgb.Booster(params={"nthread": nthread}, model_file=str(path))
        except xgb.core.XGBoostError as exc:
            raise ModelLoadError(f"{path} is not an xgboost model: {first_line(exc)}") from None
        config = json.loads(self.booster.save_config())
        params = config["learner"]["learner_model_param"]
        self.classes = int(params.get("num_class") or 0)
        self.objective = str(config["learner"]["objective"]["name"])
        log.info("loaded xgboost model %s from %s (%s)", name, path, self.objective)

    def predict_array(self, inputs: np.ndarray) -> np.ndarray:
        matrix = self._xgb.DMatrix(_numeric(inputs), nthread=self.nthread)
        try:
            return np.asarray(self.booster.predict(matrix))
        except self._xgb.core.XGBoostError as exc:  # e.g. a wrong number of features
            raise ValueError(first_line(exc)) from None

    def predict(self, instances: list[Any]) -> list[Any]:
        rows = feature_rows(instances, self.booster.feature_names)
        return self.predict_array(rows).tolist()  # type: ignore[no-any-return]

    def metadata(self) -> dict[str, Any]:
        features = self.booster.num_features()
        multi = self.classes > 1 and "softprob" in self.objective
        out_shape = [-1, self.classes] if multi else [-1]
        return {
            "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, features]}],
            "outputs": [{"name": "output-0", "datatype": "FP32", "shape": out_shape}],
        }


class LightGBMModel(ArrayModel):
    """A ``lightgbm.Booster`` (a model saved with ``save_model``)."""

    def __init__(self, name: str, model_dir: Path, nthread: int = 1) -> None:
        lgb = import_library("lightgbm", "lightgbm")
        self.name, self.nthread = name, nthread
        path = find_model_file(model_dir, LIGHTGBM_FILES, (".bst", ".txt"))
        try:
            # Threads are a predict() parameter: the file's own parameters win at load.
            self.booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise ModelLoadError(f"{path} is not a lightgbm model: {first_line(exc)}") from None
        self._error = lgb.basic.LightGBMError
        self.features = list(self.booster.feature_name())
        self.classes = int(self.booster.num_model_per_iteration())
        log.info("loaded lightgbm model %s from %s", name, path)

    def predict_array(self, inputs: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(self.booster.predict(_numeric(inputs), num_threads=self.nthread))
        except self._error as exc:  # e.g. a wrong number of features
            raise ValueError(first_line(exc)) from None

    def predict(self, instances: list[Any]) -> list[Any]:
        return self.predict_array(feature_rows(instances, self.features)).tolist()  # type: ignore[no-any-return]

    def metadata(self) -> dict[str, Any]:
        return {
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, len(self.features)]}],
            "outputs": [
                {
                    "name": "output-0",
                    "datatype": "FP64",
                    "shape": [-1, self.classes] if self.classes > 1 else [-1],
                }
            ],
        }
