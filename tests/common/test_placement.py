"""Placement (nodeSelector, tolerations, affinity, imagePullSecrets, envFrom) reaches the
workload spec from every kind a user writes it on, so the Kubernetes runtime can put it on the
Pod (tests/common/runtime/test_kubernetes.py checks the Pod side)."""

from __future__ import annotations

from typing import Any

from services.automl.template import job_workload
from services.common.runtime import WorkloadSpec, placement
from services.notebook.workload import build_workload
from services.pipeline.runner import RuntimeRunner
from services.pipeline.spec import WorkflowSpec

GPU_NODES = {"accelerator": "nvidia-l4"}
TOLERATE_GPU = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
            ]
        }
    }
}
PULL = [{"name": "registry-creds"}]
ENV_FROM = [{"configMapRef": {"name": "settings"}}]
POD = {
    "nodeSelector": GPU_NODES,
    "tolerations": TOLERATE_GPU,
    "affinity": AFFINITY,
    "imagePullSecrets": PULL,
}


def _placed(spec: WorkloadSpec) -> dict[str, Any]:
    return {
        "nodeSelector": spec.node_selector,
        "tolerations": spec.tolerations,
        "affinity": spec.affinity,
        "imagePullSecrets": spec.image_pull_secrets,
        "envFrom": spec.env_from,
    }


EXPECTED = {**POD, "envFrom": ENV_FROM}


def test_placement_takes_the_pod_then_the_defaults() -> None:
    assert placement({}, {}) == {}
    assert placement({"nodeSelector": {}}, None, defaults={"nodeSelector": GPU_NODES}) == {
        "nodeSelector": GPU_NODES
    }
    assert placement(POD, {"envFrom": ENV_FROM}) == EXPECTED


def test_a_notebooks_pod_template_places_its_server() -> None:
    container = {"name": "nb", "image": "jupyter/scipy", "envFrom": ENV_FROM}
    notebook = {
        "metadata": {"namespace": "team-a", "name": "gpu"},
        "spec": {"template": {"spec": {**POD, "containers": [container]}}},
    }
    assert _placed(build_workload(notebook, "token")) == EXPECTED


def test_a_trials_job_places_its_pod() -> None:
    container = {"name": "train", "image": "trainer:1", "command": ["train"], "envFrom": ENV_FROM}
    job = {"spec": {"template": {"spec": {**POD, "containers": [container]}}}}
    spec = job_workload(job, None, namespace="team-a", trial_name="t-1", labels={}, env={"A": "1"})
    assert _placed(WorkloadSpec.model_validate(spec)) == EXPECTED


async def test_an_argo_step_takes_its_template_then_the_workflows_placement() -> None:
    spec: dict[str, Any] = {
        "entrypoint": "main",
        "nodeSelector": {"pool": "default"},
        "tolerations": TOLERATE_GPU,
        "affinity": AFFINITY,
        "imagePullSecrets": PULL,
        "templates": [
            {
                "name": "main",
                "nodeSelector": GPU_NODES,
                "container": {"image": "busybox", "command": ["true"], "envFrom": ENV_FROM},
            }
        ],
    }
    WorkflowSpec.model_validate(spec)  # Argo's fields are accepted at admission
    wf = {"metadata": {"namespace": "team-a", "name": "wf", "uid": "0123456789"}, "spec": spec}
    runner = RuntimeRunner(runtime=None, artifacts=None, on_done=lambda ns, name: None)  # type: ignore[arg-type]
    made = await runner._workload_spec(
        wf, {"name": "wf", "id": "wf"}, spec["templates"][0], [], "wf-1"
    )
    assert _placed(WorkloadSpec.model_validate(made)) == EXPECTED  # the template's selector won


class _NoStore:
    """Stands in for the ResourceStore: building a workload spec reads nothing from it."""

    def add_listener(self, listener: Any) -> None:
        pass


async def test_a_predictor_places_its_model_server() -> None:
    from services.serving.controller import InferenceServiceController

    container = {
        "name": "kserve-container",
        "image": "me/server:1",
        "command": ["serve"],
        "envFrom": ENV_FROM,
    }
    isvc = {
        "metadata": {"namespace": "team-a", "name": "m", "uid": "u"},
        "spec": {"predictor": {**POD, "containers": [container]}},
    }
    controller = InferenceServiceController(_NoStore(), runtime=None, gateway_url="http://gw")  # type: ignore[arg-type]
    assert _placed(await controller.workload_for(isvc, 1, "abc")) == EXPECTED
