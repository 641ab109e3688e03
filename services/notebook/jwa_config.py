"""The Jupyter web app's spawner configuration (Kubeflow's ``spawner_ui_config.yaml``).

``GET /jupyter/api/config`` answers its ``spawnerFormDefaults``, and the form handler
(``services.notebook.jwa_form``) takes its defaults, read-only fields, limit factors, GPU
vendors, affinity and toleration groups from it. The built-in configuration is below; an
operator replaces it with a file in Kubeflow's format, named by the notebook service's setting
``SHIPYARD_JWA_SPAWNER_UI_CONFIG``. The file is read again when it changes.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from services.common import safe_yaml
from services.common.errors import ApiError

DEFAULT_CONFIG = """\
# The Jupyter web app's spawner configuration: what GET /jupyter/api/config answers and the
# defaults POST /jupyter/api/namespaces/{ns}/notebooks fills in (services/notebook/jwa*.py).
# The same format as Kubeflow's spawner_ui_config.yaml: an operator replaces it with a file
# of their own (SHIPYARD_JWA_SPAWNER_UI_CONFIG=/path/to/spawner_ui_config.yaml). A field with
# readOnly: true takes the value here and refuses a form that sends one.
spawnerFormDefaults:
  allowCustomImage: true
  hideRegistry: true
  hideTag: false
  imagePullPolicy:
    readOnly: false
    value: IfNotPresent
  # The local runtime pulls no image: every notebook runs the Jupyter server of the
  # platform's own environment, and the image is recorded (docs/notebooks.md).
  image:
    value: kubeflownotebookswg/jupyter-scipy:v1.8.0
    options:
      - kubeflownotebookswg/jupyter-scipy:v1.8.0
      - kubeflownotebookswg/jupyter-pytorch-full:v1.8.0
      - kubeflownotebookswg/jupyter-tensorflow-full:v1.8.0
  imageGroupOne:
    value: kubeflownotebookswg/codeserver-python:v1.8.0
    options:
      - kubeflownotebookswg/codeserver-python:v1.8.0
  imageGroupTwo:
    value: kubeflownotebookswg/rstudio-tidyverse:v1.8.0
    options:
      - kubeflownotebookswg/rstudio-tidyverse:v1.8.0
  cpu:
    readOnly: false
    value: "0.5"
    limitFactor: "1.2"
  memory:
    readOnly: false
    value: "1.0Gi"
    limitFactor: "1.2"
  gpus:
    readOnly: false
    value:
      vendor: ""
      vendors:
        - limitsKey: "nvidia.com/gpu"
          uiName: "NVIDIA"
        - limitsKey: "amd.com/gpu"
          uiName: "AMD"
      num: "none"
  workspaceVolume:
    readOnly: false
    value:
      mount: /home/jovyan
      newPvc:
        metadata:
          name: "{notebook-name}-workspace"
        spec:
          resources:
            requests:
              storage: 5Gi
          accessModes:
            - ReadWriteOnce
  dataVolumes:
    readOnly: false
    value: []
  affinityConfig:
    readOnly: false
    value: ""
    options: []
  tolerationGroup:
    readOnly: false
    value: ""
    options: []
  shm:
    readOnly: false
    value: true
  configurations:
    readOnly: false
    value: []
  environment:
    readOnly: false
    value: {}
"""

_cache: dict[str, tuple[float, dict[str, Any]]] = {}


def parse_config(text: str, where: str) -> dict[str, Any]:
    """The ``spawnerFormDefaults`` of a configuration document; ValueError if there is none."""
    doc = safe_yaml.load(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("spawnerFormDefaults"), dict):
        raise ValueError(f"{where}: a mapping with spawnerFormDefaults is required")
    return doc["spawnerFormDefaults"]  # type: ignore[no-any-return]


def load_config(path: str = "") -> dict[str, Any]:
    """The spawner configuration: the operator's file at ``path`` if one is set, else the
    built-in one. A file that cannot be read or parsed is a 500 that says which and why
    (never a silent fall-back to defaults the operator meant to replace)."""
    if not path:
        return parse_config(DEFAULT_CONFIG, "the built-in spawner configuration")
    try:
        mtime = os.stat(path).st_mtime
        cached = _cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        with open(path, encoding="utf-8") as f:
            config = parse_config(f.read(), path)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ApiError(500, f"the spawner configuration cannot be used: {exc}") from None
    _cache[path] = (mtime, config)
    return config
