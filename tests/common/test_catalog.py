"""The kinds catalog is the one source of the kinds' names: the services' ``ResourceKind``s
are built from it, and the CLI resolves names with it without loading service code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway import routes
from services.automl.models import KINDS as AUTOML_KINDS
from services.automl.training.models import KINDS as TRAINING_KINDS
from services.common import catalog
from services.common.columns import lookup
from services.notebook.models import KINDS as NOTEBOOK_KINDS
from services.pipeline.models import KINDS as PIPELINE_KINDS
from services.serving.graph import INFERENCE_GRAPH
from services.serving.models import KINDS as SERVING_KINDS
from services.serving.runtimes import KINDS as RUNTIME_KINDS
from shipyard import kinds

SERVICE_KINDS = {
    "notebook": NOTEBOOK_KINDS,
    "automl": (*AUTOML_KINDS, *TRAINING_KINDS),
    "pipeline": PIPELINE_KINDS,
    "serving": (*SERVING_KINDS, *RUNTIME_KINDS, INFERENCE_GRAPH),
}


@pytest.mark.parametrize("service", sorted(SERVICE_KINDS))
def test_service_kinds_match_catalog(service: str) -> None:
    served = SERVICE_KINDS[service]
    listed = catalog.kinds_of(service)
    assert [(k.group, k.version, k.kind) for k in served] == [
        (k.group, k.version, k.kind) for k in listed
    ]
    for kind, info in zip(served, listed, strict=True):
        assert kind.plural == info.plural and kind.service == info.service == service
        assert kind.namespaced == info.namespaced
        assert kind.short_names == info.short_names
        assert kind.columns == info.columns
        assert kind.api_version == info.api_version and kind.base_path == info.base_path


def test_catalog_names_are_unique_per_group_version() -> None:
    seen: set[tuple[str, str, str]] = set()
    for k in catalog.ALL_KINDS:
        key = (k.group, k.version, k.plural)
        assert key not in seen, key
        seen.add(key)
    short = [s for k in catalog.ALL_KINDS for s in k.short_names]
    assert len(short) == len(set(short)), short


def test_catalog_lists_kfserving_alias_and_gateway_profiles() -> None:
    alias = catalog.KFSERVING_INFERENCE_SERVICE
    assert alias.api_version == "serving.kubeflow.org/v1beta1"
    assert alias.alias_of is catalog.INFERENCE_SERVICE and alias.plural == "inferenceservices"
    assert alias not in catalog.kinds_of("serving")
    assert catalog.PROFILE.service == "gateway" and not catalog.PROFILE.namespaced
    assert catalog.group_versions()["kubeflow.org"] == ["v1", "v1beta1", "v1alpha1"]
    assert catalog.group_versions()[""] == ["v1"]


def test_cli_resolves_names_and_groups() -> None:
    assert kinds.resolve("pvc") is catalog.PVC
    assert kinds.resolve("WF") is catalog.WORKFLOW
    assert kinds.resolve("isvc") is catalog.INFERENCE_SERVICE
    assert kinds.resolve("inferenceservices") is catalog.INFERENCE_SERVICE
    assert (
        kinds.resolve("inferenceservices.serving.kubeflow.org")
        is catalog.KFSERVING_INFERENCE_SERVICE
    )
    assert (
        kinds.for_object("serving.kubeflow.org/v1beta1", "InferenceService")
        is catalog.KFSERVING_INFERENCE_SERVICE
    )
    with pytest.raises(kinds.UnknownKindError, match='resource type "pods"'):
        kinds.resolve("pods")


def test_cli_loads_no_service_code() -> None:
    """Importing the CLI loads neither a service's models nor FastAPI or SQLAlchemy."""
    probe = (
        "import sys, shipyard.cli, shipyard.kinds, shipyard.client, shipyard.output\n"
        "heavy = ('services.notebook', 'services.automl', 'services.pipeline',\n"
        "         'services.serving', 'services.common.resources', 'fastapi', 'sqlalchemy')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("kind", catalog.ALL_KINDS, ids=lambda k: f"{k.plural}.{k.group}")
def test_gateway_routes_every_kind_to_its_service(kind: catalog.KindInfo) -> None:
    """The gateway's route table sends each catalog kind's paths to the service that owns it,
    and keeps the group/version path itself for discovery."""
    paths = [kind.collection_path("team-a"), f"{kind.collection_path('team-a')}/x"]
    if kind.namespaced:
        paths.append(kind.collection_path(None))  # across namespaces
    for path in paths:
        match = routes.resolve(path)
        assert match is not None and match.target == kind.service, path
        if kind.namespaced and "/namespaces/" in path:
            assert match.namespace == "team-a"
    discovery = routes.resolve(kind.base_path)
    assert discovery is not None and discovery.target == "gateway", kind.base_path


@pytest.mark.parametrize(
    "traffic,prev,latest",
    [
        ([{"revisionName": "m-1", "percent": 100, "latestRevision": True}], None, 100),
        (
            [
                {"revisionName": "m-1", "percent": 80, "latestRevision": False, "tag": "prev"},
                {"revisionName": "m-2", "percent": 20, "latestRevision": True, "tag": "latest"},
            ],
            80,
            20,
        ),
    ],
    ids=["rolled-out", "canary"],
)
def test_inferenceservice_traffic_columns_as_kserve_prints_them(
    traffic: list[dict[str, object]], prev: int | None, latest: int
) -> None:
    """KServe's PREV and LATEST: the prev tag's share and the latest revision's share (100
    when nothing is split), as `kubectl get isvc` prints them."""

    isvc = {"status": {"components": {"predictor": {"traffic": traffic}}}}
    cells = {c.name: lookup(isvc, c.path) for c in catalog.INFERENCE_SERVICE.columns}
    assert (cells["PREV"], cells["LATEST"]) == (prev, latest)
